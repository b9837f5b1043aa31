#include "sagemaker/metrics.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>

namespace medseg {
namespace {

// What a MetricDefinitions regex captures from the line medseg prints for `value`.
std::string captured(const std::string& name, double value) {
  const std::string line = name + "=" + format_metric_value(value);
  std::smatch match;
  const std::regex pattern(metric_regex(name));
  if (!std::regex_search(line, match, pattern)) return "<no match in " + line + ">";
  return match[1];
}

TEST(MetricsTest, ValuesPrintWithoutAnExponentSoTheRegexCapturesThemWhole) {
  EXPECT_EQ(format_metric_value(1.2e-05), "0.000012");
  EXPECT_EQ(format_metric_value(0.8648009068526452), "0.864801");
  EXPECT_EQ(format_metric_value(0.53125), "0.53125");
  EXPECT_EQ(format_metric_value(3e-4), "0.0003");
  EXPECT_EQ(format_metric_value(12.0), "12");
  EXPECT_EQ(format_metric_value(123456789.0), "123456789");
  EXPECT_EQ(format_metric_value(-0.25), "-0.25");
  EXPECT_EQ(format_metric_value(0.0), "0");
  EXPECT_EQ(format_metric_value(1e-30), "0");
  EXPECT_EQ(format_metric_value(std::nan("")), "nan");
  for (double value : {1.2e-05, 3e-4, 0.864801, 2.5, 300.0, 1e7, -0.5}) {
    EXPECT_DOUBLE_EQ(std::stod(captured("train_loss", value)), value) << value;
  }
}

TEST(MetricsTest, ARegexMatchesOnlyItsOwnMetric) {
  std::smatch match;
  const std::string line = "val_dice_tc=0.5";
  EXPECT_FALSE(std::regex_search(line, match, std::regex(metric_regex("val_mean_dice"))));
  const std::string prefixed = "best_val_mean_dice=0.5";
  EXPECT_FALSE(std::regex_search(prefixed, match, std::regex(metric_regex("val_mean_dice"))));
}

TEST(MetricsTest, DefinitionsNameEveryMetricOnceWithinSageMakersLimit) {
  const nlohmann::json definitions = metric_definitions();
  EXPECT_LE(definitions.size(), 40u);
  EXPECT_EQ(definitions.size(), metric_catalog().size());
  std::set<std::string> names;
  for (const auto& definition : definitions) names.insert(definition["Name"].get<std::string>());
  EXPECT_EQ(names.size(), definitions.size());
  EXPECT_TRUE(names.count("val_mean_dice"));
}

}  // namespace
}  // namespace medseg

#include "train/dice_metric.h"

#include <gtest/gtest.h>

#include <cmath>

#include "train/monai_train_fixtures.h"

namespace medseg {
namespace {

TEST(DiceMetricTest, MatchesMonaiAndSkipsEmptyGroundTruth) {
  const nlohmann::json fixture = testing::train_fixture_manifest()["dice_metric"];
  const at::Tensor prediction = testing::fixture_tensor(fixture["prediction"]);
  const at::Tensor truth = testing::fixture_tensor(fixture["truth"]);
  DiceAccumulator dice(3);
  for (int64_t n = 0; n < prediction.size(0); ++n) dice.add_case(prediction[n], truth[n]);
  EXPECT_EQ(dice.counts()[1], 2);  // case 2's empty channel 1 is skipped
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(dice.channel_mean(c), fixture["per_channel"][c].get<double>(), 1e-6) << c;
  }
  EXPECT_NEAR(dice.mean(), fixture["mean"].get<double>(), 1e-6);
}

TEST(DiceMetricTest, MergingRanksEqualsOneAccumulator) {
  const at::Tensor a = at::rand({3, 4, 4, 4}) > 0.5;
  const at::Tensor b = at::rand({3, 4, 4, 4}) > 0.5;
  DiceAccumulator together(3), first(3), second(3);
  together.add_case(a, b);
  together.add_case(b, a);
  first.add_case(a, b);
  second.add_case(b, a);
  first.merge(second);
  EXPECT_DOUBLE_EQ(first.mean(), together.mean());
  DiceAccumulator empty(3);
  EXPECT_TRUE(std::isnan(empty.mean()));
}

}  // namespace
}  // namespace medseg

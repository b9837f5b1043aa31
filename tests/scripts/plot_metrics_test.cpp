// scripts/plot_metrics.py: a job's metrics.jsonl to one PNG of learning curves, with Debian's
// matplotlib (the system Python).
#include <gtest/gtest.h>

#include <string>

#include "test_support.h"

namespace medseg {
namespace {

testing::CommandResult plot(const std::string& metrics, const std::string& out) {
  return testing::run_shell("cd " + std::string(MEDSEG_SOURCE_DIR) +
                            " && /usr/bin/python3 scripts/plot_metrics.py '" + metrics +
                            "' --out '" + out + "' --title 'a test job'");
}

uint32_t big_endian(const std::string& bytes, size_t at) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = value << 8 | static_cast<uint8_t>(bytes[at + i]);
  return value;
}

TEST(PlotMetricsTest, DrawsTheLearningCurvesOfAJobAsOnePng) {
  testing::TempDir dir;
  std::string lines;
  for (int step = 10; step <= 100; step += 10) {
    lines += R"({"type": "train", "epoch": 1, "step": )" + std::to_string(step) +
             R"(, "train_loss": )" + std::to_string(1.0 / step) +
             R"(, "learning_rate": 0.001, "samples_per_second": 12.5, "step_time_share": )"
             R"({"data_wait": 0.1, "forward": 0.3, "backward": 0.5, "other": 0.1}})"
             "\n";
    if (step % 50 == 0) {
      lines +=
          R"({"type": "validation", "epoch": 1, "step": )" + std::to_string(step) +
          R"(, "val_mean_dice": 0.7, "val_dice_tc": 0.6, "val_dice_wt": 0.9, "val_dice_et": 0.6})"
          "\n";
    }
  }
  testing::write_text(dir.file("metrics.jsonl"), lines);
  const testing::CommandResult result = plot(dir.file("metrics.jsonl"), dir.file("curves.png"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string png = testing::read_text(dir.file("curves.png"));
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(big_endian(png, 16), 1200u);  // IHDR width x height: 12 x 8 inches at 100 dpi
  EXPECT_EQ(big_endian(png, 20), 800u);
}

TEST(PlotMetricsTest, ALineThatIsNotJsonIsNamed) {
  testing::TempDir dir;
  testing::write_text(dir.file("metrics.jsonl"), "{\"type\": \"train\", \"step\": 1}\n{oops\n");
  const testing::CommandResult result = plot(dir.file("metrics.jsonl"), dir.file("curves.png"));
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("metrics.jsonl line 2 is not JSON"), std::string::npos)
      << result.output;
}

}  // namespace
}  // namespace medseg

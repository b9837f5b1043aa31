#include "train/job_report.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "train/validation_picture.h"

namespace medseg {
namespace {

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> entries;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) entries.push_back(nlohmann::json::parse(line));
  return entries;
}

TEST(JobReportTest, TensorBoardScalarsAreTheMetricsJsonlNumbers) {
  testing::TempDir dir;
  JobReportOptions options;
  options.writer = true;
  options.metrics_path = dir.file("metrics.jsonl");
  options.tensorboard_dir = dir.file("tb");
  const nlohmann::json earlier = {
      {{"type", "train"}, {"epoch", 1}, {"step", 5}, {"train_loss", 0.9}}};
  {
    JobReport report(options, earlier);
    report.record({{"type", "train"},
                   {"epoch", 2},
                   {"step", 10},
                   {"train_loss", 0.5},
                   {"step_time_share", {{"forward", 0.25}, {"backward", 0.5}}}});
    report.record({{"type", "validation"}, {"epoch", 2}, {"step", 10}, {"val_dice_et", 0.625}});
    EXPECT_EQ(report.history().size(), 3u);
  }
  // metrics.jsonl: the resumed job's history first, then the new entries.
  const std::vector<nlohmann::json> lines = read_jsonl(dir.file("metrics.jsonl"));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["train_loss"], 0.9);
  EXPECT_EQ(lines[2]["val_dice_et"], 0.625);
  // TensorBoard: the new entries' numbers by "<type>/<key>" (the history is already in the
  // interrupted run's event files).
  const nlohmann::json read = testing::read_tensorboard(dir.file("tb"));
  EXPECT_EQ(read["scalars"], nlohmann::json::parse(R"({
      "train/train_loss": [[10, 0.5]],
      "train/step_time_share/forward": [[10, 0.25]],
      "train/step_time_share/backward": [[10, 0.5]],
      "validation/val_dice_et": [[10, 0.625]]})"));
}

TEST(JobReportTest, AnUnwritableTensorBoardFolderCostsAWarningNotTheJob) {
  testing::TempDir dir;
  testing::write_text(dir.file("occupied"), "a file where the folder would go");
  JobReportOptions options;
  options.writer = true;
  options.metrics_path = dir.file("metrics.jsonl");
  options.tensorboard_dir = dir.file("occupied/tb");
  JobReport report(options, nlohmann::json::array());
  EXPECT_FALSE(report.writes_pictures());
  report.record({{"type", "train"}, {"step", 1}, {"train_loss", 0.5}});
  report.add_picture("p", 1, RgbImage(2, 2));
  EXPECT_EQ(read_jsonl(dir.file("metrics.jsonl")).size(), 1u);
}

TEST(JobReportTest, OnlyTheWriterWritesButEveryWorkerKeepsTheHistory) {
  testing::TempDir dir;
  JobReportOptions options;
  options.metrics_path = dir.file("metrics.jsonl");
  options.tensorboard_dir = dir.file("tb");
  JobReport report(options, nlohmann::json::array());
  report.record({{"type", "train"}, {"step", 1}, {"train_loss", 0.5}});
  EXPECT_EQ(report.history().size(), 1u);
  EXPECT_EQ(dir.entries().size(), 0u);
}

TEST(JobReportTest, TheSummaryTableAlignsNestedNames) {
  const nlohmann::json summary = {{"best_epoch", 12},
                                  {"seconds", {{"training", 30.25}, {"validation", 4.0}}}};
  EXPECT_EQ(summary_table(summary),
            "  best_epoch          12\n"
            "  seconds/training    30.2500\n"
            "  seconds/validation  4\n");
}

// A case of 8 x 6 x 4 voxels with a 4 x 2 tumour (all three masks) at x 2..5, y 2..3 on slice
// z = 1 (not the middle one, z = 2).
CaseData small_case() {
  CaseData data;
  data.case_id = "case_7";
  data.spatial_shape = {8, 6, 4};
  data.image_channels = 1;
  data.label_channels = 3;
  data.image.assign(8 * 6 * 4, 0.0f);
  data.label.assign(3 * 8 * 6 * 4, 0);
  for (int64_t x = 0; x < 8; ++x) {
    for (int64_t y = 0; y < 6; ++y) {
      for (int64_t z = 0; z < 4; ++z) data.image[(x * 6 + y) * 4 + z] = static_cast<float>(x);
    }
  }
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t x = 2; x <= 5; ++x) {
      for (int64_t y = 2; y <= 3; ++y) data.label[((c * 8 + x) * 6 + y) * 4 + 1] = 1;
    }
  }
  return data;
}

TEST(ValidationPictureTest, TheTumourSliceTruthLeftPredictionRightInRadiologicalOrientation) {
  const CaseData data = small_case();
  const std::vector<uint8_t> nothing_predicted(data.label.size(), 0);
  const RgbImage picture = validation_picture(data, nothing_predicted.data());
  // 8 x 6 enlarged 30 times (to at least 240 pixels), two panels 4 pixels apart.
  EXPECT_EQ(picture.width, 2 * 8 * 30 + 4);
  EXPECT_EQ(picture.height, 6 * 30);
  RgbImage copy = picture;
  const auto pixel = [&](int x, int y) {
    const uint8_t* p = copy.at(x, y);
    return std::vector<int>{p[0], p[1], p[2]};
  };
  // Voxel (x 2, y 2) is on every mask's outline: ET, drawn last, is red. Radiological: column
  // (8 - 1 - 2) * 30, row (6 - 1 - 2) * 30.
  EXPECT_EQ(pixel(5 * 30 + 1, 3 * 30 + 1), (std::vector<int>{255, 0, 0}));
  // The same place in the prediction panel shows the grey image: intensity x = 2 of 0..7.
  const std::vector<int> grey = pixel(8 * 30 + 4 + 5 * 30 + 1, 3 * 30 + 1);
  EXPECT_EQ(grey[0], grey[1]);
  EXPECT_EQ(grey[1], grey[2]);
  EXPECT_NEAR(grey[0], 255.0 * 2 / 7, 1.0);
  // Brighter towards the patient's right (larger x in RAS), which radiological pictures show on
  // the left.
  EXPECT_GT(pixel(0, 0)[0], pixel(8 * 30 - 1, 0)[0]);
  EXPECT_FALSE(encode_png(picture).empty());
}

}  // namespace
}  // namespace medseg

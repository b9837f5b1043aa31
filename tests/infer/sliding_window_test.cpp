#include "infer/sliding_window.h"

#include <gtest/gtest.h>

#include "train/monai_train_fixtures.h"

namespace medseg {
namespace {

// The predictor of make_train_fixtures.py: output depends on the position inside the window.
at::Tensor pattern(const std::array<int64_t, 3>& roi) {
  const at::Tensor i = at::arange(roi[0], at::kFloat).view({-1, 1, 1});
  const at::Tensor j = at::arange(roi[1], at::kFloat).view({1, -1, 1});
  const at::Tensor k = at::arange(roi[2], at::kFloat).view({1, 1, -1});
  return 1 + 0.01 * i + 0.02 * j - 0.03 * k;
}

TEST(SlidingWindowTest, WindowStartsFollowMonai) {
  // 20 voxels, roi 8, overlap 0.25: interval 6 -> 0, 6, 12 (the last ends at the border).
  EXPECT_EQ(window_starts(20, 8, 0.25), (std::vector<int64_t>{0, 6, 12}));
  EXPECT_EQ(window_starts(8, 8, 0.25), (std::vector<int64_t>{0}));
  EXPECT_EQ(window_starts(17, 8, 0.5), (std::vector<int64_t>{0, 4, 8, 9}));
}

void expect_sliding_window_matches_monai(const std::string& dir) {
  // The manifest must outlive the loop: a range over a member of a temporary reads freed memory.
  const nlohmann::json manifest = testing::train_fixture_manifest(dir);
  for (const nlohmann::json& fixture : manifest["sliding_window"]) {
    SlidingWindowOptions options;
    const std::vector<int64_t> roi = fixture["roi"].get<std::vector<int64_t>>();
    options.roi_size = {roi[0], roi[1], roi[2]};
    options.overlap = fixture["overlap"].get<double>();
    options.blend = fixture["blend"].get<std::string>();
    options.batch_size = fixture["batch_size"].get<int64_t>();
    const at::Tensor weights = pattern(options.roi_size);
    const at::Tensor output = sliding_window_inference(
        testing::fixture_tensor(fixture["input"], dir), options, [&](const at::Tensor& windows) {
          return at::cat({windows * weights, windows.slice(1, 0, 1) * 2 * weights}, 1);
        });
    const at::Tensor expected = testing::fixture_tensor(fixture["output"], dir);
    ASSERT_EQ(output.sizes(), expected.sizes()) << fixture;
    EXPECT_LT((output - expected).abs().max().item<double>(), 1e-5) << fixture;
  }
}

TEST(SlidingWindowTest, MatchesMonaiForEveryBlendAndPadding) {
  expect_sliding_window_matches_monai(testing::kTrainFixtureDir);
}

// Fresh images, window sizes (smaller and larger than the image), overlaps and window batches,
// with the project's MONAI computing the reference.
TEST(SlidingWindowLiveMonaiTest, MatchesMonaiOnFreshShapesAndOverlaps) {
  testing::check_against_live_monai(
      {41, 42, 43}, [](const std::string& dir) { expect_sliding_window_matches_monai(dir); });
}

}  // namespace
}  // namespace medseg

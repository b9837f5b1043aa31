#include "train/dice_metric.h"

#include <gtest/gtest.h>

#include <cmath>

#include "train/monai_train_fixtures.h"

namespace medseg {
namespace {

// Accumulates the fixture's cases one by one; returns the accumulator after checking its means.
DiceAccumulator expect_dice_matches_monai(const std::string& dir) {
  const nlohmann::json fixture = testing::train_fixture_manifest(dir)["dice_metric"];
  const at::Tensor prediction = testing::fixture_tensor(fixture["prediction"], dir);
  const at::Tensor truth = testing::fixture_tensor(fixture["truth"], dir);
  DiceAccumulator dice(3);
  for (int64_t n = 0; n < prediction.size(0); ++n) dice.add_case(prediction[n], truth[n]);
  for (int64_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(dice.channel_mean(c), fixture["per_channel"][c].get<double>(), 1e-6) << c;
  }
  EXPECT_NEAR(dice.mean(), fixture["mean"].get<double>(), 1e-6);
  return dice;
}

TEST(DiceMetricTest, MatchesMonaiAndSkipsEmptyGroundTruth) {
  const DiceAccumulator dice = expect_dice_matches_monai(testing::kTrainFixtureDir);
  EXPECT_EQ(dice.counts()[1], 2);  // case 2's empty channel 1 is skipped
}

// Fresh predictions, truths and shapes, with the project's MONAI computing the reference.
TEST(DiceMetricLiveMonaiTest, MatchesMonaiOnFreshInputs) {
  testing::check_against_live_monai({31, 32},
                                    [](const std::string& dir) { expect_dice_matches_monai(dir); });
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

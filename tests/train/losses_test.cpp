#include "train/losses.h"

#include <gtest/gtest.h>

#include "train/monai_train_fixtures.h"

namespace medseg {
namespace {

void expect_losses_match_monai(const std::string& dir) {
  const nlohmann::json fixture = testing::train_fixture_manifest(dir)["losses"];
  const at::Tensor logits = testing::fixture_tensor(fixture["logits"], dir);
  const at::Tensor target = testing::fixture_tensor(fixture["target"], dir);
  EXPECT_NEAR(dice_loss(logits, target).item<double>(), fixture["dice"].get<double>(), 1e-6);
  EXPECT_NEAR(compute_loss("dice_bce", logits, target).item<double>(),
              fixture["dice_bce"].get<double>(), 1e-6);
}

TEST(LossesTest, DiceMatchesMonai) { expect_losses_match_monai(testing::kTrainFixtureDir); }

// Fresh inputs and shapes, with the project's MONAI computing the reference.
TEST(LossesLiveMonaiTest, DiceAndDiceBceMatchMonaiOnFreshInputs) {
  testing::check_against_live_monai({21, 22},
                                    [](const std::string& dir) { expect_losses_match_monai(dir); });
}

TEST(LossesTest, PerfectPredictionHasNearZeroLossAndGradientsFlow) {
  const at::Tensor target = (at::rand({1, 3, 4, 4, 4}) > 0.5).to(at::kFloat);
  const at::Tensor confident = (target * 2 - 1) * 30;  // sigmoid ~ 0 or 1
  EXPECT_LT(dice_loss(confident, target).item<double>(), 1e-6);
  at::Tensor logits = at::zeros({1, 3, 4, 4, 4}).requires_grad_(true);
  dice_loss(logits, target).backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace medseg

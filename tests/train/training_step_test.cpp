#include "train/training_step.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <limits>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

UNet tiny_unet() {
  UNetOptions options;
  options.channels = {4, 8, 16};
  options.strides = {2, 2};
  options.num_res_units = 1;
  return UNet(options);
}

struct Fixture {
  Fixture() {
    torch::manual_seed(4);
    image = at::randn({2, 4, 16, 16, 8});
    label = (image.slice(1, 0, 3) > 0.3).to(at::kFloat);  // learnable from the input
  }
  UNet model = tiny_unet();
  torch::optim::Adam adam{model->parameters(), torch::optim::AdamOptions(1e-2)};
  DynamicLossScaler scaler{false};
  Compute compute;  // the CPU in fp32
  at::Tensor image, label;
};

TEST(TrainingStepTest, StepsLowerTheLossOnAFixedBatch) {
  Fixture f;
  TrainingStep step(f.model, f.adam, f.scaler, f.compute, TrainingStepOptions{}, nullptr);
  const double first = step.run(f.image, f.label, 0).loss;
  double last = first;
  for (int i = 1; i < 15; ++i) {
    const StepResult result = step.run(f.image, f.label, i);
    EXPECT_TRUE(result.applied);
    EXPECT_EQ(result.times.exposed_sync, 0.0);
    last = result.loss;
  }
  EXPECT_LT(last, first - 0.05) << first << " -> " << last;
}

TEST(TrainingStepTest, GradientClippingBoundsTheUpdate) {
  // SGD without momentum moves each weight by lr * gradient: with the global gradient norm
  // clipped to 1e-3, no weight can move by more than lr * 1e-3.
  Fixture f;
  torch::optim::SGD optimizer(f.model->parameters(), torch::optim::SGDOptions(1.0));
  const std::vector<at::Tensor> before = [&] {
    std::vector<at::Tensor> copies;
    for (const at::Tensor& p : f.model->parameters()) copies.push_back(p.detach().clone());
    return copies;
  }();
  TrainingStep step(f.model, optimizer, f.scaler, f.compute, TrainingStepOptions{"dice", 1e-3},
                    nullptr);
  step.run(f.image, f.label, 0);
  double squared = 0.0;
  const std::vector<at::Tensor> after = f.model->parameters();
  for (size_t i = 0; i < after.size(); ++i) {
    squared += (after[i] - before[i]).pow(2).sum().item<double>();
  }
  EXPECT_LE(std::sqrt(squared), 1e-3 * 1.0001);
  EXPECT_GT(std::sqrt(squared), 0.0);
}

TEST(TrainingStepTest, NonFiniteLossWithoutLossScalingNamesTheStep) {
  Fixture f;
  TrainingStep step(f.model, f.adam, f.scaler, f.compute, TrainingStepOptions{}, nullptr);
  at::Tensor poisoned = f.image.clone();
  poisoned[0][0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  testing::expect_client_error([&] { step.run(poisoned, f.label, 41); },
                               {"training loss became", "at step 41"});
}

}  // namespace
}  // namespace medseg

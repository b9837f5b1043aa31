#include "train/loss_scaler.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/conv.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <limits>

#include "test_support.h"
#include "util/cuda.h"

namespace medseg {
namespace {

TEST(LossScalerTest, SkipsANonFiniteStepHalvesTheScaleAndGrowsItBackAfterGoodSteps) {
  DynamicLossScaler scaler(/*enabled=*/true, /*initial_scale=*/1024.0, /*growth_interval=*/3);
  at::Tensor weight = at::ones({4}).requires_grad_(true);
  EXPECT_DOUBLE_EQ(scaler.scale_loss(at::full({}, 2.0)).item<double>(), 2048.0);

  weight.mutable_grad() =
      at::tensor({1024.0, 2048.0, std::numeric_limits<double>::infinity(), 0.0}, at::kFloat);
  EXPECT_FALSE(scaler.unscale_and_check({weight}));
  EXPECT_DOUBLE_EQ(scaler.scale(), 512.0);
  EXPECT_EQ(weight.grad().abs().sum().item<double>(), 0.0) << "a skipped step leaves no gradient";

  for (int step = 0; step < 3; ++step) {
    weight.mutable_grad() = at::full({4}, 512.0);
    EXPECT_TRUE(scaler.unscale_and_check({weight}));
    EXPECT_DOUBLE_EQ(weight.grad()[0].item<double>(), 1.0) << "gradients are unscaled";
  }
  EXPECT_DOUBLE_EQ(scaler.scale(), 1024.0) << "3 good steps in a row double the scale";
}

TEST(LossScalerTest, DisabledScalerOnlyReportsWhetherGradientsAreFinite) {
  DynamicLossScaler scaler(/*enabled=*/false);
  at::Tensor weight = at::ones({2}).requires_grad_(true);
  weight.mutable_grad() = at::tensor({1.0, std::nan("")}, at::kFloat);
  EXPECT_FALSE(scaler.unscale_and_check({weight}));
  EXPECT_DOUBLE_EQ(scaler.scale(), 1.0);
  weight.mutable_grad() = at::tensor({3.0, 4.0}, at::kFloat);
  EXPECT_TRUE(scaler.unscale_and_check({weight}));
  EXPECT_DOUBLE_EQ(weight.grad()[1].item<double>(), 4.0);
}

// fp16 training on a GPU whose loss scale is far too large (an injected overflow: the fp16
// gradients become Inf): the scaler skips those steps without touching the weights, halves the
// scale until the gradients fit, and training then proceeds and lowers the loss.
TEST(GpuLossScalerTest, Fp16RecoversFromAnInjectedOverflow) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  torch::manual_seed(3);
  torch::nn::Conv3d conv(torch::nn::Conv3dOptions(2, 1, 3).padding(1));
  conv->to(torch::kCUDA);
  torch::optim::SGD optimizer(conv->parameters(), torch::optim::SGDOptions(0.05));
  const auto on_gpu = at::TensorOptions().device(at::kCUDA);
  const at::Tensor input = at::randn({4, 2, 16, 16, 16}, on_gpu);
  const at::Tensor target = at::randn({4, 1, 16, 16, 16}, on_gpu);
  DynamicLossScaler scaler(/*enabled=*/true, /*initial_scale=*/std::ldexp(1.0, 60));

  const at::Tensor weights_before = conv->weight.detach().clone();
  int skipped = 0, applied = 0;
  double first_loss = 0.0, last_loss = 0.0;
  for (int step = 0; step < 200 && applied < 20; ++step) {
    optimizer.zero_grad();
    at::Tensor output;
    {
      cuda::AutocastGuard autocast(true, at::kHalf);
      output = conv->forward(input);
    }
    const at::Tensor loss = (output.to(at::kFloat) - target).pow(2).mean();
    scaler.scale_loss(loss).backward();
    if (!scaler.unscale_and_check(conv->parameters())) {
      ++skipped;
      if (applied == 0) {
        EXPECT_TRUE(conv->weight.detach().equal(weights_before)) << "a skipped step moved weights";
      }
      continue;
    }
    optimizer.step();
    if (applied == 0) first_loss = loss.item<double>();
    last_loss = loss.item<double>();
    ++applied;
  }
  std::printf("[ GPU      ] fp16: %d steps skipped, scale now 2^%.0f, loss %.4f -> %.4f\n", skipped,
              std::log2(scaler.scale()), first_loss, last_loss);
  EXPECT_GT(skipped, 0) << "a scale of 2^60 must overflow fp16 gradients";
  EXPECT_EQ(applied, 20) << "the scale never came down far enough";
  EXPECT_LT(last_loss, first_loss);
  for (const at::Tensor& parameter : conv->parameters()) {
    EXPECT_TRUE(at::isfinite(parameter).all().item<bool>());
  }
}

}  // namespace
}  // namespace medseg

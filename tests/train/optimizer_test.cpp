#include "train/optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/serialize/output-archive.h>

#include <string>
#include <vector>

namespace medseg {
namespace {

std::vector<at::Tensor> parameters_like(uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> parameters;
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{16, 4, 3, 3, 3}, {16}, {3, 16, 1, 1, 1}, {1}}) {
    parameters.push_back(at::randn(shape).set_requires_grad(true));
  }
  return parameters;
}

// `steps` steps with the same pseudo-random gradients.
void run_steps(torch::optim::Optimizer& optimizer, std::vector<at::Tensor>& parameters, int steps,
               uint64_t seed) {
  at::manual_seed(seed);
  for (int step = 0; step < steps; ++step) {
    for (at::Tensor& parameter : parameters) {
      parameter.mutable_grad() = at::randn_like(parameter) * (step + 1);
    }
    optimizer.step();
  }
}

double largest_difference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double largest = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    largest = std::max(largest, (a[i] - b[i]).abs().max().item<double>());
  }
  return largest;
}

OptimConfig config_of(const std::string& name, bool fused) {
  OptimConfig config;
  config.name = name;
  config.learning_rate = 1e-3;
  config.weight_decay = 1e-2;
  config.fused = fused;
  return config;
}

TEST(OptimizerTest, FusedAdamAndAdamWFollowLibTorchsToFloatRounding) {
  for (const std::string name : {"adam", "adamw"}) {
    std::vector<at::Tensor> fused_parameters = parameters_like(1);
    std::vector<at::Tensor> plain_parameters = parameters_like(1);
    auto fused = make_optimizer(config_of(name, true), fused_parameters);
    auto plain = make_optimizer(config_of(name, false), plain_parameters);
    run_steps(*fused, fused_parameters, 20, 2);
    run_steps(*plain, plain_parameters, 20, 2);
    // 20 steps of lr 1e-3 move each weight by up to 0.02; the two agree to ~1e-7.
    EXPECT_LT(largest_difference(fused_parameters, plain_parameters), 1e-6) << name;
    EXPECT_GT(largest_difference(fused_parameters, parameters_like(1)), 1e-3) << name;
  }
}

TEST(OptimizerTest, FusedStateIsLibTorchsSoCheckpointsLoadEitherWay) {
  std::vector<at::Tensor> parameters = parameters_like(3);
  auto fused = make_optimizer(config_of("adam", true), parameters);
  run_steps(*fused, parameters, 5, 4);
  torch::serialize::OutputArchive archive;
  fused->save(archive);
  std::string bytes;
  archive.save_to([&](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  // A job resumed with optim.fused=false continues from the fused optimiser's moments and steps.
  std::vector<at::Tensor> resumed_parameters;
  for (const at::Tensor& parameter : parameters) {
    resumed_parameters.push_back(parameter.detach().clone().set_requires_grad(true));
  }
  auto plain = make_optimizer(config_of("adam", false), resumed_parameters);
  torch::serialize::InputArchive input;
  input.load_from(bytes.data(), bytes.size());
  load_optimizer_state(*plain, input);
  run_steps(*fused, parameters, 3, 5);
  run_steps(*plain, resumed_parameters, 3, 5);
  EXPECT_LT(largest_difference(parameters, resumed_parameters), 1e-6);
}

TEST(OptimizerTest, ParametersWithoutGradientsAreLeftAlone) {
  std::vector<at::Tensor> parameters = parameters_like(6);
  const at::Tensor before = parameters[1].detach().clone();
  auto fused = make_optimizer(config_of("adam", true), parameters);
  parameters[0].mutable_grad() = at::ones_like(parameters[0]);
  fused->step();
  EXPECT_TRUE(at::equal(parameters[1].detach(), before));
  EXPECT_FALSE(at::equal(parameters[0].detach(), parameters_like(6)[0].detach()));
}

}  // namespace
}  // namespace medseg

#include "model/unet.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "model/monai_fixtures.h"
#include "test_support.h"
#include "util/cuda.h"
#include "util/error.h"

namespace medseg {
namespace {

using testing::fixture_input;
using testing::fixture_options;
using testing::fixture_output;
using testing::load_fixture_weights;
using testing::max_relative_error;
using testing::read_fixture_json;

// Every state-dict name and shape of MONAI's default UNet, and nothing else.
TEST(UNetTest, DefaultStateDictMatchesMonai) {
  UNet unet(UNetOptions{});
  const nlohmann::json layout = read_fixture_json("unet/default/weights.json");

  std::map<std::string, std::vector<int64_t>> expected;
  for (const auto& entry : layout.at("tensors")) {
    expected[entry.at("name").get<std::string>()] = entry.at("shape").get<std::vector<int64_t>>();
  }
  std::map<std::string, std::vector<int64_t>> actual;
  for (const auto& item : unet->named_parameters()) actual[item.key()] = item.value().sizes().vec();
  EXPECT_TRUE(unet->named_buffers().is_empty());

  EXPECT_EQ(actual, expected);
  EXPECT_EQ(actual.size(), 63u);
  EXPECT_EQ(count_parameters(*unet), 4810074);
  // 3x the forward convolutions: 13.32 GFLOP forward at 128x128x64 (counted layer by layer from
  // MONAI's construction: residual units, strided 3x3x3 residual convolutions, transposed
  // up-sampling; PyTorch's FlopCounterMode counts the same 1.6654 GFLOP for MONAI's UNet at
  // 64x64x32), 39.97 GFLOP per training sample.
  EXPECT_NEAR(unet_training_flop_per_sample(UNetOptions(), {64, 64, 32}) / 3e9, 1.6654, 1e-4);
  EXPECT_NEAR(unet_training_flop_per_sample(UNetOptions(), {128, 128, 64}) / 1e9, 39.97, 0.01);
  // Convolutions scale with the voxels: half the voxels, half the arithmetic.
  EXPECT_NEAR(unet_training_flop_per_sample(UNetOptions(), {128, 128, 32}) /
                  unet_training_flop_per_sample(UNetOptions(), {128, 128, 64}),
              0.5, 1e-9);
  EXPECT_EQ(layout.at("num_parameters").get<int64_t>(), 4810074);
}

// Each small MONAI configuration, with MONAI's weights, reproduces MONAI's eval-mode output.
class UNetForwardTest : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetForwardTest, MatchesMonaiOutput) {
  const std::string config = GetParam();
  UNet unet(fixture_options(config));
  load_fixture_weights(config, *unet);
  unet->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor output = unet->forward(fixture_input());
  const torch::Tensor expected = fixture_output(config);
  ASSERT_EQ(output.sizes(), expected.sizes());
  const double error = max_relative_error(output, expected);
  std::cout << "[ UNet     ] " << config << ": max |C++ - MONAI| / max |MONAI| = " << error
            << " (max |diff| = " << (output - expected).abs().max().item<double>() << ")\n";
  EXPECT_LE(error, 1e-4);
}

// The instantiation name starts with "UNet" so --gtest_filter='UNet*' selects it.
INSTANTIATE_TEST_SUITE_P(UNet, UNetForwardTest,
                         ::testing::Values("small_res2", "small_res0", "small_res1_s21"),
                         [](const auto& info) { return info.param; });

TEST(UNetTest, KeepsSpatialSizeAndProducesGradients) {
  UNetOptions options;
  options.channels = {4, 8, 16};
  options.strides = {2, 2};
  UNet unet(options);
  const torch::Tensor output = unet->forward(torch::randn({2, 4, 8, 8, 12}));
  EXPECT_EQ(output.sizes(), (std::vector<int64_t>{2, 3, 8, 8, 12}));
  output.sum().backward();
  for (const auto& item : unet->named_parameters()) {
    EXPECT_TRUE(item.value().grad().defined()) << item.key();
  }
}

TEST(UNetTest, RejectsInvalidOptionsNamingTheField) {
  struct Case {
    std::string field;
    UNetOptions options;
  };
  std::vector<Case> cases(6);
  cases[0] = {"channels", {}};
  cases[0].options.channels = {16};
  cases[0].options.strides = {};
  cases[1] = {"strides", {}};
  cases[1].options.strides = {2, 2, 2};
  cases[2] = {"strides", {}};
  cases[2].options.strides = {2, 0, 2, 2};
  cases[3] = {"num_res_units", {}};
  cases[3].options.num_res_units = -1;
  cases[4] = {"dropout", {}};
  cases[4].options.dropout = 1.0;
  cases[5] = {"in_channels", {}};
  cases[5].options.in_channels = 0;
  for (const Case& test_case : cases) {
    try {
      UNet unet(test_case.options);
      ADD_FAILURE() << "no error for a bad " << test_case.field;
    } catch (const ClientError& error) {
      EXPECT_NE(std::string(error.what()).find("model." + test_case.field), std::string::npos)
          << error.what();
    }
  }
}

// The network on a GPU computes what it computes on the CPU: fp32 (TF32 off) to round-off, and
// bf16 autocast (what train.amp auto picks) close enough that thresholds at 0 rarely flip.
TEST(GpuUNetTest, CudaForwardEqualsCpu) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  torch::manual_seed(5);
  UNet unet(UNetOptions{});  // MONAI's default BraTS UNet
  unet->eval();
  const torch::Tensor input = torch::randn({2, 4, 64, 64, 32});
  torch::NoGradGuard no_grad;
  const torch::Tensor cpu = unet->forward(input);

  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  unet->to(torch::kCUDA);
  const torch::Tensor cuda_fp32 = unet->forward(input.to(torch::kCUDA)).cpu();
  torch::Tensor cuda_bf16;
  {
    cuda::AutocastGuard autocast(true, at::kBFloat16);
    cuda_bf16 = unet->forward(input.to(torch::kCUDA)).to(torch::kFloat).cpu();
  }
  const double scale = cpu.abs().max().item<double>();
  const double fp32_error = (cuda_fp32 - cpu).abs().max().item<double>() / scale;
  const double bf16_error = (cuda_bf16 - cpu).abs().max().item<double>() / scale;
  const double sign_flips = (cuda_bf16.gt(0) != cpu.gt(0)).to(torch::kFloat).mean().item<double>();
  std::printf(
      "[ GPU      ] CUDA fp32 vs CPU: %.3g; bf16 autocast vs CPU: %.3g (%.4f%% signs flip)\n",
      fp32_error, bf16_error, 100 * sign_flips);
  EXPECT_LT(fp32_error, 1e-4);
  EXPECT_LT(bf16_error, 5e-2);
  EXPECT_LT(sign_flips, 1e-2);
}

}  // namespace
}  // namespace medseg

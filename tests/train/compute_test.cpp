#include "train/compute.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

TEST(ComputeTest, AutoOnAMachineWithoutGpuIsTheCpuInFp32) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a GPU";
  const Compute compute = resolve_compute(ComputeRequest{});
  EXPECT_TRUE(compute.device.is_cpu());
  EXPECT_FALSE(compute.autocast);
  EXPECT_FALSE(compute.loss_scaling);
  EXPECT_EQ(compute.precision, "fp32");
}

TEST(ComputeTest, BadRequestsNameTheSetting) {
  ComputeRequest request;
  request.device = "gpu";
  testing::expect_client_error([&] { resolve_compute(request); },
                               {"train.device 'gpu'", "auto, cpu or cuda"});
  request.device = "cpu";
  request.amp = "fp8";
  request.amp_setting = "--amp";
  testing::expect_client_error([&] { resolve_compute(request); },
                               {"--amp 'fp8'", "auto, bf16, fp16 or off"});
  request.amp = "bf16";
  testing::expect_client_error([&] { resolve_compute(request); },
                               {"--amp = 'bf16' needs a CUDA device"});
}

TEST(ComputeTest, CudaWithoutAGpuIsAPlatformError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has a GPU";
  ComputeRequest request;
  request.device = "cuda";
  EXPECT_THROW(resolve_compute(request), PlatformError);
}

TEST(GpuComputeTest, AutoOnAGpuIsBf16WhereTheGpuHasIt) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  const Compute compute = resolve_compute(ComputeRequest{});
  EXPECT_TRUE(compute.device.is_cuda());
  EXPECT_EQ(compute.precision, cuda::supports_bf16(0) ? "bf16" : "fp32");
  ComputeRequest fp16;
  fp16.amp = "fp16";
  const Compute half = resolve_compute(fp16);
  EXPECT_TRUE(half.autocast);
  EXPECT_TRUE(half.loss_scaling);
  EXPECT_EQ(half.dtype, at::kHalf);
}

}  // namespace
}  // namespace medseg

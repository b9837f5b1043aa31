#include "util/cuda.h"

#include <ATen/autocast_mode.h>

#ifdef MEDSEG_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace medseg::cuda {

AutocastGuard::AutocastGuard(bool enabled, at::ScalarType dtype) : active_(enabled) {
  if (!active_) return;
  previous_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
  previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  at::autocast::set_autocast_enabled(at::kCUDA, previous_enabled_);
  at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
  if (!previous_enabled_) at::autocast::clear_cache();
}

std::string build_description() {
#ifdef MEDSEG_WITH_CUDA
  return "CUDA " + std::to_string(CUDART_VERSION / 1000) + "." +
         std::to_string(CUDART_VERSION % 1000 / 10);
#else
  return "no CUDA (CPU build)";
#endif
}

bool supports_bf16([[maybe_unused]] int device) {
#ifdef MEDSEG_WITH_CUDA
  cudaDeviceProp properties{};
  if (cudaGetDeviceProperties(&properties, device) != cudaSuccess) return false;
  return properties.major >= 8;
#else
  return false;
#endif
}

void synchronize() {
#ifdef MEDSEG_WITH_CUDA
  c10::cuda::device_synchronize();
#endif
}

int64_t peak_memory_bytes([[maybe_unused]] int device) {
#ifdef MEDSEG_WITH_CUDA
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
#else
  return 0;
#endif
}

int64_t free_memory_bytes([[maybe_unused]] int device) {
#ifdef MEDSEG_WITH_CUDA
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) return 0;
  size_t free = 0, total = 0;
  const bool ok = cudaMemGetInfo(&free, &total) == cudaSuccess;
  cudaSetDevice(previous);
  return ok ? static_cast<int64_t>(free) : 0;
#else
  return 0;
#endif
}

}  // namespace medseg::cuda

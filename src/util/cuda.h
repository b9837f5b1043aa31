// The few CUDA calls medseg makes outside LibTorch's device-generic API. The CUDA build
// (scripts/setup.sh --cuda, MEDSEG_WITH_CUDA) compiles their CUDA side; the CPU build has no CUDA
// device, so there they do nothing.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace medseg::cuda {

// CUDA autocast to `dtype` (at::kBFloat16 or at::kHalf) on this thread while the guard lives,
// when `enabled`; the previous autocast state is restored (and the cast cache cleared) on exit.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, at::ScalarType dtype);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  AutocastGuard(AutocastGuard&&) = delete;

 private:
  bool active_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kHalf;
};

// "CUDA 13.0" (the CUDA runtime this build was compiled against), or "no CUDA (CPU build)".
std::string build_description();

// Whether GPU `device` computes in bf16 natively (compute capability 8.0 or newer: A100, A10G,
// L4, H100, ...; not T4 or V100). False in the CPU build.
bool supports_bf16(int device);

// Waits for the current CUDA device's queued work (for timing).
void synchronize();

// Peak bytes the CUDA caching allocator has handed out on `device` since the process started.
int64_t peak_memory_bytes(int device = 0);

// Bytes free on GPU `device` now (cudaMemGetInfo; memory the caching allocator holds counts as
// used). 0 in the CPU build or on error.
int64_t free_memory_bytes(int device);

}  // namespace medseg::cuda

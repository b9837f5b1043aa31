// The one place for differences between Debian's LibTorch 1.13 (CPU; CI and development) and the
// CUDA LibTorch 2.x of the GPU image. Code elsewhere calls what is defined here instead of testing
// versions itself.
#pragma once

#include <torch/version.h>

// True when the LibTorch being compiled against is at least major.minor.
#define MEDSEG_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||         \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace medseg::torch_compat {

// Python's `torch.load` on a file written by torch::pickle_save (model.pth): the pickle names the
// dict's type through torch.jit._pickle.restore_type_tag, which PyTorch >= 2.6 refuses under its
// default weights_only=True. Python readers must pass weights_only=False, or first call
// torch.serialization.add_safe_globals([torch.jit._pickle.restore_type_tag]). The C++ writer is
// the same on 1.13 and 2.x.
inline constexpr const char* kPythonLoadHint =
    "torch.load(path, weights_only=False) (PyTorch >= 2.6), or allow-list "
    "torch.jit._pickle.restore_type_tag with torch.serialization.add_safe_globals";

}  // namespace medseg::torch_compat

#include <ATen/autocast_mode.h>

namespace medseg::torch_compat {

// Turns CUDA autocast on (with `dtype`: at::kBFloat16 or at::kHalf) or off for this thread.
// 1.13 has set_enabled / set_autocast_gpu_dtype; 2.4 made both take a device type.
inline void set_cuda_autocast(bool enabled, at::ScalarType dtype) {
#if MEDSEG_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  if (!enabled) at::autocast::clear_cache();
}

}  // namespace medseg::torch_compat

#include <cstdint>

namespace medseg::torch_compat {

// Waits for the current CUDA device's queued work (for timing). No-op without CUDA.
void synchronize_cuda();

// Peak bytes the CUDA caching allocator has handed out on device 0 (0 without CUDA).
int64_t peak_cuda_memory_bytes();

}  // namespace medseg::torch_compat

#include <type_traits>

namespace medseg::torch_compat {
namespace detail {
template <typename T, typename = void>
struct HasUseLibUV : std::false_type {};
template <typename T>
struct HasUseLibUV<T, std::void_t<decltype(std::declval<T&>().useLibUV)>> : std::true_type {};
}  // namespace detail

// c10d::TCPStoreOptions gained `useLibUV` in 2.2 and it defaults to true from 2.4; the libuv
// server has differed in behaviour from the classic one that 1.13 has (only), so medseg asks for
// the classic server everywhere. A template, so this header needs no c10d include: the field is
// set only where the options type has it.
template <typename StoreOptions>
void use_classic_tcpstore(StoreOptions& options) {
  if constexpr (detail::HasUseLibUV<StoreOptions>::value) options.useLibUV = false;
}

}  // namespace medseg::torch_compat

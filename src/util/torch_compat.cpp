// The CUDA-only calls of torch_compat.h; compiled against CUDA LibTorch when MEDSEG_WITH_CUDA.
#include "util/torch_compat.h"

#ifdef MEDSEG_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace medseg::torch_compat {

void synchronize_cuda() {
#ifdef MEDSEG_WITH_CUDA
  c10::cuda::device_synchronize();
#endif
}

int64_t peak_cuda_memory_bytes() {
#ifdef MEDSEG_WITH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats
      .allocated_bytes[static_cast<size_t>(c10::cuda::CUDACachingAllocator::StatType::AGGREGATE)]
      .peak;
#else
  return 0;
#endif
}

}  // namespace medseg::torch_compat

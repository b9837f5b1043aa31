// Where and in which precision medseg computes. `train` (its steps and its validation),
// `bench train` and `infer` resolve it with the same function and run every forward pass under
// the same autocast, so what is benchmarked and validated is what trains and predicts.
#pragma once

#include <c10/core/Device.h>
#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "util/cuda.h"

namespace torch::nn {
class Module;
}

namespace medseg {

struct Compute {
  c10::Device device = c10::Device(c10::kCPU);
  bool autocast = false;  // CUDA autocast to `dtype` around forward passes
  at::ScalarType dtype = at::kFloat;
  bool loss_scaling = false;       // fp16: dynamic loss scaling of the backward pass
  std::string precision = "fp32";  // fp32, bf16 or fp16 (for logs)
  bool channels_last = false;      // GPU: 5-D weights and network inputs in NDHWC layout
  bool cudnn_benchmark = false;    // GPU: cuDNN times its algorithms per shape (set globally)

  // The autocast of this setup, on this thread, while the guard lives.
  cuda::AutocastGuard autocast_guard() const { return cuda::AutocastGuard(autocast, dtype); }
};

struct ComputeRequest {
  std::string device = "auto";  // auto (a GPU when one is visible), cpu or cuda
  std::string amp = "auto";     // auto (bf16 on GPUs that have it, else fp32), bf16, fp16, off
  int local_rank = 0;           // the GPU of this worker
  bool cudnn_benchmark = true;  // train.cudnn_benchmark (GPU only)
  bool channels_last = false;   // train.channels_last (GPU only; ignored on the CPU)
  std::string device_setting = "train.device";  // how errors name the two settings
  std::string amp_setting = "train.amp";
};

// ClientError for an unknown value or for amp on the CPU; PlatformError for cuda without a GPU.
// On a GPU it also switches cuDNN's benchmark mode as requested (a process-wide setting).
Compute resolve_compute(const ComputeRequest& request);

// Bytes free on the compute device: a GPU's free memory, or on the CPU what this process could
// still allocate (util/memory.h). 0 when unknown.
int64_t free_memory_bytes(const Compute& compute);

// The layout a network input takes on this setup: channels-last 3-D when compute.channels_last.
at::Tensor to_compute_layout(const at::Tensor& input, const Compute& compute);

// Puts the module's 5-D parameters (convolution weights) into that layout, before an optimiser
// is built on them; its gradients and optimiser state follow the parameters' layout.
void to_compute_layout(torch::nn::Module& module, const Compute& compute);

}  // namespace medseg

#include "train/compute.h"

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>

#include "util/error.h"
#include "util/memory.h"

namespace medseg {

Compute resolve_compute(const ComputeRequest& request) {
  if (request.device != "auto" && request.device != "cpu" && request.device != "cuda") {
    throw ClientError(request.device_setting + " '" + request.device +
                      "' is invalid: expected auto, cpu or cuda");
  }
  if (request.amp != "auto" && request.amp != "bf16" && request.amp != "fp16" &&
      request.amp != "off") {
    throw ClientError(request.amp_setting + " '" + request.amp +
                      "' is invalid: expected auto, bf16, fp16 or off");
  }
  const bool cuda = torch::cuda::is_available();
  if (request.device == "cuda" && !cuda) {
    throw PlatformError(request.device_setting +
                        " = 'cuda' but no CUDA device is available to this process");
  }
  Compute compute;
  if (request.device == "cuda" || (request.device == "auto" && cuda)) {
    compute.device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(request.local_rank));
  }
  const bool on_gpu = compute.device.is_cuda();
  if (on_gpu) {
    compute.cudnn_benchmark = request.cudnn_benchmark;
    compute.channels_last = request.channels_last;
    at::globalContext().setBenchmarkCuDNN(request.cudnn_benchmark);
  }
  if (request.amp == "off" || (request.amp == "auto" && !on_gpu)) return compute;
  if (!on_gpu) {
    throw ClientError(request.amp_setting + " = '" + request.amp +
                      "' needs a CUDA device; this job computes on the CPU (use off or auto)");
  }
  if (request.amp == "auto" && !cuda::supports_bf16(request.local_rank)) return compute;
  compute.autocast = true;
  if (request.amp == "fp16") {
    compute.dtype = at::kHalf;
    compute.loss_scaling = true;
    compute.precision = "fp16";
  } else {
    compute.dtype = at::kBFloat16;
    compute.precision = "bf16";
  }
  return compute;
}

int64_t free_memory_bytes(const Compute& compute) {
  return compute.device.is_cuda() ? cuda::free_memory_bytes(compute.device.index())
                                  : available_memory_bytes();
}

at::Tensor to_compute_layout(const at::Tensor& input, const Compute& compute) {
  if (!compute.channels_last || input.dim() != 5) return input;
  return input.contiguous(at::MemoryFormat::ChannelsLast3d);
}

void to_compute_layout(torch::nn::Module& module, const Compute& compute) {
  if (!compute.channels_last) return;
  torch::NoGradGuard no_grad;
  for (at::Tensor& parameter : module.parameters()) {
    if (parameter.dim() == 5) {
      parameter.set_data(parameter.contiguous(at::MemoryFormat::ChannelsLast3d));
    }
  }
}

}  // namespace medseg

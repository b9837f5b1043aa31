#include "train/training_step.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/nn/utils/clip_grad.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "train/losses.h"
#include "util/clock.h"
#include "util/cuda.h"
#include "util/error.h"

namespace medseg {

TrainingStep::TrainingStep(UNet model, torch::optim::Optimizer& optimizer,
                           DynamicLossScaler& scaler, const Compute& compute,
                           TrainingStepOptions options, OverlappedGradientSync* gradient_sync)
    : model_(std::move(model)),
      optimizer_(optimizer),
      scaler_(scaler),
      compute_(compute),
      options_(std::move(options)),
      gradient_sync_(gradient_sync) {
  if (scaler_.enabled() != compute_.loss_scaling) {
    throw InternalError("TrainingStep: loss scaling must be on exactly under fp16");
  }
}

StepResult TrainingStep::run(const at::Tensor& image, const at::Tensor& label, int64_t global_step,
                             bool synchronize_phases) {
  StepResult result;
  // The loss read below synchronises the device once per step anyway; the phases after it only
  // when asked.
  const bool synchronize = synchronize_phases && compute_.device.is_cuda();
  Clock::time_point phase_started = Clock::now();
  const auto end_phase = [&](double& seconds, bool wait_for_device) {
    if (wait_for_device) cuda::synchronize();
    const Clock::time_point now = Clock::now();
    seconds = std::chrono::duration<double>(now - phase_started).count();
    phase_started = now;
  };
  model_->train();
  optimizer_.zero_grad();
  at::Tensor logits;
  {
    const auto autocast = compute_.autocast_guard();
    logits = model_->forward(to_compute_layout(image, compute_));
  }
  const at::Tensor loss = compute_loss(options_.loss, logits, label);
  result.loss = loss.item<double>();
  end_phase(result.times.forward, false);
  if (!std::isfinite(result.loss) && !scaler_.enabled()) {
    throw ClientError("the training loss became " + std::to_string(result.loss) + " at step " +
                      std::to_string(global_step) + ": lower optim.learning_rate, enable " +
                      "optim.grad_clip_norm, or check the data for extreme values");
  }
  if (gradient_sync_) gradient_sync_->begin();
  scaler_.scale_loss(loss).backward();  // buckets are all-reduced as their gradients arrive
  if (gradient_sync_) {
    gradient_sync_->finish();
    result.times.exposed_sync = gradient_sync_->last_exposed_seconds();
  }
  end_phase(result.times.backward, synchronize);
  result.times.backward = std::max(0.0, result.times.backward - result.times.exposed_sync);
  const std::vector<at::Tensor> parameters = model_->parameters();
  if (!scaler_.unscale_and_check(parameters)) {
    spdlog::warn("step {}: non-finite gradients under fp16; step skipped, loss scale now {}",
                 global_step, scaler_.scale());
    result.applied = false;
    end_phase(result.times.optimizer, synchronize);
    return result;
  }
  if (options_.grad_clip_norm > 0) {
    torch::nn::utils::clip_grad_norm_(parameters, options_.grad_clip_norm);
  }
  optimizer_.step();
  end_phase(result.times.optimizer, synchronize);
  return result;
}

}  // namespace medseg

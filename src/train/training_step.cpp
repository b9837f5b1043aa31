#include "train/training_step.h"

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/nn/utils/clip_grad.h>

#include <cmath>

#include "train/losses.h"
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

StepResult TrainingStep::run(const at::Tensor& image, const at::Tensor& label,
                             int64_t global_step) {
  StepResult result;
  model_->train();
  optimizer_.zero_grad();
  at::Tensor logits;
  {
    const auto autocast = compute_.autocast_guard();
    logits = model_->forward(image);
  }
  const at::Tensor loss = compute_loss(options_.loss, logits, label);
  result.loss = loss.item<double>();
  if (!std::isfinite(result.loss) && !scaler_.enabled()) {
    throw ClientError("the training loss became " + std::to_string(result.loss) + " at step " +
                      std::to_string(global_step) + ": lower optim.learning_rate, enable " +
                      "optim.grad_clip_norm, or check the data for extreme values");
  }
  if (gradient_sync_) gradient_sync_->begin();
  scaler_.scale_loss(loss).backward();  // buckets are all-reduced as their gradients arrive
  if (gradient_sync_) {
    gradient_sync_->finish();
    result.exposed_sync_seconds = gradient_sync_->last_exposed_seconds();
  }
  const std::vector<at::Tensor> parameters = model_->parameters();
  if (!scaler_.unscale_and_check(parameters)) {
    spdlog::warn("step {}: non-finite gradients under fp16; step skipped, loss scale now {}",
                 global_step, scaler_.scale());
    result.applied = false;
    return result;
  }
  if (options_.grad_clip_norm > 0) {
    torch::nn::utils::clip_grad_norm_(parameters, options_.grad_clip_norm);
  }
  optimizer_.step();
  return result;
}

}  // namespace medseg

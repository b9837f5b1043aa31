// One optimisation step of the network: the step `medseg train` runs and `medseg bench train`
// times. Forward under the job's autocast; the loss; the backward pass (loss-scaled under fp16)
// with the gradient all-reduce overlapped when there are several ranks; unscaling and the
// non-finite check (fp16: the step is skipped and the scale lowered); optional gradient-norm
// clipping; the optimiser step.
#pragma once

#include <torch/optim/optimizer.h>

#include <string>

#include "dist/collectives.h"
#include "model/unet.h"
#include "train/compute.h"
#include "train/loss_scaler.h"
#include "train/progress_meter.h"

namespace medseg {

struct TrainingStepOptions {
  std::string loss = "dice";    // train.loss
  double grad_clip_norm = 0.0;  // optim.grad_clip_norm; 0 = off
};

struct StepResult {
  double loss = 0.0;    // this rank's loss (before scaling)
  bool applied = true;  // false: skipped for non-finite fp16 gradients
  // forward, backward, exposed_sync (gradient sync the backward pass did not hide) and
  // optimizer; exact on the CPU, and on a GPU when the step was run with `synchronize_phases`.
  StepTimes times;
};

class TrainingStep {
 public:
  // `gradient_sync` may be null (one rank). The references must outlive the step; the scaler
  // is the caller's (its state goes into checkpoints) and must be enabled exactly under fp16
  // (compute.loss_scaling).
  TrainingStep(UNet model, torch::optim::Optimizer& optimizer, DynamicLossScaler& scaler,
               const Compute& compute, TrainingStepOptions options,
               OverlappedGradientSync* gradient_sync);

  // image float [B, C, X, Y, Z] and label 0/1 float [B, L, X, Y, Z] on the compute device.
  // `global_step` names the step in errors. A non-finite loss without loss scaling is a
  // ClientError (the job cannot recover from it). `synchronize_phases`: wait for the GPU at the
  // end of the backward pass and of the optimiser step, so that their times are exact.
  StepResult run(const at::Tensor& image, const at::Tensor& label, int64_t global_step,
                 bool synchronize_phases = false);

 private:
  UNet model_;
  torch::optim::Optimizer& optimizer_;
  DynamicLossScaler& scaler_;
  Compute compute_;
  TrainingStepOptions options_;
  OverlappedGradientSync* gradient_sync_;
};

}  // namespace medseg

// Optimisers and learning-rate schedules of the `optim` and `schedule` configuration sections.
#pragma once

#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>

#include <memory>
#include <vector>

#include "config/config.h"

namespace medseg {

// adam (L2 weight decay, as torch.optim.Adam), adamw (decoupled) or sgd (Nesterov momentum).
// With optim.fused (the default), adam and adamw update every parameter of a group in one fused
// kernel (ATen's _fused_adam_ / _fused_adamw_, on the CPU and on GPUs, as torch.optim.Adam's
// fused=True) instead of about ten tensor operations per parameter; the state (moments, step
// counts) is torch::optim::Adam's, so checkpoints of either load into the other. The two agree to
// float32 rounding, not bit for bit.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config,
                                                        std::vector<at::Tensor> parameters);

// The learning rate at optimiser step `step` (0-based) of `total_steps`: linear warm-up from 0
// over schedule.warmup_steps, then constant, cosine or poly decay towards min_learning_rate.
double learning_rate_at(const OptimConfig& optim, const ScheduleConfig& schedule, int64_t step,
                        int64_t total_steps);

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate);

// Restores the optimiser's state (moments, step counts) from a checkpoint archive written by
// Optimizer::save. The options the optimiser was built with (learning rate, betas, weight decay,
// momentum: the configuration) are kept: LibTorch 2.x's Optimizer::load would replace them with
// the archive's.
void load_optimizer_state(torch::optim::Optimizer& optimizer,
                          torch::serialize::InputArchive& archive);

}  // namespace medseg

#include "train/optimizer.h"

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace medseg {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config,
                                                        std::vector<at::Tensor> parameters) {
  if (config.name == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(parameters),
                                                torch::optim::AdamOptions(config.learning_rate)
                                                    .betas({config.betas[0], config.betas[1]})
                                                    .weight_decay(config.weight_decay));
  }
  if (config.name == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(parameters),
                                                 torch::optim::AdamWOptions(config.learning_rate)
                                                     .betas({config.betas[0], config.betas[1]})
                                                     .weight_decay(config.weight_decay));
  }
  if (config.name == "sgd") {
    return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                               torch::optim::SGDOptions(config.learning_rate)
                                                   .momentum(config.momentum)
                                                   .nesterov(config.momentum > 0)
                                                   .weight_decay(config.weight_decay));
  }
  throw InternalError("optimizer '" + config.name + "' passed validation but is not built");
}

double learning_rate_at(const OptimConfig& optim, const ScheduleConfig& schedule, int64_t step,
                        int64_t total_steps) {
  const double peak = optim.learning_rate;
  if (step < schedule.warmup_steps) {
    return peak * static_cast<double>(step + 1) / static_cast<double>(schedule.warmup_steps);
  }
  if (schedule.name == "constant") return peak;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - schedule.warmup_steps);
  const double progress =
      std::min(1.0, static_cast<double>(step - schedule.warmup_steps) / decay_steps);
  const double floor = std::min(schedule.min_learning_rate, peak);
  if (schedule.name == "cosine") {
    return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  if (schedule.name == "poly") {
    return floor + (peak - floor) * std::pow(1.0 - progress, schedule.poly_power);
  }
  throw InternalError("schedule '" + schedule.name + "' passed validation but is not built");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double learning_rate) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(learning_rate);
}

void load_optimizer_state(torch::optim::Optimizer& optimizer,
                          torch::serialize::InputArchive& archive) {
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> configured;
  for (const auto& group : optimizer.param_groups()) configured.push_back(group.options().clone());
  optimizer.load(archive);
  auto& groups = optimizer.param_groups();
  for (size_t i = 0; i < groups.size() && i < configured.size(); ++i) {
    groups[i].set_options(std::move(configured[i]));
  }
}

}  // namespace medseg

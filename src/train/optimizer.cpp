#include "train/optimizer.h"

#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros_like.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "io/torch_archive.h"
#include "util/error.h"
#include "util/strings.h"

namespace medseg {

namespace {

// torch::optim::Adam or AdamW (their options and state, hence their checkpoints) whose step runs
// ATen's fused kernel once per parameter group.
template <typename Base, typename Options, typename State, bool kDecoupled>
class FusedAdam : public Base {
 public:
  using Base::Base;

  at::Tensor step(torch::optim::Optimizer::LossClosure closure = nullptr) override {
    at::NoGradGuard no_grad;
    at::Tensor loss;
    if (closure != nullptr) {
      at::AutoGradMode enable_grad(true);
      loss = closure();
    }
    for (auto& group : this->param_groups()) {
      const auto& options = static_cast<const Options&>(group.options());
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps;
      // The kernel reads each parameter's step count from a tensor on its device; parameters
      // that stepped together share one.
      std::map<std::pair<int64_t, std::string>, at::Tensor> step_tensors;
      for (const at::Tensor& parameter : group.params()) {
        if (!parameter.grad().defined()) continue;
        std::unique_ptr<torch::optim::OptimizerParamState>& slot =
            this->state_[parameter.unsafeGetTensorImpl()];
        if (slot == nullptr) {
          auto state = std::make_unique<State>();
          state->exp_avg(at::zeros_like(parameter, at::MemoryFormat::Preserve));
          state->exp_avg_sq(at::zeros_like(parameter, at::MemoryFormat::Preserve));
          if (options.amsgrad()) {
            state->max_exp_avg_sq(at::zeros_like(parameter, at::MemoryFormat::Preserve));
          }
          slot = std::move(state);
        }
        auto& state = static_cast<State&>(*slot);
        state.step(state.step() + 1);
        at::Tensor& step = step_tensors[{state.step(), parameter.device().str()}];
        if (!step.defined()) {
          step =
              at::scalar_tensor(static_cast<double>(state.step()),
                                at::TensorOptions().dtype(at::kFloat).device(parameter.device()));
        }
        params.push_back(parameter);
        grads.push_back(parameter.grad());
        exp_avgs.push_back(state.exp_avg());
        exp_avg_sqs.push_back(state.exp_avg_sq());
        if (options.amsgrad()) max_exp_avg_sqs.push_back(state.max_exp_avg_sq());
        steps.push_back(step);
      }
      if (params.empty()) continue;
      const auto [beta1, beta2] = options.betas();
      if constexpr (kDecoupled) {
        at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                          options.lr(), beta1, beta2, options.weight_decay(), options.eps(),
                          options.amsgrad(), /*maximize=*/false);
      } else {
        at::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, options.lr(),
                         beta1, beta2, options.weight_decay(), options.eps(), options.amsgrad(),
                         /*maximize=*/false);
      }
    }
    return loss;
  }
};

using FusedAdamL2 =
    FusedAdam<torch::optim::Adam, torch::optim::AdamOptions, torch::optim::AdamParamState, false>;
using FusedAdamW =
    FusedAdam<torch::optim::AdamW, torch::optim::AdamWOptions, torch::optim::AdamWParamState, true>;

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config,
                                                        std::vector<at::Tensor> parameters) {
  if (config.name == "adam") {
    const auto options = torch::optim::AdamOptions(config.learning_rate)
                             .betas({config.betas[0], config.betas[1]})
                             .weight_decay(config.weight_decay);
    if (config.fused) return std::make_unique<FusedAdamL2>(std::move(parameters), options);
    return std::make_unique<torch::optim::Adam>(std::move(parameters), options);
  }
  if (config.name == "adamw") {
    const auto options = torch::optim::AdamWOptions(config.learning_rate)
                             .betas({config.betas[0], config.betas[1]})
                             .weight_decay(config.weight_decay);
    if (config.fused) return std::make_unique<FusedAdamW>(std::move(parameters), options);
    return std::make_unique<torch::optim::AdamW>(std::move(parameters), options);
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

namespace {

// Checks one state tensor of `parameter` (#index in the optimiser) and returns it on the
// parameter's device: LibTorch loads a checkpoint's tensors onto the CPU.
at::Tensor fitted(const at::Tensor& stored, const at::Tensor& parameter, size_t index,
                  const char* name) {
  const std::string where =
      "optimiser state '" + std::string(name) + "' of parameter #" + std::to_string(index);
  if (!stored.defined()) throw ClientError(where + " is missing");
  const std::string problem = tensor_storage_problem(stored);
  if (!problem.empty()) throw ClientError(where + " is " + problem);
  if (stored.sizes() != parameter.sizes() || stored.scalar_type() != parameter.scalar_type()) {
    throw ClientError(where + " is " + std::string(stored.dtype().name()) + " " +
                      shape_text(stored.sizes()) + ", its parameter " +
                      std::string(parameter.dtype().name()) + " " + shape_text(parameter.sizes()));
  }
  return stored.to(parameter.device()).contiguous();
}

template <typename State>
void fit_adam_state(State& state, const at::Tensor& parameter, size_t index, bool amsgrad) {
  if (state.step() < 0) {
    throw ClientError("optimiser state of parameter #" + std::to_string(index) + " has step " +
                      std::to_string(state.step()) + ", expected >= 0");
  }
  state.exp_avg(fitted(state.exp_avg(), parameter, index, "exp_avg"));
  state.exp_avg_sq(fitted(state.exp_avg_sq(), parameter, index, "exp_avg_sq"));
  if (amsgrad) {
    state.max_exp_avg_sq(fitted(state.max_exp_avg_sq(), parameter, index, "max_exp_avg_sq"));
  }
}

// Every state the archive gave a parameter must be of this optimiser and fit the parameter: the
// optimiser's step reads them without checks.
void fit_loaded_state(torch::optim::Optimizer& optimizer) {
  size_t index = 0;
  for (auto& group : optimizer.param_groups()) {
    for (const at::Tensor& parameter : group.params()) {
      auto found = optimizer.state().find(parameter.unsafeGetTensorImpl());
      if (found != optimizer.state().end() && found->second == nullptr) {
        // LibTorch's load moves one stored state to the first parameter naming it.
        throw ClientError("optimiser state of parameter #" + std::to_string(index) +
                          " is another parameter's as well (a damaged file)");
      }
      if (found != optimizer.state().end()) {
        torch::optim::OptimizerParamState& state = *found->second;
        const torch::optim::OptimizerOptions& options = group.options();
        if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(&state)) {
          const auto* adam_options = dynamic_cast<const torch::optim::AdamOptions*>(&options);
          fit_adam_state(*adam, parameter, index, adam_options && adam_options->amsgrad());
        } else if (auto* adamw = dynamic_cast<torch::optim::AdamWParamState*>(&state)) {
          const auto* adamw_options = dynamic_cast<const torch::optim::AdamWOptions*>(&options);
          fit_adam_state(*adamw, parameter, index, adamw_options && adamw_options->amsgrad());
        } else if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(&state)) {
          sgd->momentum_buffer(fitted(sgd->momentum_buffer(), parameter, index, "momentum_buffer"));
        } else {
          throw ClientError("optimiser state of parameter #" + std::to_string(index) +
                            " is of another optimiser");
        }
      }
      ++index;
    }
  }
}

}  // namespace

void load_optimizer_state(torch::optim::Optimizer& optimizer,
                          torch::serialize::InputArchive& archive) {
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> configured;
  for (const auto& group : optimizer.param_groups()) configured.push_back(group.options().clone());
  optimizer.load(archive);
  auto& groups = optimizer.param_groups();
  for (size_t i = 0; i < groups.size() && i < configured.size(); ++i) {
    groups[i].set_options(std::move(configured[i]));
  }
  fit_loaded_state(optimizer);
}

}  // namespace medseg

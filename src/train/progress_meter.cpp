#include "train/progress_meter.h"

#include <algorithm>

namespace medseg {

std::vector<std::pair<std::string, double>> ProgressReport::shares() const {
  std::vector<std::pair<std::string, double>> parts_in_order = {
      {"data_wait", parts.data_wait},
      {"copy", parts.copy},
      {"forward", parts.forward},
      {"backward", parts.backward},
      {"sync", parts.exposed_sync},
      {"optimizer", parts.optimizer},
      {"checkpoint", checkpoint_seconds_per_step},
  };
  double measured = 0.0;
  for (const auto& part : parts_in_order) measured += part.second;
  parts_in_order.emplace_back("other", std::max(0.0, step_seconds - measured));
  const double total = std::max(step_seconds, measured);
  for (auto& part : parts_in_order) part.second = total > 0.0 ? part.second / total : 0.0;
  return parts_in_order;
}

ProgressMeter::ProgressMeter(int64_t first_global_step, int64_t total_steps, int world_size)
    : first_global_step_(first_global_step), total_steps_(total_steps), world_size_(world_size) {}

void ProgressMeter::add_step(int64_t samples, const StepTimes& times, bool timed) {
  samples_ += samples;
  ++steps_;
  exposed_sync_seconds_ += times.exposed_sync;
  if (!timed) return;
  ++timed_steps_;
  timed_sum_.data_wait += times.data_wait;
  timed_sum_.copy += times.copy;
  timed_sum_.forward += times.forward;
  timed_sum_.backward += times.backward;
  timed_sum_.exposed_sync += times.exposed_sync;
  timed_sum_.optimizer += times.optimizer;
}

ProgressReport ProgressMeter::report(int64_t global_step) {
  ProgressReport report;
  const double interval = std::max(1e-9, seconds_since(interval_started_) - excluded_seconds_);
  const double steps = static_cast<double>(std::max<int64_t>(1, steps_));
  report.steps = steps_;
  report.samples_per_second = static_cast<double>(samples_) * world_size_ / interval;
  const double per_step = seconds_since(started_) / static_cast<double>(std::max<int64_t>(
                                                        1, global_step - first_global_step_));
  report.eta_seconds =
      per_step * static_cast<double>(std::max<int64_t>(0, total_steps_ - global_step));
  report.exposed_sync_seconds_per_step = exposed_sync_seconds_ / steps;
  report.exposed_sync_share = exposed_sync_seconds_ / interval;
  report.step_seconds = interval / steps;
  if (timed_steps_ > 0) {
    const double timed = static_cast<double>(timed_steps_);
    report.parts = {timed_sum_.data_wait / timed,    timed_sum_.copy / timed,
                    timed_sum_.forward / timed,      timed_sum_.backward / timed,
                    timed_sum_.exposed_sync / timed, timed_sum_.optimizer / timed};
  }
  report.checkpoint_seconds_per_step = checkpoint_seconds_ / steps;
  samples_ = 0;
  steps_ = 0;
  exposed_sync_seconds_ = 0.0;
  timed_steps_ = 0;
  timed_sum_ = StepTimes();
  checkpoint_seconds_ = 0.0;
  excluded_seconds_ = 0.0;
  interval_started_ = Clock::now();
  return report;
}

}  // namespace medseg

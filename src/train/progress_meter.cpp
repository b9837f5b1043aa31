#include "train/progress_meter.h"

#include <algorithm>

namespace medseg {

ProgressMeter::ProgressMeter(int64_t first_global_step, int64_t total_steps, int world_size)
    : first_global_step_(first_global_step), total_steps_(total_steps), world_size_(world_size) {}

void ProgressMeter::add_step(int64_t samples, double exposed_sync_seconds) {
  samples_ += samples;
  ++steps_;
  exposed_sync_seconds_ += exposed_sync_seconds;
}

ProgressReport ProgressMeter::report(int64_t global_step) {
  ProgressReport report;
  const double interval = std::max(1e-9, seconds_since(interval_started_));
  report.steps = steps_;
  report.samples_per_second = static_cast<double>(samples_) * world_size_ / interval;
  const double per_step = seconds_since(started_) / static_cast<double>(std::max<int64_t>(
                                                        1, global_step - first_global_step_));
  report.eta_seconds =
      per_step * static_cast<double>(std::max<int64_t>(0, total_steps_ - global_step));
  report.exposed_sync_seconds_per_step =
      exposed_sync_seconds_ / static_cast<double>(std::max<int64_t>(1, steps_));
  report.exposed_sync_share = exposed_sync_seconds_ / interval;
  samples_ = 0;
  steps_ = 0;
  exposed_sync_seconds_ = 0.0;
  interval_started_ = Clock::now();
  return report;
}

}  // namespace medseg

// What a training job's progress lines say: samples per second over the last interval, the time
// left at the pace so far, and the gradient sync the backward pass did not hide.
#pragma once

#include <cstdint>

#include "util/clock.h"

namespace medseg {

struct ProgressReport {
  int64_t steps = 0;                // steps in the interval
  double samples_per_second = 0.0;  // all ranks together
  double eta_seconds = 0.0;         // to total_steps, at the pace since the meter started
  double exposed_sync_seconds_per_step = 0.0;
  double exposed_sync_share = 0.0;  // of the interval's wall time
};

class ProgressMeter {
 public:
  // `first_global_step`: where this run started (a resumed job's pace counts its own steps only).
  ProgressMeter(int64_t first_global_step, int64_t total_steps, int world_size);

  // One step of this rank: its samples and the sync time the backward pass did not hide.
  void add_step(int64_t samples, double exposed_sync_seconds);

  // The interval since the last report (or the start); starts the next one.
  ProgressReport report(int64_t global_step);

  double seconds_since_start() const { return seconds_since(started_); }

 private:
  Clock::time_point started_ = Clock::now();
  Clock::time_point interval_started_ = started_;
  int64_t first_global_step_;
  int64_t total_steps_;
  int world_size_;
  int64_t samples_ = 0;
  int64_t steps_ = 0;
  double exposed_sync_seconds_ = 0.0;
};

}  // namespace medseg

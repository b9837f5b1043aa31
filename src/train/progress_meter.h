// What a training job's progress lines say: samples per second over the last interval, the time
// left at the pace so far, the gradient sync the backward pass did not hide, and where a step's
// time goes (data wait, host-to-device copy, forward, backward, exposed sync, optimiser,
// checkpoints).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "util/clock.h"

namespace medseg {

// Where one step's time went, in seconds. On a GPU the phases are separated by device
// synchronisation only on timed steps (see Trainer), so only those are averaged.
struct StepTimes {
  double data_wait = 0.0;     // waiting for the loader's batch
  double copy = 0.0;          // host to device
  double forward = 0.0;       // forward pass and loss
  double backward = 0.0;      // backward pass, including the gradient sync it hid
  double exposed_sync = 0.0;  // gradient sync after the backward pass (not in `backward`)
  double optimizer = 0.0;     // unscaling, clipping, the optimiser step
};

struct ProgressReport {
  int64_t steps = 0;                // steps in the interval
  double samples_per_second = 0.0;  // all ranks together
  double eta_seconds = 0.0;         // to total_steps, at the pace since the meter started
  double exposed_sync_seconds_per_step = 0.0;
  double exposed_sync_share = 0.0;           // of the interval's wall time
  double step_seconds = 0.0;                 // the interval's wall time per step
  StepTimes parts;                           // mean over the interval's timed steps
  double checkpoint_seconds_per_step = 0.0;  // checkpoints written in the interval, per step

  // The step's parts as shares of step_seconds, in a fixed order: data_wait, copy, forward,
  // backward, sync, optimizer, checkpoint, other (the rest: logging, the stop check, ...).
  std::vector<std::pair<std::string, double>> shares() const;
};

class ProgressMeter {
 public:
  // `first_global_step`: where this run started (a resumed job's pace counts its own steps only).
  ProgressMeter(int64_t first_global_step, int64_t total_steps, int world_size);

  // One step of this rank: its samples and where its time went (`timed`: its phases were
  // measured exactly; the exposed sync counts on every step).
  void add_step(int64_t samples, const StepTimes& times, bool timed);
  // A checkpoint written during the interval.
  void add_checkpoint(double seconds) { checkpoint_seconds_ += seconds; }
  // Time spent on something other than steps (validation, epoch-end checkpoints): not part of
  // the interval's steps or samples/s (the time left still counts it).
  void exclude(double seconds) { excluded_seconds_ += seconds; }

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
  int64_t timed_steps_ = 0;
  StepTimes timed_sum_;
  double checkpoint_seconds_ = 0.0;
  double excluded_seconds_ = 0.0;
};

}  // namespace medseg

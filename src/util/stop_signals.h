// SIGTERM and SIGINT as a stop request: while a StopSignals is alive, either signal sets a flag
// that long-running loops poll at step boundaries (SageMaker sends SIGTERM on StopTrainingJob and
// at MaxRuntime, then SIGKILL 120 s later). The previous handlers come back on destruction.
// One instance at a time per process.
#pragma once

#include <atomic>
#include <csignal>

namespace medseg {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  const std::atomic<bool>* flag() const;
  // The signal that arrived first (0 = none).
  int signal_number() const;
};

}  // namespace medseg

// SIGTERM and SIGINT as a stop request: while a StopSignals is alive, either signal sets a flag
// that long-running loops poll at step boundaries (SageMaker sends SIGTERM on StopTrainingJob and
// at MaxRuntime, then SIGKILL 120 s later). The previous handlers come back on destruction.
// One instance at a time per process.
#pragma once

#include <atomic>
#include <csignal>
#include <stdexcept>

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

// Whether the live StopSignals has seen SIGTERM or SIGINT (false while none is alive), for long
// work deep inside a job that is not handed the flag: decoding cases, building the record cache,
// validation. `stop_flag()` is the same as a pointer (null while none is alive).
bool stop_requested();
const std::atomic<bool>* stop_flag();

// Thrown by a long phase that gives up at a stop request; what() says what was interrupted. It is
// not an error: the commands end with exit 0 after keeping what is safe (a checkpoint, whole
// shards).
class StopRequested : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace medseg

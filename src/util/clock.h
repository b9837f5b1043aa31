// Wall-clock intervals for logs and benchmarks (monotonic).
#pragma once

#include <chrono>

namespace medseg {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace medseg

// Rank-aware logging, the one process-wide logger (spdlog's default logger).
//
// Log lines go to stderr with a time stamp and, in multi-process jobs, the rank. Metric lines for
// SageMaker's MetricDefinitions regexes go to stdout as `name=value`, one per line, flushed, never
// with '\r', from the first worker of every host (SageMaker reads metrics from each instance's
// log). Rank 0 logs progress; other ranks log warnings and errors only.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace medseg {

struct LogOptions {
  std::string level = "info";  // trace, debug, info, warn, error
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank on this host: local rank 0 prints the metric lines
};

// (Re)configures the default logger. Safe to call more than once (e.g. once ranks are known).
void init_logging(const LogOptions& options);

// Prints `name=value` on stdout (format_metric_value) and flushes; only local rank 0 prints. The
// values must already be the job's (reduced over the workers). `name` must be in the metric
// catalogue (sagemaker/metrics.h).
void log_metric(const std::string& name, double value);

}  // namespace medseg

// The training settings whose 0 means "automatic", resolved in one place. The schema's help
// texts (config/config_schema.cpp, and from them the README's table) state these same rules.
#pragma once

#include <cstdint>

#include "config/config.h"

namespace medseg {

struct AutomaticSettings {
  int compute_threads = 1;      // train.num_threads
  int loader_threads = 1;       // data.num_workers
  int64_t steps_per_epoch = 1;  // train.steps_per_epoch
};

struct HostShape {
  int cores = 1;                 // this host's cores
  int local_workers = 1;         // training processes on this host
  bool cuda = false;             // the job computes on GPUs
  int64_t training_cases = 0;    // cases in the training set (all ranks)
  int world_size = 1;            // processes in the job
};

//   train.num_threads 0   -> the host's cores divided among its workers (at least 1)
//   data.num_workers 0    -> 4 per worker on a GPU; 1 on the CPU, whose cores compute
//   train.steps_per_epoch 0 -> training cases / (batch size x world size), at least 1
AutomaticSettings resolve_automatic_settings(const Config& config, const HostShape& host);

}  // namespace medseg

#include "train/automatic_settings.h"

#include <algorithm>

namespace medseg {

AutomaticSettings resolve_automatic_settings(const Config& config, const HostShape& host) {
  AutomaticSettings settings;
  settings.compute_threads = config.train.num_threads > 0
                                 ? config.train.num_threads
                                 : std::max(1, host.cores / std::max(1, host.local_workers));
  settings.loader_threads =
      config.data.num_workers > 0 ? config.data.num_workers : (host.cuda ? 4 : 1);
  const int64_t global_batch =
      static_cast<int64_t>(config.train.batch_size) * std::max(1, host.world_size);
  settings.steps_per_epoch = config.train.steps_per_epoch > 0
                                 ? config.train.steps_per_epoch
                                 : std::max<int64_t>(1, host.training_cases / global_batch);
  return settings;
}

}  // namespace medseg

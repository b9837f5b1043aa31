#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "app/commands.h"
#include "config/config_loader.h"
#include "data/preprocess_job.h"
#include "sagemaker/job_environment.h"

namespace medseg {

int run_preprocess_command(const std::string& ml_root, const PreprocessCommandOptions& options) {
  // Configuration: defaults, the shipped YAML, then --set (Processing jobs pass arguments).
  JobEnvironment environment;
  environment.paths = MlPaths{ml_root};
  ConfigRequest request;
  request.shipped_config = find_shipped_config();
  request.overrides = options.overrides;
  const ResolvedConfig resolved = resolve_config(environment, request);
  const Config& config = resolved.config;

  // Processing jobs describe the cluster in <ml-root>/config/resourceconfig.json.
  const ResourceConfig resources = read_resource_config(ml_root + "/config/resourceconfig.json");

  PreprocessJobOptions job;
  job.input_dir =
      options.input_dir.empty() ? ml_root + "/processing/input/data" : options.input_dir;
  job.output_dir =
      options.output_dir.empty() ? ml_root + "/processing/output/data" : options.output_dir;
  job.layout = config.data.layout;
  job.format = options.format.empty() ? config.preprocess.format : options.format;
  job.transforms.pixdim = {config.data.pixdim[0], config.data.pixdim[1], config.data.pixdim[2]};
  job.transforms.label_scheme = parse_label_scheme(config.data.label_scheme);
  job.transforms.expected_channels = config.model.in_channels;
  job.transforms.normalize = config.data.normalize == "volume";
  job.read.max_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  job.image_dtype = parse_image_dtype(config.preprocess.image_dtype, "preprocess.image_dtype");
  job.shard_bytes = static_cast<int64_t>(config.preprocess.shard_mb) << 20;
  job.host_name = resources.current_host;
  if (!options.no_split) {
    job.host_rank = resources.host_rank();
    job.host_count = static_cast<int>(resources.hosts.size());
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  job.threads = options.threads > 0 ? options.threads : cores;
  run_preprocess_job(job);
  return 0;
}

}  // namespace medseg

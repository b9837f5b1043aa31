#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "app/commands.h"
#include "config/config_loader.h"
#include "data/case_store.h"
#include "data/preprocess_job.h"
#include "sagemaker/job_environment.h"
#include "sagemaker/processing_job.h"
#include "util/stop_signals.h"

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

  // A Processing job describes its inputs, outputs and cluster under <ml-root>/config.
  const ProcessingJobConfig processing = read_processing_job_config(ml_root);
  const std::string config_path = ml_root + "/config/processingjobconfig.json";
  const ProcessingInput* input = data_input(processing, config_path);
  const ProcessingOutput* output = data_output(processing, config_path);
  const ResourceConfig& resources = processing.resources;

  PreprocessJobOptions job;
  job.input_dir = !options.input_dir.empty() ? options.input_dir
                  : input != nullptr         ? input->local_path
                                             : ml_root + "/processing/input/data";
  job.output_dir = !options.output_dir.empty() ? options.output_dir
                   : output != nullptr         ? output->local_path
                                               : ml_root + "/processing/output/data";
  job.layout = config.data.layout;
  job.format = options.format.empty() ? config.preprocess.format : options.format;
  job.transforms = static_transform_options_from_config(config, config.data.normalize == "volume");
  job.read.max_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  job.image_dtype = parse_image_dtype(config.preprocess.image_dtype, "preprocess.image_dtype");
  job.shard_bytes = static_cast<int64_t>(config.preprocess.shard_mb) << 20;
  job.host_name = resources.current_host;
  // Each host preprocesses its share of the cases (index % hosts), unless SageMaker already gave
  // it only its share (ShardedByS3Key) or --no-split asks for every case.
  const bool sharded_by_sagemaker =
      input != nullptr && options.input_dir.empty() && input->distribution == "ShardedByS3Key";
  if (options.no_split || sharded_by_sagemaker) {
    spdlog::info("preprocessing every case in {} ({})", job.input_dir,
                 options.no_split ? "--no-split"
                                  : "input '" + input->name +
                                        "' is ShardedByS3Key: SageMaker gave this host its share");
  } else {
    job.host_rank = resources.host_rank();
    job.host_count = static_cast<int>(resources.hosts.size());
    if (job.host_count > 1) {
      spdlog::info("preprocessing this host's share of {}: cases i with i % {} == {}",
                   job.input_dir, job.host_count, job.host_rank);
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  job.threads = options.threads > 0 ? options.threads : cores;
  StopSignals signals;  // SIGTERM: finish the cases in hand, close the shard, exit 0
  job.stop = signals.flag();
  run_preprocess_job(job);
  return 0;
}

}  // namespace medseg

#include <spdlog/spdlog.h>
#include <torch/cuda.h>

#include <filesystem>
#include <iostream>

#include "app/commands.h"
#include "config/config_loader.h"
#include "dist/dist_env.h"
#include "dist/launcher.h"
#include "sagemaker/job_environment.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/stop_signals.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

void log_job(const JobEnvironment& environment, const ResolvedConfig& resolved) {
  spdlog::info("medseg {} train, ML root {}{}", MEDSEG_VERSION, environment.paths.root,
               environment.job_name.empty() ? "" : ", job " + environment.job_name);
  const ResourceConfig& resources = environment.resources;
  spdlog::info("host {} ({} of {}), network interface {}{}", resources.current_host,
               resources.host_rank() + 1, resources.hosts.size(), resources.network_interface_name,
               resources.instance_type.empty() ? "" : ", instance " + resources.instance_type);
  for (const auto& [name, channel] : environment.channels) {
    spdlog::info("channel {}: {} mode, {}, records {}", name, channel.input_mode,
                 channel.distribution, channel.record_wrapper);
  }
  for (const std::string& layer : resolved.layers) spdlog::info("config layer: {}", layer);
  spdlog::info("resolved configuration:\n{}", config_to_yaml(resolved));
}

}  // namespace

int run_train_command(const std::string& ml_root, const TrainCommandOptions& options) {
  const JobEnvironment environment = load_job_environment(MlPaths{ml_root});
  ConfigRequest request;
  request.shipped_config = find_shipped_config();
  request.overrides = options.overrides;
  const ResolvedConfig resolved = resolve_config(environment, request);
  if (options.print_config) {
    std::cout << config_to_yaml(resolved) << std::flush;
    return 0;
  }
  init_logging(LogOptions{resolved.config.train.log_level, 0, 1});
  if (request.shipped_config.empty()) {
    spdlog::warn(
        "the shipped configuration brats_unet.yaml was not found; using built-in "
        "defaults (set MEDSEG_DEFAULT_CONFIG to its path)");
  }
  if (!is_launched_worker()) log_job(environment, resolved);  // the launcher speaks for its workers

  const Config& config = resolved.config;
  const std::optional<ResourceConfig> world =
      training_world(environment.resources, config.dist.instance_group);
  if (!world) {
    spdlog::info(
        "host {} (instance group {}) is not in dist.instance_group {}: it has nothing to train "
        "and exits",
        environment.resources.current_host, environment.resources.group_name,
        config.dist.instance_group);
    return 0;
  }
  const ResourceConfig& resources = *world;
  for (const std::string& variable :
       apply_network_environment(resources, resources.instance_type)) {
    spdlog::info("environment: {}", variable);
  }
  const int nproc = resolve_nproc_per_node(config.dist.nproc_per_node,
                                           static_cast<int>(torch::cuda::device_count()));
  const bool torchrun = process_env("RANK").has_value() || process_env("WORLD_SIZE").has_value();
  StopSignals signals;
  if (!torchrun && !is_launched_worker() && nproc > 1) {
    // This process is the launcher: one worker per GPU (or per --set nproc_per_node), supervised.
    LaunchOptions launch;
    launch.heartbeat_timeout_seconds = config.dist.timeout_seconds;
    launch.first_rank = resources.host_rank() * nproc;
    spdlog::info("launching {} workers on {}", nproc, resources.current_host);
    const LaunchResult result = run_workers(current_command_line(), nproc, launch);
    if (result.failure.empty()) return 0;
    // A worker that failed cleanly wrote the failure file with its own, more specific reason.
    if (!fs::exists(environment.paths.failure_file())) throw PlatformError(result.failure);
    spdlog::error("{}", result.failure);
    return result.exit_code;
  }
  const DistEnv dist = resolve_dist_env(resources, nproc, config.dist.master_port);
  if (dist.is_distributed()) {
    init_logging(LogOptions{config.train.log_level, dist.rank, dist.world_size, dist.local_rank});
  }
  Trainer trainer(resolved, environment, signals.flag(), dist);
  TrainSummary summary;
  try {
    summary = trainer.run();
  } catch (const StopRequested& stopped) {
    // Before training began (a stop during validation or at a step is handled by the trainer,
    // which writes a checkpoint and the model).
    spdlog::warn("stop requested {}: exiting before training; checkpoints are as they were",
                 stopped.what());
    return 0;
  }
  if (summary.stopped_early) {
    spdlog::warn("stopped by signal after {} steps; the model so far was written",
                 summary.global_steps);
  }
  return 0;
}

}  // namespace medseg

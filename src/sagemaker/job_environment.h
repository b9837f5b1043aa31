// Everything SageMaker tells the container about the job, read from <ml-root>/input/config:
// the channels (inputdataconfig.json), the cluster (resourceconfig.json), the checkpoint folder
// (checkpointconfig.json) and the hyperparameters. Optional files and keys may be missing
// (SageMaker local mode writes only {"TrainingInputMode": "File"} per channel); values that are
// present but invalid are ClientErrors naming the file, the key and the expected values.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "sagemaker/hyperparameters.h"
#include "sagemaker/ml_paths.h"

namespace medseg {

struct ChannelConfig {
  std::string name;
  std::string input_mode = "File";               // File, Pipe or FastFile
  std::string distribution = "FullyReplicated";  // FullyReplicated or ShardedByS3Key
  std::string record_wrapper = "None";           // None or RecordIO
  std::string content_type;                      // optional
};

struct InstanceGroup {
  std::string name;           // instance_group_name
  std::string instance_type;  // instance_type
  std::vector<std::string> hosts;
};

struct ResourceConfig {
  std::string current_host = "algo-1";
  std::vector<std::string> hosts = {"algo-1"};  // rank order, exactly as given
  std::string network_interface_name = "eth0";
  std::string instance_type;                   // current_instance_type, may be empty
  std::string group_name;                      // current_group_name, may be empty
  bool from_file = false;                      // false: single-host default
  std::vector<InstanceGroup> instance_groups;  // heterogeneous clusters; may be empty

  // Index of current_host in hosts (the node rank).
  int host_rank() const;
};

struct JobEnvironment {
  MlPaths paths;
  std::string job_name;  // TRAINING_JOB_NAME, may be empty locally
  std::vector<Hyperparameter> hyperparameters;
  std::map<std::string, ChannelConfig> channels;
  ResourceConfig resources;
  std::string checkpoint_dir;   // LocalPath of checkpointconfig.json, else empty
  std::string tensorboard_dir;  // LocalPath of tensorboardoutputconfig.json, else empty

  // The channel as inputdataconfig.json describes it; a channel it does not list (a local run,
  // a folder put there by hand) is a File-mode, FullyReplicated one.
  ChannelConfig channel(const std::string& name) const;
};

// The hosts that train together. One instance group (or none listed): all hosts. Several
// (a heterogeneous cluster): the group named `instance_group` (dist.instance_group), with hosts in
// that group's order; nullopt when the current host is not in it (it has nothing to do). Several
// groups and no name, or a name that is not a group, is a ClientError listing the groups.
std::optional<ResourceConfig> training_world(const ResourceConfig& resources,
                                             const std::string& instance_group);

std::map<std::string, ChannelConfig> read_input_data_config(const std::string& path);
ResourceConfig read_resource_config(const std::string& path);
// LocalPath of checkpointconfig.json or tensorboardoutputconfig.json, or "" when the file is
// missing.
std::string read_local_path(const std::string& path);

JobEnvironment load_job_environment(const MlPaths& paths);

}  // namespace medseg

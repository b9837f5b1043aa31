#include "sagemaker/job_environment.h"

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace {

using nlohmann::json;

std::string optional_string(const json& object, const std::string& key, const std::string& path,
                            const std::string& fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) {
    throw ClientError(path + ": '" + key + "' must be a string, got " + it->dump());
  }
  return it->get<std::string>();
}

std::string optional_choice(const json& object, const std::string& key, const std::string& path,
                            const std::string& fallback, const std::vector<std::string>& choices,
                            const std::string& context) {
  const std::string value = optional_string(object, key, path, fallback);
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    throw ClientError(path + ": " + context + key + " = '" + value + "': expected one of " +
                      join(choices, ", "));
  }
  return value;
}

}  // namespace

int ResourceConfig::host_rank() const {
  const auto it = std::find(hosts.begin(), hosts.end(), current_host);
  return it == hosts.end() ? -1 : static_cast<int>(it - hosts.begin());
}

std::optional<ResourceConfig> training_world(const ResourceConfig& resources,
                                             const std::string& instance_group) {
  if (resources.instance_groups.size() <= 1 && instance_group.empty()) return resources;
  std::vector<std::string> listed;
  for (const InstanceGroup& group : resources.instance_groups) {
    if (group.name == instance_group) {
      if (std::find(group.hosts.begin(), group.hosts.end(), resources.current_host) ==
          group.hosts.end()) {
        return std::nullopt;
      }
      ResourceConfig world = resources;
      world.hosts = group.hosts;
      world.instance_groups = {group};
      return world;
    }
    listed.push_back(group.name + " (" + group.instance_type + ", " +
                     std::to_string(group.hosts.size()) + " hosts)");
  }
  if (instance_group.empty()) {
    throw ClientError("resourceconfig.json: this is a heterogeneous cluster with instance groups " +
                      join(listed, ", ") +
                      "; set dist.instance_group (hyperparameter instance_group) to the group "
                      "that trains");
  }
  throw ClientError("dist.instance_group = '" + instance_group +
                    "' is not an instance group of this job; expected one of " +
                    (listed.empty() ? std::string("(none: the job has no instance groups)")
                                    : join(listed, ", ")));
}

std::map<std::string, ChannelConfig> read_input_data_config(const std::string& path) {
  const json document = read_json_file(path, /*required=*/false);
  std::map<std::string, ChannelConfig> channels;
  if (document.is_null()) return channels;
  if (!document.is_object()) {
    throw ClientError(path + ": expected a JSON object of channel names, got " +
                      std::string(document.type_name()));
  }
  for (const auto& [name, entry] : document.items()) {
    if (!entry.is_object()) {
      throw ClientError(path + ": channel '" + name + "' must be an object, got " + entry.dump());
    }
    const std::string context = "channel '" + name + "': ";
    ChannelConfig channel;
    channel.name = name;
    channel.input_mode = optional_choice(entry, "TrainingInputMode", path, "File",
                                         {"File", "Pipe", "FastFile"}, context);
    channel.distribution = optional_choice(entry, "S3DistributionType", path, "FullyReplicated",
                                           {"FullyReplicated", "ShardedByS3Key"}, context);
    channel.record_wrapper =
        optional_choice(entry, "RecordWrapperType", path, "None", {"None", "RecordIO"}, context);
    channel.content_type = optional_string(entry, "ContentType", path, "");
    channels[name] = channel;
  }
  return channels;
}

ResourceConfig read_resource_config(const std::string& path) {
  const json document = read_json_file(path, /*required=*/false);
  ResourceConfig resources;
  if (document.is_null()) return resources;
  if (!document.is_object()) {
    throw ClientError(path + ": expected a JSON object, got " + std::string(document.type_name()));
  }
  resources.from_file = true;
  const auto hosts = document.find("hosts");
  if (hosts == document.end()) throw ClientError(path + ": missing 'hosts' (a list of host names)");
  if (!hosts->is_array() || hosts->empty()) {
    throw ClientError(path + ": 'hosts' must be a non-empty list of host names, got " +
                      hosts->dump());
  }
  resources.hosts.clear();
  for (const json& host : *hosts) {
    if (!host.is_string() || host.get<std::string>().empty()) {
      throw ClientError(path + ": 'hosts' must hold non-empty strings, got " + host.dump());
    }
    const std::string name = host.get<std::string>();
    if (std::count(resources.hosts.begin(), resources.hosts.end(), name) != 0) {
      throw ClientError(path + ": host '" + name + "' is listed twice in 'hosts'");
    }
    resources.hosts.push_back(name);
  }
  if (document.find("current_host") == document.end()) {
    throw ClientError(path + ": missing 'current_host'");
  }
  resources.current_host = optional_string(document, "current_host", path, "");
  if (resources.host_rank() < 0) {
    throw ClientError(path + ": current_host '" + resources.current_host + "' is not in hosts [" +
                      join(resources.hosts, ", ") + "]");
  }
  resources.network_interface_name =
      optional_string(document, "network_interface_name", path, "eth0");
  resources.instance_type = optional_string(document, "current_instance_type", path, "");
  resources.group_name = optional_string(document, "current_group_name", path, "");
  const auto groups = document.find("instance_groups");
  if (groups != document.end() && !groups->is_null()) {
    if (!groups->is_array()) {
      throw ClientError(path + ": 'instance_groups' must be a list, got " + groups->dump());
    }
    for (const json& entry : *groups) {
      InstanceGroup group;
      group.name = optional_string(entry, "instance_group_name", path, "");
      group.instance_type = optional_string(entry, "instance_type", path, "");
      const auto members = entry.find("hosts");
      if (group.name.empty() || members == entry.end() || !members->is_array()) {
        throw ClientError(path +
                          ": each of 'instance_groups' needs 'instance_group_name' and a "
                          "list 'hosts', got " +
                          entry.dump());
      }
      for (const json& host : *members) {
        if (!host.is_string() || std::find(resources.hosts.begin(), resources.hosts.end(),
                                           host.get<std::string>()) == resources.hosts.end()) {
          throw ClientError(path + ": instance group '" + group.name + "' lists host " +
                            host.dump() + ", which is not in 'hosts'");
        }
        group.hosts.push_back(host.get<std::string>());
      }
      resources.instance_groups.push_back(group);
    }
  }
  return resources;
}

std::string read_local_path(const std::string& path) {
  const json document = read_json_file(path, /*required=*/false);
  if (document.is_null()) return "";
  if (!document.is_object()) {
    throw ClientError(path + ": expected a JSON object, got " + std::string(document.type_name()));
  }
  return optional_string(document, "LocalPath", path, "");
}

ChannelConfig JobEnvironment::channel(const std::string& name) const {
  const auto found = channels.find(name);
  if (found != channels.end()) return found->second;
  ChannelConfig defaults;
  defaults.name = name;
  return defaults;
}

JobEnvironment load_job_environment(const MlPaths& paths) {
  JobEnvironment environment;
  environment.paths = paths;
  const char* job_name = std::getenv("TRAINING_JOB_NAME");
  environment.job_name = job_name ? job_name : "";
  environment.hyperparameters = read_hyperparameters(paths.hyperparameters_file());
  environment.channels = read_input_data_config(paths.input_data_config_file());
  environment.resources = read_resource_config(paths.resource_config_file());
  environment.checkpoint_dir = read_local_path(paths.checkpoint_config_file());
  environment.tensorboard_dir = read_local_path(paths.tensorboard_config_file());
  return environment;
}

}  // namespace medseg

#include "dist/dist_env.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>

#include "util/error.h"
#include "util/strings.h"

namespace medseg {
namespace {

constexpr const char* kTorchrunHint =
    " (torchrun sets MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK and "
    "LOCAL_WORLD_SIZE; set all of them or none)";

// A whole decimal integer in [min_value, max_value], or ClientError naming the variable.
int parse_int_variable(const std::string& name, const std::string& text, long min_value,
                       long max_value, const std::string& expectation) {
  const std::string value = trim(text);
  errno = 0;
  char* end = nullptr;
  const long parsed = value.empty() ? 0 : std::strtol(value.c_str(), &end, 10);
  if (value.empty() || errno != 0 || end == nullptr || *end != '\0' || parsed < min_value ||
      parsed > max_value) {
    throw ClientError("environment variable " + name + "='" + text + "' is invalid: expected " +
                      expectation);
  }
  return static_cast<int>(parsed);
}

std::string required_variable(const EnvLookup& env, const std::string& name) {
  const auto value = env(name);
  if (!value) throw ClientError("environment variable " + name + " is not set" + kTorchrunHint);
  return *value;
}

DistEnv resolve_from_torchrun(const EnvLookup& env) {
  DistEnv dist;
  dist.from_torchrun = true;
  dist.world_size = parse_int_variable("WORLD_SIZE", required_variable(env, "WORLD_SIZE"), 1,
                                       INT_MAX, "an integer >= 1");
  dist.rank = parse_int_variable(
      "RANK", required_variable(env, "RANK"), 0, dist.world_size - 1,
      "an integer in [0, WORLD_SIZE-1 = " + std::to_string(dist.world_size - 1) + "]");
  dist.local_world_size = parse_int_variable(
      "LOCAL_WORLD_SIZE", required_variable(env, "LOCAL_WORLD_SIZE"), 1, dist.world_size,
      "an integer in [1, WORLD_SIZE = " + std::to_string(dist.world_size) + "]");
  dist.local_rank = parse_int_variable(
      "LOCAL_RANK", required_variable(env, "LOCAL_RANK"), 0, dist.local_world_size - 1,
      "an integer in [0, LOCAL_WORLD_SIZE-1 = " + std::to_string(dist.local_world_size - 1) + "]");
  dist.master_addr = trim(required_variable(env, "MASTER_ADDR"));
  if (dist.master_addr.empty()) {
    throw ClientError(
        "environment variable MASTER_ADDR is empty: expected the host name or "
        "address of rank 0");
  }
  dist.master_port = parse_int_variable("MASTER_PORT", required_variable(env, "MASTER_PORT"), 1,
                                        65535, "a TCP port in [1, 65535]");
  dist.num_nodes = (dist.world_size + dist.local_world_size - 1) / dist.local_world_size;
  if (const auto group_rank = env("GROUP_RANK")) {
    dist.node_rank = parse_int_variable("GROUP_RANK", *group_rank, 0, dist.world_size - 1,
                                        "an integer in [0, WORLD_SIZE-1]");
  } else {
    dist.node_rank = dist.rank / dist.local_world_size;
  }
  return dist;
}

}  // namespace

std::optional<std::string> process_env(const std::string& name) {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

int resolve_nproc_per_node(int configured, int gpu_count) {
  if (configured > 0) return configured;
  return std::max(1, gpu_count);
}

DistEnv resolve_dist_env(const ResourceConfig& resources, int nproc_per_node, int master_port,
                         const EnvLookup& env) {
  if (env("RANK") || env("WORLD_SIZE")) return resolve_from_torchrun(env);

  if (nproc_per_node < 1) {
    throw InternalError("resolve_dist_env: nproc_per_node " + std::to_string(nproc_per_node) +
                        " was not resolved (see resolve_nproc_per_node)");
  }
  if (master_port < 1 || master_port > 65535) {
    throw ClientError("dist.master_port " + std::to_string(master_port) +
                      " is invalid: expected a TCP port in [1, 65535]");
  }
  if (resources.hosts.empty()) {
    throw ClientError("resourceconfig.json: hosts is empty: expected at least one host name");
  }
  const int node_rank = resources.host_rank();
  if (node_rank < 0) {
    throw ClientError("resourceconfig.json: current_host '" + resources.current_host +
                      "' is not in hosts [" + join(resources.hosts, ", ") + "]");
  }

  DistEnv dist;
  dist.local_world_size = nproc_per_node;
  if (const auto local_rank = env(kLocalRankVariable)) {
    dist.local_rank = parse_int_variable(
        kLocalRankVariable, *local_rank, 0, nproc_per_node - 1,
        "an integer in [0, nproc_per_node-1 = " + std::to_string(nproc_per_node - 1) + "]");
  }
  dist.num_nodes = static_cast<int>(resources.hosts.size());
  dist.node_rank = node_rank;
  dist.world_size = dist.num_nodes * nproc_per_node;
  dist.rank = node_rank * nproc_per_node + dist.local_rank;
  // One host: everything is local, and "algo-1" need not resolve (local runs, no resourceconfig).
  dist.master_addr = dist.num_nodes == 1 ? "127.0.0.1" : resources.hosts.front();
  dist.master_port = master_port;
  return dist;
}

std::string resolve_host(const std::string& host, int retry_seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(retry_seconds);
  std::string last_error;
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* results = nullptr;
    const int status = ::getaddrinfo(host.c_str(), nullptr, &hints, &results);
    if (status == 0) {
      const addrinfo* chosen = results;
      for (const addrinfo* entry = results; entry != nullptr; entry = entry->ai_next) {
        if (entry->ai_family == AF_INET) {
          chosen = entry;
          break;
        }
      }
      char text[INET6_ADDRSTRLEN] = {0};
      const void* address =
          chosen->ai_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(chosen->ai_addr)->sin_addr)
              : static_cast<const void*>(
                    &reinterpret_cast<sockaddr_in6*>(chosen->ai_addr)->sin6_addr);
      const bool converted = ::inet_ntop(chosen->ai_family, address, text, sizeof(text)) != nullptr;
      ::freeaddrinfo(results);
      if (converted) return text;
      last_error = "inet_ntop failed";
    } else {
      last_error = status == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(status);
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  throw PlatformError("cannot resolve the master host '" + host + "' after retrying for " +
                      std::to_string(retry_seconds) + " s (" + last_error +
                      "); check resourceconfig.json's hosts / MASTER_ADDR, or raise "
                      "dist.dns_retry_seconds");
}

bool has_efa(const std::string& instance_type) {
  std::string type = trim(instance_type);
  if (starts_with(type, "ml.")) type = type.substr(3);
  const std::string family = type.substr(0, type.find('.'));
  static const char* const kEfaFamilies[] = {"p3dn", "p4d",     "p4de", "p5",    "p5e",
                                             "p5en", "p6-b200", "trn1", "trn1n", "trn2"};
  return std::find(std::begin(kEfaFamilies), std::end(kEfaFamilies), family) !=
         std::end(kEfaFamilies);
}

std::vector<std::string> apply_network_environment(const ResourceConfig& resources,
                                                   const std::string& instance_type) {
  std::vector<std::string> applied;
  auto set_default = [&applied](const char* name, const std::string& value) {
    if (value.empty() || std::getenv(name) != nullptr) return;
    if (::setenv(name, value.c_str(), /*overwrite=*/0) != 0)
      throw_system_error(std::string("setenv ") + name);
    applied.push_back(std::string(name) + "=" + value);
  };
  const std::string& interface_name = resources.network_interface_name;
  if (interface_name.empty() || ::if_nametoindex(interface_name.c_str()) != 0) {
    set_default("NCCL_SOCKET_IFNAME", interface_name);
  } else if (std::getenv("NCCL_SOCKET_IFNAME") == nullptr) {
    // SageMaker local mode names `ethwe`, which its Docker network does not have.
    spdlog::warn(
        "resourceconfig.json names network interface {}, which this host does not have (SageMaker "
        "local mode names ethwe); NCCL_SOCKET_IFNAME is left to NCCL",
        interface_name);
  }
  if (has_efa(instance_type)) {
    set_default("FI_PROVIDER", "efa");
    set_default("NCCL_PROTO", "simple");
    std::string type = trim(instance_type);
    if (starts_with(type, "ml.")) type = type.substr(3);
    if (starts_with(type, "p4d.") || starts_with(type, "p4de.")) {
      set_default("FI_EFA_USE_DEVICE_RDMA", "1");
      set_default("RDMAV_FORK_SAFE", "1");
    }
  }
  return applied;
}

}  // namespace medseg

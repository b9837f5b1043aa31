// Who this process is in a distributed job: its rank, the world, and where the rendezvous
// (c10d TCPStore) lives. Two sources, in this order:
//
//  1. torchrun-style variables (Kubernetes, Slurm, torchrun): MASTER_ADDR, MASTER_PORT, RANK,
//     WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE (GROUP_RANK optional). Used when RANK or
//     WORLD_SIZE is set; then all six are required and validated.
//  2. SageMaker: resourceconfig.json's hosts (rank order exactly as given, never sorted),
//     current_host, nproc_per_node, and this worker's local rank, which `medseg train`'s launcher
//     passes in MEDSEG_LOCAL_RANK (absent = 0). world = hosts x nproc, master = hosts[0],
//     rank = node_rank * nproc + local_rank. On a single host the master is 127.0.0.1, so local
//     runs without resourceconfig.json (host "algo-1" does not resolve there) work too.
//
// Errors: ClientError naming the variable or key and the bad value; PlatformError when the master
// host name does not resolve within dns_retry_seconds.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sagemaker/job_environment.h"

namespace medseg {

struct DistEnv {
  int rank = 0;                           // global rank, 0 .. world_size-1
  int world_size = 1;                     // processes in the job
  int local_rank = 0;                     // rank on this host; the GPU index
  int local_world_size = 1;               // processes on this host
  int node_rank = 0;                      // index of this host
  int num_nodes = 1;                      // hosts in the job
  std::string master_addr = "127.0.0.1";  // host of rank 0 (name or address; see resolve_host)
  int master_port = 29500;                // TCPStore port on the master
  bool from_torchrun = false;             // true: source 1 above (no own launcher needed)

  bool is_distributed() const { return world_size > 1; }
  bool is_main() const { return rank == 0; }
};

// Reads an environment variable; nullopt when unset. Tests substitute their own table.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
std::optional<std::string> process_env(const std::string& name);

// The environment variable through which the launcher tells a worker its local rank.
inline constexpr const char* kLocalRankVariable = "MEDSEG_LOCAL_RANK";

// Resolves the process's place in the job (see the header comment). nproc_per_node >= 1 (already
// resolved, see resolve_nproc_per_node). Pure apart from `env`: no DNS lookups here.
DistEnv resolve_dist_env(const ResourceConfig& resources, int nproc_per_node, int master_port,
                         const EnvLookup& env = process_env);

// dist.nproc_per_node, with 0 meaning one per GPU (at least 1, i.e. 1 on CPU).
int resolve_nproc_per_node(int configured, int gpu_count);

// Resolves `host` to a numeric address (IPv4 preferred) with getaddrinfo, retrying every second
// for up to retry_seconds: SageMaker's algo-N names can take minutes to appear in DNS. A numeric
// address is returned unchanged. Throws PlatformError naming the host and the last resolver error.
std::string resolve_host(const std::string& host, int retry_seconds);

// Sets the NCCL / libfabric variables SageMaker's network needs, each only when the user has not
// already set it: NCCL_SOCKET_IFNAME=<network_interface_name> when this host has that interface
// (SageMaker local mode names `ethwe`, which its containers lack: then NCCL chooses); on EFA instance types (see
// has_efa) FI_PROVIDER=efa and NCCL_PROTO=simple; on p4d/p4de also FI_EFA_USE_DEVICE_RDMA=1 and
// RDMAV_FORK_SAFE=1. Call before any process group or thread is created (setenv is not
// thread-safe). Returns the "NAME=value" entries it set, for the start-up log.
std::vector<std::string> apply_network_environment(const ResourceConfig& resources,
                                                   const std::string& instance_type);

// True for SageMaker/EC2 instance types ("ml.p4d.24xlarge" or "p4d.24xlarge") whose training
// instances come with an Elastic Fabric Adapter: p3dn, p4d, p4de, p5, p5e, p5en, p6-b200, trn1,
// trn1n, trn2. (EFA-capable g4dn/g5/g6 sizes are left out: NCCL's socket transport is the safe
// default there.)
bool has_efa(const std::string& instance_type);

}  // namespace medseg

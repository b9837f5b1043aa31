// The collectives data-parallel training needs, over c10d: rendezvous through a TCPStore (rank 0
// serves it at master_addr:master_port), then a concrete ProcessGroupGloo (CPU) or
// ProcessGroupNCCL (CUDA; compiled only with USE_C10D_NCCL).
//
// Contract:
//  - Every rank calls the same methods in the same order with tensors of the same shapes and
//    dtypes (the usual collective rule); otherwise ranks deadlock or fail.
//  - A collective or the rendezvous that waits longer than timeout_seconds (a dead or hung peer)
//    throws PlatformError naming the operation and the rank; it never hangs forever. (With NCCL,
//    LibTorch's watchdog enforces the timeout and aborts the process; the launcher reports it.)
//  - World size 1 creates no store and no process group; every method is then a no-op.
//  - Not thread-safe: call from one thread (the training loop).
//
// Two ways to average gradients: allreduce_mean_gradients, after backward (all buckets launched
// before the first is waited on), and OverlappedGradientSync below, which training uses: each
// bucket's all-reduce starts during the backward pass, as soon as its gradients exist.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dist/dist_env.h"

namespace medseg {

struct CollectivesOptions {
  // gloo or nccl (already resolved, see resolve_backend).
  std::string backend = "gloo";
  // A collective, or the rendezvous, waiting longer than this fails (dist.timeout_seconds).
  int timeout_seconds = 1800;
  // How long to retry resolving the master host name (dist.dns_retry_seconds).
  int dns_retry_seconds = 300;
  // Gloo on multi-host jobs: the interface to bind (resourceconfig's network_interface_name).
  // GLOO_SOCKET_IFNAME overrides it; empty = the address gethostname() resolves to. Single-host
  // jobs always use the loopback interface.
  std::string network_interface;
  // Where the tensors passed in live: CPU for Gloo, cuda:<local_rank> for NCCL. Used for the
  // metric buffer of allreduce_sum.
  c10::Device device = c10::Device(c10::kCPU);
  // Build a real process group even for a single worker (benchmarks: the cost of a collective
  // on one GPU). Otherwise world size 1 has no group and every call is a no-op.
  bool group_for_one_worker = false;
};

// dist.backend "auto" -> "nccl" when CUDA is available, else "gloo"; "nccl" or "gloo" as given.
// Throws ClientError for an unknown name, or for "nccl" when this build has no NCCL.
std::string resolve_backend(const std::string& configured, bool cuda_available);

// The collective backends this build has, with versions: "NCCL 2.28.9, Gloo" or "Gloo".
std::string available_backends();

class Collectives {
 public:
  // Joins the job: resolves the master (retrying DNS), connects to (or, on rank 0, serves) the
  // TCPStore and builds the process group. Blocks until all ranks have joined or the timeout
  // passes (PlatformError).
  Collectives(const DistEnv& env, const CollectivesOptions& options);
  ~Collectives();
  Collectives(const Collectives&) = delete;
  Collectives& operator=(const Collectives&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Overwrites `tensors` (parameters and buffers, in the same order on every rank) with rank 0's
  // values, flattened into buckets of at most bucket_bytes (one broadcast per bucket).
  void broadcast_parameters(std::vector<at::Tensor>& tensors,
                            int64_t bucket_bytes = int64_t{25} << 20);

  // Replaces each parameter's gradient by the mean over ranks. Gradients are flattened into
  // buckets of at most bucket_bytes (tensors of one dtype and device per bucket; one larger than
  // the bucket travels alone), all-reduced with SUM, divided by the world size and copied back.
  // A parameter that requires grad but has none gets a zero gradient first, so every rank sends
  // the same layout. Records the time taken (last_sync_seconds).
  void allreduce_mean_gradients(const std::vector<at::Tensor>& parameters, int64_t bucket_bytes);

  // Element-wise sum over ranks, in place (metrics: loss sums, counts, Dice numerators).
  void allreduce_sum(std::vector<double>& values);

  // Returns when every rank has called it.
  void barrier();

  // Wall-clock seconds of the last allreduce_mean_gradients (0 before the first, and with world
  // size 1). With NCCL this is host time: the collectives are enqueued on CUDA streams.
  double last_sync_seconds() const { return last_sync_seconds_; }

 private:
  friend class OverlappedGradientSync;
  struct Groups;  // the c10d store and process group; defined in collectives.cpp

  int rank_ = 0;
  int world_size_ = 1;
  CollectivesOptions options_;
  std::unique_ptr<Groups> groups_;  // null when world_size_ == 1
  double last_sync_seconds_ = 0.0;
};

// The gradient all-reduce overlapped with the backward pass. Hooks on the parameters copy each
// gradient into its bucket as autograd produces it; a bucket is all-reduced (asynchronously) as
// soon as its last gradient arrives, while backward goes on with earlier layers. Buckets follow
// reverse parameter order, the order in which backward produces gradients, and every rank builds
// the same buckets from the same model, so the collectives are issued in the same order.
//
// Use: construct once after the model is built; per step call begin() before backward() and
// finish() after it, which waits for the buckets, averages them and writes the averaged
// gradients into the parameters' .grad. Buckets whose gradients never arrived (unused parameters)
// are reduced in finish() with zeros for the missing parts. Without a process group (world size
// 1) nothing is hooked and finish() does nothing.
class OverlappedGradientSync {
 public:
  OverlappedGradientSync(Collectives& collectives, std::vector<at::Tensor> parameters,
                         int64_t bucket_bytes);
  ~OverlappedGradientSync();
  OverlappedGradientSync(const OverlappedGradientSync&) = delete;
  OverlappedGradientSync& operator=(const OverlappedGradientSync&) = delete;

  void begin();
  void finish();

  // Seconds finish() waited: the part of the sync the backward pass did not hide.
  double last_exposed_seconds() const { return last_exposed_seconds_; }
  int64_t bucket_count() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
  double last_exposed_seconds_ = 0.0;
};

}  // namespace medseg

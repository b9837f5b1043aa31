#include "dist/collectives.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "util/error.h"
#include "util/strings.h"

namespace medseg {
namespace {

constexpr const char* kPeerHint =
    "; another rank probably died or hung (see its log lines), or the network between hosts is "
    "blocked. dist.timeout_seconds bounds the wait";

// Tensors that are flattened into one buffer and travel in one collective call.
struct Bucket {
  std::vector<at::Tensor> tensors;
  int64_t numel = 0;
};

// Consecutive tensors of one dtype and device, up to bucket_bytes each (a larger tensor travels
// alone). The layout depends only on the shapes, so it is the same on every rank.
std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  std::vector<Bucket> buckets;
  int64_t bytes_in_last = 0;
  for (const at::Tensor& tensor : tensors) {
    const int64_t bytes = tensor.numel() * static_cast<int64_t>(tensor.element_size());
    const bool fits = !buckets.empty() &&
                      buckets.back().tensors.front().scalar_type() == tensor.scalar_type() &&
                      buckets.back().tensors.front().device() == tensor.device() &&
                      bytes_in_last + bytes <= bucket_bytes;
    if (!fits) {
      buckets.emplace_back();
      bytes_in_last = 0;
    }
    buckets.back().tensors.push_back(tensor);
    buckets.back().numel += tensor.numel();
    bytes_in_last += bytes;
  }
  return buckets;
}

at::Tensor flatten(const Bucket& bucket) {
  at::Tensor flat = at::empty({bucket.numel}, bucket.tensors.front().options());
  int64_t offset = 0;
  for (const at::Tensor& tensor : bucket.tensors) {
    flat.narrow(0, offset, tensor.numel()).copy_(tensor.reshape({-1}));
    offset += tensor.numel();
  }
  return flat;
}

// Copies `flat` back into the bucket's tensors (detached: parameters are autograd leaves).
void unflatten_into(const at::Tensor& flat, const Bucket& bucket) {
  int64_t offset = 0;
  for (const at::Tensor& tensor : bucket.tensors) {
    tensor.detach().copy_(flat.narrow(0, offset, tensor.numel()).view(tensor.sizes()));
    offset += tensor.numel();
  }
}

std::string describe(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) {
    return truncate_text(c10_error->what_without_backtrace(), 600);
  }
  return truncate_text(error.what(), 600);
}

}  // namespace

std::string resolve_backend(const std::string& configured, bool cuda_available) {
#ifdef USE_C10D_NCCL
  constexpr bool kHaveNccl = true;
#else
  constexpr bool kHaveNccl = false;
#endif
  if (configured == "gloo") return configured;
  if (configured == "nccl" || (configured == "auto" && cuda_available)) {
    if (!kHaveNccl) {
      throw ClientError("dist.backend '" + configured +
                        "' needs NCCL, which this build's LibTorch does not have (CPU build); "
                        "use dist.backend: gloo");
    }
    return "nccl";
  }
  if (configured == "auto") return "gloo";
  throw ClientError("dist.backend '" + configured + "' is invalid: expected auto, nccl or gloo");
}

std::string available_backends() {
  std::vector<std::string> backends;
#ifdef USE_C10D_NCCL
  backends.push_back("NCCL " + c10d::getNcclVersion());
#endif
#ifdef USE_C10D_GLOO
  backends.push_back("Gloo");
#endif
  return backends.empty() ? "none" : join(backends, ", ");
}

struct Collectives::Groups {
  c10::intrusive_ptr<c10d::Store> store;
#ifdef USE_C10D_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef USE_C10D_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif

  // Calls fn with the concrete process group. (In 1.13 both derive from ProcessGroup, in 2.x from
  // Backend; going through the concrete classes keeps this file free of that difference.)
  template <typename Fn>
  c10::intrusive_ptr<c10d::Work> with_group(Fn&& fn) {
#ifdef USE_C10D_NCCL
    if (nccl) return fn(*nccl);
#endif
#ifdef USE_C10D_GLOO
    if (gloo) return fn(*gloo);
#endif
    throw InternalError("Collectives: no process group");
  }
};

Collectives::Collectives(const DistEnv& env, const CollectivesOptions& options)
    : rank_(env.rank), world_size_(env.world_size), options_(options) {
  if (world_size_ <= 1 && !options.group_for_one_worker) return;
  const auto timeout = std::chrono::milliseconds(int64_t{options.timeout_seconds} * 1000);
  const std::string where = "rank " + std::to_string(rank_) + " of " + std::to_string(world_size_);
  const std::string master_address = resolve_host(env.master_addr, options.dns_retry_seconds);
  groups_ = std::make_unique<Groups>();

  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(env.master_port);
    store_options.isServer = rank_ == 0;
    store_options.numWorkers = world_size_;
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    store_options.useLibUV = false;  // the libuv server (default since 2.4) is not needed here
    groups_->store = c10::make_intrusive<c10d::TCPStore>(master_address, store_options);
  } catch (const std::exception& error) {
    throw PlatformError("rendezvous failed on " + where + " (TCPStore " +
                        (rank_ == 0 ? "server on port " : "at ") +
                        (rank_ == 0 ? "" : master_address + ":") + std::to_string(env.master_port) +
                        "): " + describe(error) +
                        "; check that every rank started, that the port is free on the master "
                        "(dist.master_port / MASTER_PORT) and reachable");
  }

  try {
    if (options.backend == "nccl") {
#ifdef USE_C10D_NCCL
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = timeout;
      groups_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(groups_->store, rank_,
                                                                  world_size_, nccl_options);
#else
      throw ClientError("dist.backend nccl: this build's LibTorch has no NCCL");
#endif
    } else if (options.backend == "gloo") {
#ifdef USE_C10D_GLOO
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
      const char* interface_override = std::getenv("GLOO_SOCKET_IFNAME");
      if (env.num_nodes == 1) {
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else if (interface_override != nullptr && *interface_override != '\0') {
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(interface_override));
      } else if (!options.network_interface.empty()) {
        gloo_options->devices.push_back(
            c10d::ProcessGroupGloo::createDeviceForInterface(options.network_interface));
      } else {
        gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      groups_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(groups_->store, rank_,
                                                                  world_size_, gloo_options);
#else
      throw ClientError("dist.backend gloo: this build's LibTorch has no Gloo");
#endif
    } else {
      throw InternalError("Collectives: backend '" + options.backend + "' was not resolved");
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw PlatformError("creating the " + options.backend + " process group failed on " + where +
                        ": " + describe(error) + kPeerHint);
  }
}

Collectives::~Collectives() = default;

// Runs a collective, turning c10d's exceptions (peer closed the connection, timeout) into a
// PlatformError that names the operation and the rank.
#define MEDSEG_COLLECTIVE(operation, body)                                                    \
  try {                                                                                       \
    body;                                                                                     \
  } catch (const Error&) {                                                                    \
    throw;                                                                                    \
  } catch (const std::exception& error) {                                                     \
    throw PlatformError(std::string(operation) + " failed on rank " + std::to_string(rank_) + \
                        " of " + std::to_string(world_size_) + ": " + describe(error) +       \
                        kPeerHint);                                                           \
  }

void Collectives::broadcast_parameters(std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  if (!groups_) return;
  const std::vector<Bucket> buckets = make_buckets(tensors, bucket_bytes);
  MEDSEG_COLLECTIVE("broadcast of the parameters from rank 0", {
    for (const Bucket& bucket : buckets) {
      std::vector<at::Tensor> flat = {flatten(bucket)};
      c10d::BroadcastOptions broadcast_options;
      broadcast_options.rootRank = 0;
      groups_->with_group([&](auto& group) { return group.broadcast(flat, broadcast_options); })
          ->wait();
      unflatten_into(flat.front(), bucket);
    }
  });
}

void Collectives::allreduce_mean_gradients(const std::vector<at::Tensor>& parameters,
                                           int64_t bucket_bytes) {
  if (!groups_) return;
  const auto start = std::chrono::steady_clock::now();
  std::vector<at::Tensor> gradients;
  gradients.reserve(parameters.size());
  for (const at::Tensor& parameter : parameters) {
    if (!parameter.requires_grad()) continue;
    if (!parameter.grad().defined()) parameter.mutable_grad() = at::zeros_like(parameter);
    gradients.push_back(parameter.grad());
  }
  const std::vector<Bucket> buckets = make_buckets(gradients, bucket_bytes);

  MEDSEG_COLLECTIVE("all-reduce of the gradients", {
    // Launch every bucket before waiting: bucket k+1 is flattened while bucket k is on the wire.
    std::vector<std::vector<at::Tensor>> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    flats.reserve(buckets.size());
    for (const Bucket& bucket : buckets) {
      flats.push_back({flatten(bucket)});
      c10d::AllreduceOptions reduce_options;
      reduce_options.reduceOp = c10d::ReduceOp::SUM;
      works.push_back(groups_->with_group(
          [&](auto& group) { return group.allreduce(flats.back(), reduce_options); }));
    }
    for (size_t index = 0; index < buckets.size(); ++index) {
      works[index]->wait();
      flats[index].front().div_(world_size_);
      unflatten_into(flats[index].front(), buckets[index]);
    }
  });
  last_sync_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Collectives::allreduce_sum(std::vector<double>& values) {
  if (!groups_ || values.empty()) return;
  MEDSEG_COLLECTIVE("all-reduce of the metrics", {
    std::vector<at::Tensor> buffer = {
        at::tensor(at::ArrayRef<double>(values), at::TensorOptions().dtype(at::kDouble))
            .to(options_.device)};
    c10d::AllreduceOptions reduce_options;
    reduce_options.reduceOp = c10d::ReduceOp::SUM;
    groups_->with_group([&](auto& group) { return group.allreduce(buffer, reduce_options); })
        ->wait();
    const at::Tensor result = buffer.front().to(at::kCPU).contiguous();
    const double* data = result.data_ptr<double>();
    std::copy(data, data + values.size(), values.begin());
  });
}

void Collectives::barrier() {
  if (!groups_) return;
  MEDSEG_COLLECTIVE("barrier", {
    c10d::BarrierOptions barrier_options;
    if (options_.device.is_cuda() && options_.device.has_index()) {
      barrier_options.device_ids = {options_.device.index()};
    }
    groups_->with_group([&](auto& group) { return group.barrier(barrier_options); })->wait();
  });
}

#undef MEDSEG_COLLECTIVE

struct OverlappedGradientSync::State {
  Collectives* collectives = nullptr;
  std::vector<at::Tensor> parameters;            // hooked parameters, in model order
  std::vector<std::vector<size_t>> buckets;      // parameter indices per bucket, backward order
  std::vector<at::Tensor> flats;                 // one flat buffer per bucket
  std::vector<std::pair<size_t, int64_t>> slot;  // per parameter: bucket and offset in it
  std::vector<int64_t> pending;                  // per bucket: gradients still to arrive
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<std::vector<at::Tensor>> launched;  // the tensors handed to each collective
  std::vector<unsigned> hook_handles;
  std::exception_ptr failure;  // a collective that failed inside a hook

  void launch(size_t bucket) {
    c10d::AllreduceOptions reduce_options;
    reduce_options.reduceOp = c10d::ReduceOp::SUM;
    launched[bucket] = {flats[bucket]};
    works[bucket] = collectives->groups_->with_group(
        [&](auto& group) { return group.allreduce(launched[bucket], reduce_options); });
  }
};

OverlappedGradientSync::OverlappedGradientSync(Collectives& collectives,
                                               std::vector<at::Tensor> parameters,
                                               int64_t bucket_bytes)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.collectives = &collectives;
  if (!collectives.groups_) return;
  for (at::Tensor& parameter : parameters) {
    if (parameter.requires_grad()) s.parameters.push_back(parameter);
  }
  s.slot.resize(s.parameters.size());
  // Backward produces the last layers' gradients first: fill buckets from the end.
  int64_t used_bytes = 0;
  int64_t used_numel = 0;
  for (size_t k = s.parameters.size(); k-- > 0;) {
    const int64_t bytes = s.parameters[k].numel() * s.parameters[k].element_size();
    if (s.buckets.empty() || (used_bytes > 0 && used_bytes + bytes > bucket_bytes)) {
      s.buckets.emplace_back();
      used_bytes = 0;
      used_numel = 0;
    }
    s.slot[k] = {s.buckets.size() - 1, used_numel};
    s.buckets.back().push_back(k);
    used_bytes += bytes;
    used_numel += s.parameters[k].numel();
  }
  s.flats.assign(s.buckets.size(), at::Tensor());
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    int64_t numel = 0;
    for (size_t k : s.buckets[b]) numel += s.parameters[k].numel();
    s.flats[b] = at::zeros({numel}, s.parameters[s.buckets[b].front()].options());
  }
  s.pending.assign(s.buckets.size(), 0);
  s.works.assign(s.buckets.size(), c10::intrusive_ptr<c10d::Work>());
  s.launched.assign(s.buckets.size(), {});
  for (size_t k = 0; k < s.parameters.size(); ++k) {
    State* state = state_.get();
    s.hook_handles.push_back(s.parameters[k].register_hook([state, k](const at::Tensor& grad) {
      const auto [bucket, offset] = state->slot[k];
      state->flats[bucket].narrow(0, offset, grad.numel()).copy_(grad.reshape({-1}));
      if (--state->pending[bucket] == 0 && !state->failure) {
        try {
          state->launch(bucket);
        } catch (...) {
          state->failure = std::current_exception();
        }
      }
      return grad;
    }));
  }
}

OverlappedGradientSync::~OverlappedGradientSync() {
  for (size_t k = 0; k < state_->hook_handles.size(); ++k) {
    state_->parameters[k].remove_hook(state_->hook_handles[k]);
  }
}

int64_t OverlappedGradientSync::bucket_count() const {
  return static_cast<int64_t>(state_->buckets.size());
}

void OverlappedGradientSync::begin() {
  State& s = *state_;
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    s.pending[b] = static_cast<int64_t>(s.buckets[b].size());
    s.works[b].reset();
    s.flats[b].zero_();
  }
  s.failure = nullptr;
}

void OverlappedGradientSync::finish() {
  State& s = *state_;
  if (s.buckets.empty()) return;
  const auto start = std::chrono::steady_clock::now();
  const Collectives& collectives = *s.collectives;
  const auto launched = std::count_if(s.works.begin(), s.works.end(),
                                      [](const auto& work) { return work.defined(); });
  spdlog::debug("gradient sync: {} of {} buckets were launched during backward", launched,
                s.buckets.size());
  try {
    if (s.failure) std::rethrow_exception(s.failure);
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      if (!s.works[b].defined()) s.launch(b);  // unused parameters: their part stays zero
    }
    for (size_t b = 0; b < s.buckets.size(); ++b) {
      s.works[b]->wait();
      s.flats[b].div_(collectives.world_size_);
      for (size_t k : s.buckets[b]) {
        at::Tensor& parameter = s.parameters[k];
        const at::Tensor averaged =
            s.flats[b].narrow(0, s.slot[k].second, parameter.numel()).view(parameter.sizes());
        if (parameter.grad().defined()) {
          parameter.mutable_grad().copy_(averaged);
        } else {
          parameter.mutable_grad() = averaged.clone();
        }
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw PlatformError(
        "all-reduce of the gradients failed on rank " + std::to_string(collectives.rank_) + " of " +
        std::to_string(collectives.world_size_) + ": " + describe(error) + kPeerHint);
  }
  last_exposed_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace medseg

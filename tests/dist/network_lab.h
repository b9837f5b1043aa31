// A small cluster on this machine for the multi-host fault tests: one network namespace per
// host (each its own TCP/IP stack, as separate instances have), joined by a switch that this
// process runs. Each host has a tap device "eth0" with 10.90.0.<i+1>/24, and its /etc/hosts (the
// /etc/netns/<namespace>/hosts that `ip netns exec` mounts) names the hosts algo-1, algo-2, ...
// like SageMaker's resourceconfig.json does.
//
// The switch forwards Ethernet frames between the taps in a thread. The tests break the network
// through it: a cut host's frames vanish in both directions (a pulled cable: no reset reaches
// either side), and impair() drops a fraction of the frames and delays the rest (the kernel here
// has no netem qdisc; the stacks in the namespaces see real loss and delay either way).
//
// REQUIRES: root (namespaces, /dev/net/tun, /etc/netns). unavailable_reason() says why not.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace medseg::testing {

class NetworkLab {
 public:
  // Why a lab cannot be made here ("" when it can): not root, no `ip`, no /dev/net/tun, or the
  // kernel refused a namespace.
  static std::string unavailable_reason();

  explicit NetworkLab(int hosts);
  ~NetworkLab();
  NetworkLab(const NetworkLab&) = delete;
  NetworkLab& operator=(const NetworkLab&) = delete;

  int hosts() const { return static_cast<int>(namespaces_.size()); }
  // "algo-<host + 1>", resolvable inside every namespace.
  static std::string host_name(int host);
  // {"current_host": ..., "hosts": [all], "network_interface_name": "eth0"} for `host`.
  std::string resource_config(int host) const;

  // Starts `medseg train` inside host's namespace with MEDSEG_ML_ROOT=root, its output appended
  // to <root>/train.log.
  pid_t start_training(int host, const std::string& root) const;
  // The processes alive in host's namespace (`ip netns pids`): what a host still runs.
  std::vector<pid_t> processes(int host) const;
  // Sends `signal` to every process of the host.
  void signal_all(int host, int signal) const;

  // Every frame from or to `host` is dropped until restore(host).
  void cut(int host);
  void restore(int host);
  // Every forwarded frame is dropped with probability `loss`, the rest delivered `delay` later.
  void impair(double loss, std::chrono::milliseconds delay);
  // Frames the switch delivered and dropped so far.
  int64_t frames_delivered() const { return delivered_; }
  int64_t frames_dropped() const { return dropped_; }

 private:
  struct Switch;
  void forward();

  std::vector<std::string> namespaces_;
  std::vector<int> taps_;  // one fd per host
  std::unique_ptr<Switch> switch_;
  std::atomic<int64_t> delivered_{0};
  std::atomic<int64_t> dropped_{0};
};

}  // namespace medseg::testing

// `medseg train` as its own launcher: one worker process per GPU on this host, supervised.
//
// run_workers re-executes the binary (/proc/self/exe) nproc times with the same arguments and
// MEDSEG_WORKER=1 (so the worker trains instead of launching again), MEDSEG_LOCAL_RANK=i and
// MEDSEG_HEARTBEAT_FILE=<a file per worker in a private temporary folder>. While they run it:
//  - forwards SIGTERM and SIGINT to every worker (SageMaker's stop only reaches this process),
//    and kills the ones still running kill_grace_seconds later;
//  - when a worker exits non-zero or is killed by a signal, stops the others (SIGTERM, then
//    SIGKILL after kill_grace_seconds) and reports which rank failed and how;
//  - when a worker's heartbeat file has not been touched for heartbeat_timeout_seconds (a hung
//    worker: deadlocked collective, stuck I/O), stops all workers and reports the rank.
// Each worker runs in its own process group (so stopping it also stops its children) and has
// PR_SET_PDEATHSIG = SIGTERM, so workers never outlive a launcher that is killed.
//
// REQUIRES: called from the thread that lives until run_workers returns (PR_SET_PDEATHSIG fires
// when the forking thread exits), one run_workers at a time per process. It installs its own
// SIGTERM/SIGINT handlers for its duration and restores the previous ones afterwards.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace medseg {

// Environment variables between the launcher and its workers.
inline constexpr const char* kWorkerVariable = "MEDSEG_WORKER";
inline constexpr const char* kHeartbeatFileVariable = "MEDSEG_HEARTBEAT_FILE";

struct LaunchOptions {
  // The program to execute; argv[0] is passed to it unchanged.
  std::string executable = "/proc/self/exe";
  // Extra "NAME=value" entries for every worker's environment (on top of this process's).
  std::vector<std::string> extra_env;
  // A worker whose heartbeat is older than this is hung (dist.timeout_seconds); 0 = no check.
  // The clock starts when the worker is spawned, so start-up (rendezvous, DNS) counts too.
  int heartbeat_timeout_seconds = 1800;
  // After SIGTERM (forwarded, or sent because a worker failed), how long stopping workers get
  // before SIGKILL.
  int kill_grace_seconds = 30;
  // Global rank of local worker 0 (node_rank * nproc), used only in messages.
  int first_rank = 0;
};

struct LaunchResult {
  // 0 when every worker exited 0. Otherwise the failed worker's exit code, or 3 (a platform
  // failure, see util/error.h) for a worker killed by a signal or hung.
  int exit_code = 0;
  // Empty on success; else one sentence naming the rank and the cause, e.g.
  // "rank 1 exited with code 3 (local rank 1, pid 4242); the other workers were stopped".
  std::string failure;
  // The stop signal forwarded to the workers (SIGTERM/SIGINT), 0 when none arrived.
  int forwarded_signal = 0;
};

// Runs nproc workers (see the header comment) and returns when all have exited. Throws
// PlatformError when a worker cannot be started (fork/exec failure is reported as a failed
// worker: exec errors exit 127).
LaunchResult run_workers(const std::vector<std::string>& argv, int nproc,
                         const LaunchOptions& options);

// True in a process started by run_workers (MEDSEG_WORKER=1).
bool is_launched_worker();

// This process's argv, read from /proc/self/cmdline: what run_workers should re-execute, without
// plumbing main's argv through. Throws PlatformError when it cannot be read.
std::vector<std::string> current_command_line();

// The worker side of hang detection: touches MEDSEG_HEARTBEAT_FILE. Call beat() at least once
// per training step (and inside long loops such as validation); it costs one utimensat() call
// at most once per second. Inactive (beat() does nothing) when the variable is unset, i.e. in a
// process that was not started by run_workers.
class Heartbeat {
 public:
  static Heartbeat from_environment();
  explicit Heartbeat(std::string path);

  bool active() const { return !path_.empty(); }
  void beat();

 private:
  std::string path_;
  std::chrono::steady_clock::time_point last_beat_{};
};

}  // namespace medseg

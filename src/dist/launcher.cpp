#include "dist/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

#include "dist/dist_env.h"
#include "util/error.h"

extern char** environ;

namespace medseg {
namespace {

constexpr int kSignalExitCode = 3;  // exit_code_for(ErrorKind::kPlatform)
constexpr auto kPollInterval = std::chrono::milliseconds(50);

std::atomic<int> g_pending_signal{0};

extern "C" void on_launcher_signal(int signal_number) { g_pending_signal.store(signal_number); }

// Installs the forwarding handlers for SIGTERM/SIGINT; restores the previous ones on destruction.
class SignalForwarding {
 public:
  SignalForwarding() {
    g_pending_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_launcher_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, &previous_term_);
    sigaction(SIGINT, &action, &previous_int_);
  }
  ~SignalForwarding() {
    sigaction(SIGTERM, &previous_term_, nullptr);
    sigaction(SIGINT, &previous_int_, nullptr);
  }
  SignalForwarding(const SignalForwarding&) = delete;
  SignalForwarding& operator=(const SignalForwarding&) = delete;

 private:
  struct sigaction previous_term_ {};
  struct sigaction previous_int_ {};
};

// "SIGKILL (9)". (sigabbrev_np would do, but needs glibc 2.32, newer than some CUDA images.)
std::string signal_name(int signal_number) {
  static const std::pair<int, const char*> kNames[] = {
      {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
      {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGKILL, "SIGKILL"},
      {SIGSEGV, "SIGSEGV"}, {SIGPIPE, "SIGPIPE"}, {SIGTERM, "SIGTERM"}, {SIGUSR1, "SIGUSR1"},
      {SIGUSR2, "SIGUSR2"}};
  const std::string number = std::to_string(signal_number);
  for (const auto& [value, name] : kNames) {
    if (value == signal_number) return std::string(name) + " (" + number + ")";
  }
  return "signal " + number;
}

struct Worker {
  int local_rank = 0;
  pid_t pid = -1;
  std::string heartbeat_path;
  bool running = false;
};

// A process's environment as NAME -> "NAME=value", overridden by `overrides`.
std::vector<std::string> worker_environment(const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> entries;
  auto add = [&entries](const std::string& entry) {
    entries[entry.substr(0, entry.find('='))] = entry;
  };
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) add(*entry);
  for (const std::string& entry : overrides) add(entry);
  std::vector<std::string> result;
  result.reserve(entries.size());
  for (auto& [name, entry] : entries) result.push_back(std::move(entry));
  return result;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& text : strings) pointers.push_back(text.data());
  pointers.push_back(nullptr);
  return pointers;
}

void touch(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw_system_error("cannot create the heartbeat file " + path);
  ::close(fd);
  ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
}

// Seconds since the file was last modified (0 when it cannot be read: a worker that removed it
// is not treated as hung).
double heartbeat_age_seconds(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return 0.0;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<double>(now.tv_sec - status.st_mtim.tv_sec) +
         static_cast<double>(now.tv_nsec - status.st_mtim.tv_nsec) * 1e-9;
}

pid_t spawn(const std::string& executable, std::vector<std::string> argv,
            std::vector<std::string> environment) {
  std::vector<char*> argv_pointers = c_strings(argv);
  std::vector<char*> env_pointers = c_strings(environment);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw_system_error("fork of a training worker");
  if (pid == 0) {
    // Child: only async-signal-safe calls until execve (the parent may have other threads).
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(kSignalExitCode);  // the launcher died meanwhile
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(executable.c_str(), argv_pointers.data(), env_pointers.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here, so the group exists before the parent signals it
  return pid;
}

// Signals a worker and everything it started (its process group).
void signal_worker(const Worker& worker, int signal_number) {
  if (!worker.running) return;
  if (::killpg(worker.pid, signal_number) != 0) ::kill(worker.pid, signal_number);
}

}  // namespace

LaunchResult run_workers(const std::vector<std::string>& argv, int nproc,
                         const LaunchOptions& options) {
  if (nproc < 1) throw InternalError("run_workers: nproc " + std::to_string(nproc) + " < 1");
  if (argv.empty()) throw InternalError("run_workers: empty argv");

  std::string folder = (std::filesystem::temp_directory_path() / "medseg-workers-XXXXXX").string();
  if (::mkdtemp(folder.data()) == nullptr) throw_system_error("mkdtemp for worker heartbeats");
  struct FolderRemover {
    std::string path;
    ~FolderRemover() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } remover{folder};

  SignalForwarding forwarding;
  LaunchResult result;
  std::vector<Worker> workers(nproc);
  auto rank_of = [&options](const Worker& worker) {
    return options.first_rank + worker.local_rank;
  };
  auto describe = [&](const Worker& worker) {
    return "(local rank " + std::to_string(worker.local_rank) + ", pid " +
           std::to_string(worker.pid) + ")";
  };

  bool stopping = false;
  bool killed = false;
  auto stop_deadline = std::chrono::steady_clock::now();
  auto forwarded_deadline = std::chrono::steady_clock::now();
  auto begin_stopping = [&]() {
    if (stopping) return;
    stopping = true;
    stop_deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(options.kill_grace_seconds);
    for (const Worker& worker : workers) signal_worker(worker, SIGTERM);
  };
  auto fail = [&](const std::string& failure, int exit_code) {
    if (result.failure.empty()) {
      result.failure = failure + "; the other workers were stopped";
      result.exit_code = exit_code;
    }
    begin_stopping();
  };

  for (int local_rank = 0; local_rank < nproc; ++local_rank) {
    Worker& worker = workers[local_rank];
    worker.local_rank = local_rank;
    worker.heartbeat_path = folder + "/heartbeat." + std::to_string(local_rank);
    touch(worker.heartbeat_path);
    std::vector<std::string> overrides = options.extra_env;
    overrides.push_back(std::string(kWorkerVariable) + "=1");
    overrides.push_back(std::string(kLocalRankVariable) + "=" + std::to_string(local_rank));
    overrides.push_back(std::string(kHeartbeatFileVariable) + "=" + worker.heartbeat_path);
    try {
      worker.pid = spawn(options.executable, argv, worker_environment(overrides));
    } catch (const Error&) {
      begin_stopping();
      for (Worker& started : workers) {
        if (started.running) ::waitpid(started.pid, nullptr, 0);
      }
      throw;
    }
    worker.running = true;
  }

  while (true) {
    // 1. Reap workers that ended.
    for (Worker& worker : workers) {
      if (!worker.running) continue;
      int status = 0;
      const pid_t reaped = ::waitpid(worker.pid, &status, WNOHANG);
      if (reaped == 0 || (reaped < 0 && errno == EINTR)) continue;
      worker.running = false;
      if (reaped < 0) {
        fail("rank " + std::to_string(rank_of(worker)) + " could not be waited for " +
                 describe(worker) + ": " + std::strerror(errno),
             kSignalExitCode);
      } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        fail("rank " + std::to_string(rank_of(worker)) + " exited with code " +
                 std::to_string(WEXITSTATUS(status)) + " " + describe(worker) +
                 (WEXITSTATUS(status) == 127 ? " (could not execute " + options.executable + "?)"
                                             : ""),
             WEXITSTATUS(status));
      } else if (WIFSIGNALED(status) && !stopping) {
        fail("rank " + std::to_string(rank_of(worker)) + " was killed by " +
                 signal_name(WTERMSIG(status)) + " " + describe(worker) +
                 (WTERMSIG(status) == SIGKILL ? " (out of memory?)" : ""),
             kSignalExitCode);
      }
    }
    bool any_running = false;
    for (const Worker& worker : workers) any_running = any_running || worker.running;
    if (!any_running) break;

    // 2. Forward stop signals. A worker still running kill_grace_seconds later (one blocked in
    //    a collective whose peer has already stopped) gets SIGKILL, as in 4.
    if (const int signal_number = g_pending_signal.exchange(0); signal_number != 0) {
      if (result.forwarded_signal == 0) {
        forwarded_deadline =
            std::chrono::steady_clock::now() + std::chrono::seconds(options.kill_grace_seconds);
      }
      result.forwarded_signal = signal_number;
      for (const Worker& worker : workers) signal_worker(worker, signal_number);
    }
    if (result.forwarded_signal != 0 && !stopping &&
        std::chrono::steady_clock::now() >= forwarded_deadline) {
      for (const Worker& worker : workers) {
        if (!worker.running) continue;
        spdlog::warn("rank {} {} had not stopped {} s after {}: SIGKILL", rank_of(worker),
                     describe(worker), options.kill_grace_seconds,
                     signal_name(result.forwarded_signal));
      }
      stopping = true;  // what follows is the stop, not a failure
      killed = true;
      for (const Worker& worker : workers) signal_worker(worker, SIGKILL);
    }

    // 3. Hang detection.
    if (options.heartbeat_timeout_seconds > 0 && !stopping) {
      for (const Worker& worker : workers) {
        if (!worker.running) continue;
        const double age = heartbeat_age_seconds(worker.heartbeat_path);
        if (age > options.heartbeat_timeout_seconds) {
          fail("rank " + std::to_string(rank_of(worker)) + " sent no heartbeat for " +
                   std::to_string(static_cast<int>(age)) + " s " + describe(worker) +
                   ", more than dist.timeout_seconds = " +
                   std::to_string(options.heartbeat_timeout_seconds) +
                   ": it is hung (a stuck collective or I/O)",
               kSignalExitCode);
          break;
        }
      }
    }

    // 4. Workers that ignore SIGTERM get SIGKILL after the grace period.
    if (stopping && !killed && std::chrono::steady_clock::now() >= stop_deadline) {
      killed = true;
      for (const Worker& worker : workers) signal_worker(worker, SIGKILL);
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  return result;
}

std::vector<std::string> current_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  if (!in) throw PlatformError("cannot read /proc/self/cmdline (is /proc mounted?)");
  std::vector<std::string> arguments;
  std::string argument;
  while (std::getline(in, argument, '\0')) arguments.push_back(argument);
  return arguments;
}

bool is_launched_worker() {
  const char* value = std::getenv(kWorkerVariable);
  return value != nullptr && std::string(value) == "1";
}

Heartbeat Heartbeat::from_environment() {
  const char* path = std::getenv(kHeartbeatFileVariable);
  return Heartbeat(path == nullptr ? std::string() : std::string(path));
}

Heartbeat::Heartbeat(std::string path) : path_(std::move(path)) {}

void Heartbeat::beat() {
  if (path_.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  if (last_beat_ != std::chrono::steady_clock::time_point{} &&
      now - last_beat_ < std::chrono::seconds(1)) {
    return;
  }
  last_beat_ = now;
  ::utimensat(AT_FDCWD, path_.c_str(), nullptr, 0);  // a missing file is not an error here
}

}  // namespace medseg

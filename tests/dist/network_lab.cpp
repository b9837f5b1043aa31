#include "dist/network_lab.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <queue>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "test_support.h"

namespace medseg::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kNamespacePrefix = "medseg-lab-";

std::string address(int host) { return "10.90.0." + std::to_string(host + 1); }

void ip(const std::string& arguments) {
  const CommandResult result = run_shell("ip " + arguments);
  if (result.exit_code != 0) {
    throw std::runtime_error("ip " + arguments + " failed: " + result.output);
  }
}

// Namespaces of labs whose test process died without cleaning up (named after its pid).
void remove_abandoned_namespaces() {
  if (!fs::exists("/var/run/netns")) return;
  for (const auto& entry : fs::directory_iterator("/var/run/netns")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kNamespacePrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::strlen(kNamespacePrefix));
    const pid_t owner = static_cast<pid_t>(std::atol(rest.c_str()));
    if (owner > 0 && (::kill(owner, 0) == 0 || errno != ESRCH)) continue;
    run_shell("ip netns pids " + name + " | xargs -r kill -9; ip netns del " + name);
    fs::remove_all("/etc/netns/" + name);
  }
}

// A tap device in this namespace, not persistent: it disappears when `fd` is closed.
int open_tap(const std::string& name) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(std::string("open /dev/net/tun: ") + std::strerror(errno));
  ifreq request{};
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd, TUNSETIFF, &request) < 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error("TUNSETIFF " + name + ": " + std::strerror(error));
  }
  return fd;
}

}  // namespace

struct NetworkLab::Switch {
  struct Frame {
    Clock::time_point due;
    int64_t order = 0;
    int to = 0;
    std::vector<uint8_t> bytes;
    bool operator>(const Frame& other) const {
      return due != other.due ? due > other.due : order > other.order;
    }
  };

  std::mutex mutex;  // guards the settings below
  std::vector<bool> cut;
  double loss = 0.0;
  std::chrono::milliseconds delay{0};

  int stop_pipe[2] = {-1, -1};
  std::thread thread;
};

std::string NetworkLab::unavailable_reason() {
  if (::geteuid() != 0) return "network namespaces need root (this test runs as uid " +
                               std::to_string(::geteuid()) + ")";
  if (run_shell("command -v ip").exit_code != 0) return "no `ip` command (Debian's iproute2)";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    return std::string("/dev/net/tun is not usable: ") + std::strerror(errno);
  }
  const std::string probe = kNamespacePrefix + std::to_string(::getpid()) + "-probe";
  const CommandResult made = run_shell("ip netns add " + probe);
  if (made.exit_code != 0) return "the kernel refused a network namespace: " + made.output;
  run_shell("ip netns del " + probe);
  return "";
}

NetworkLab::NetworkLab(int hosts) : switch_(std::make_unique<Switch>()) {
  static int labs = 0;
  const int lab = labs++;
  remove_abandoned_namespaces();
  std::string hosts_file = "127.0.0.1 localhost\n";
  for (int host = 0; host < hosts; ++host) hosts_file += address(host) + " " + host_name(host) + "\n";
  for (int host = 0; host < hosts; ++host) {
    const std::string name =
        kNamespacePrefix + std::to_string(::getpid()) + "-" + std::to_string(lab) + "-" +
        std::to_string(host);
    namespaces_.push_back(name);
    ip("netns add " + name);
    write_text("/etc/netns/" + name + "/hosts", hosts_file);
    const std::string tap = "mslab" + std::to_string(::getpid() % 100000) + "x" +
                            std::to_string(lab % 100) + std::to_string(host);
    taps_.push_back(open_tap(tap));
    ip("link set " + tap + " netns " + name);
    ip("-n " + name + " link set " + tap + " name eth0");
    ip("-n " + name + " addr add " + address(host) + "/24 dev eth0");
    ip("-n " + name + " link set eth0 up");
    ip("-n " + name + " link set lo up");
  }
  switch_->cut.assign(static_cast<size_t>(hosts), false);
  if (::pipe2(switch_->stop_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  switch_->thread = std::thread([this] { forward(); });
}

NetworkLab::~NetworkLab() {
  if (switch_->thread.joinable()) {
    const char stop = 1;
    [[maybe_unused]] const ssize_t written = ::write(switch_->stop_pipe[1], &stop, 1);
    switch_->thread.join();
  }
  for (int fd : switch_->stop_pipe) {
    if (fd >= 0) ::close(fd);
  }
  for (int host = 0; host < hosts(); ++host) signal_all(host, SIGKILL);
  for (int fd : taps_) ::close(fd);
  for (const std::string& name : namespaces_) {
    run_shell("ip netns del " + name);
    fs::remove_all("/etc/netns/" + name);
  }
}

std::string NetworkLab::host_name(int host) { return "algo-" + std::to_string(host + 1); }

std::string NetworkLab::resource_config(int host) const {
  std::string all;
  for (int other = 0; other < hosts(); ++other) {
    all += (other ? ", \"" : "\"") + host_name(other) + "\"";
  }
  return R"({"current_host": ")" + host_name(host) + R"(", "hosts": [)" + all +
         R"(], "network_interface_name": "eth0"})";
}

pid_t NetworkLab::start_training(int host, const std::string& root) const {
  const std::string name = namespaces_.at(static_cast<size_t>(host));
  const pid_t child = ::fork();
  if (child == 0) {
    ::setenv("MEDSEG_ML_ROOT", root.c_str(), 1);
    const int fd = ::open((root + "/train.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    // `ip netns exec` enters the namespace, mounts /etc/netns/<name>/hosts over /etc/hosts and
    // executes the binary in this process.
    ::execlp("ip", "ip", "netns", "exec", name.c_str(), MEDSEG_BINARY, "train",
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return child;
}

std::vector<pid_t> NetworkLab::processes(int host) const {
  const CommandResult listed = run_shell("ip netns pids " + namespaces_.at(host));
  std::vector<pid_t> pids;
  std::istringstream words(listed.stdout_text);
  for (pid_t pid = 0; words >> pid;) pids.push_back(pid);
  return pids;
}

void NetworkLab::signal_all(int host, int signal) const {
  for (pid_t pid : processes(host)) ::kill(pid, signal);
}

void NetworkLab::cut(int host) {
  std::lock_guard<std::mutex> lock(switch_->mutex);
  switch_->cut.at(static_cast<size_t>(host)) = true;
}

void NetworkLab::restore(int host) {
  std::lock_guard<std::mutex> lock(switch_->mutex);
  switch_->cut.at(static_cast<size_t>(host)) = false;
}

void NetworkLab::impair(double loss, std::chrono::milliseconds delay) {
  std::lock_guard<std::mutex> lock(switch_->mutex);
  switch_->loss = loss;
  switch_->delay = delay;
}

// The switch: learns which host owns which MAC address, forwards unicast frames to their owner
// and the rest to every other host, applying cuts, loss and delay. Frames wait in a queue ordered
// by their delivery time.
void NetworkLab::forward() {
  Switch& s = *switch_;
  std::mt19937_64 random(20261202);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::map<std::array<uint8_t, 6>, int> owners;
  std::priority_queue<Switch::Frame, std::vector<Switch::Frame>, std::greater<>> queue;
  int64_t order = 0;
  std::vector<uint8_t> buffer(65536);
  std::vector<pollfd> polled;
  for (int fd : taps_) polled.push_back({fd, POLLIN, 0});
  polled.push_back({s.stop_pipe[0], POLLIN, 0});

  while (true) {
    int wait_ms = 50;
    if (!queue.empty()) {
      const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
          queue.top().due - Clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(50, until.count())));
    }
    ::poll(polled.data(), polled.size(), wait_ms);
    if (polled.back().revents != 0) return;

    for (int from = 0; from < hosts(); ++from) {
      if ((polled[static_cast<size_t>(from)].revents & POLLIN) == 0) continue;
      while (true) {
        const ssize_t size = ::read(taps_[static_cast<size_t>(from)], buffer.data(), buffer.size());
        if (size < 14) break;  // EAGAIN, or not an Ethernet frame
        std::array<uint8_t, 6> destination, source;
        std::memcpy(destination.data(), buffer.data(), 6);
        std::memcpy(source.data(), buffer.data() + 6, 6);
        owners[source] = from;
        const auto owner = owners.find(destination);
        std::lock_guard<std::mutex> lock(s.mutex);
        for (int to = 0; to < hosts(); ++to) {
          if (to == from || (owner != owners.end() && owner->second != to)) continue;
          if (s.cut[static_cast<size_t>(from)] || s.cut[static_cast<size_t>(to)] ||
              (s.loss > 0.0 && uniform(random) < s.loss)) {
            ++dropped_;
            continue;
          }
          queue.push({Clock::now() + s.delay, order++, to,
                      std::vector<uint8_t>(buffer.begin(), buffer.begin() + size)});
        }
      }
    }
    while (!queue.empty() && queue.top().due <= Clock::now()) {
      const Switch::Frame& frame = queue.top();
      const ssize_t written =
          ::write(taps_[static_cast<size_t>(frame.to)], frame.bytes.data(), frame.bytes.size());
      if (written == static_cast<ssize_t>(frame.bytes.size())) {
        ++delivered_;
      } else {
        ++dropped_;  // the host's receive queue is full: the frame is lost, as on a wire
      }
      queue.pop();
    }
  }
}

}  // namespace medseg::testing

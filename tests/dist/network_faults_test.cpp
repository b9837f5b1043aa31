// Multi-host faults for real: 2-3 hosts, each in its own network namespace with its own ML root
// and resourceconfig.json, train with Gloo over the switch of tests/dist/network_lab.h. Each
// scenario breaks a host or the network mid-training and checks what a SageMaker user sees:
// every host ends within dist.timeout_seconds plus kMarginSeconds of the fault, with a failure
// naming the rank or host, and leaves no process behind; after a restart (every host given the
// checkpoints rank 0 wrote, as SageMaker downloads the job's one checkpoint S3 prefix to every
// host) the job resumes and ends with the weights of an uninterrupted run, bit for bit.
//
// These tests run one at a time (ctest RUN_SERIAL): their bounds are wall-clock bounds.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

#include "dist/network_lab.h"
#include "train/training_jobs.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::NetworkLab;

constexpr int kTimeoutSeconds = 15;  // dist.timeout_seconds of the jobs below
// What a host may take beyond dist.timeout_seconds to notice, report and exit: the socket
// timeouts of Gloo and the TCPStore are that long, and the hosts share two cores here.
constexpr double kMarginSeconds = 20.0;
constexpr double kBound = kTimeoutSeconds + kMarginSeconds;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// 4 epochs x 5 steps of the small network, a checkpoint every 2 steps and at each epoch end.
std::string job(const std::string& extra = "") {
  return R"({"epochs": "4", "steps_per_epoch": "5", "batch_size": "1", "roi_size": "[32, 32, 16]",
    "val_interval": "0", "num_threads": "1", "seed": "3", "log_interval": "1",
    "checkpoint.every_steps": "2", "dist.timeout_seconds": ")" +
         std::to_string(kTimeoutSeconds) + R"(", "dist.dns_retry_seconds": "5", )" +
         testing::kSmallNetwork + extra + "}";
}

struct Ending {
  int exit_code = 0;
  double seconds = 0.0;  // after the reference time point
};

class Cluster {
 public:
  Cluster(int hosts, const std::string& hyperparameters) : lab_(hosts) {
    for (int host = 0; host < hosts; ++host) {
      roots_.push_back(std::make_unique<testing::TempDir>());
      testing::make_training_job(root(host), hyperparameters, /*cases=*/8, /*seed=*/9,
                                 lab_.resource_config(host));
    }
    pids_.assign(static_cast<size_t>(hosts), -1);
  }

  NetworkLab& lab() { return lab_; }
  int hosts() const { return lab_.hosts(); }
  std::string root(int host) const { return roots_.at(static_cast<size_t>(host))->path(); }
  std::string log(int host) const { return testing::read_text(root(host) + "/train.log"); }
  std::string failure(int host) const {
    const std::string path = root(host) + "/output/failure";
    return testing::file_exists(path) ? testing::read_text(path) : "";
  }

  void start() {
    for (int host = 0; host < hosts(); ++host) start(host);
  }
  void start(int host) {
    testing::write_text(root(host) + "/train.log", "");
    fs::remove(root(host) + "/output/failure");
    pids_[static_cast<size_t>(host)] = lab_.start_training(host, root(host));
  }

  // Waits until `host`'s log holds `text`; false after `seconds`.
  bool wait_for_log(int host, const std::string& text, double seconds = 120.0) const {
    const auto start = Clock::now();
    while (log(host).find(text) == std::string::npos) {
      if (seconds_since(start) > seconds) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  // Waits for `host`'s `medseg train` to exit, at most `seconds` (then it is killed and the
  // test fails): its exit code (minus the signal) and when it ended after `since`.
  Ending wait(int host, Clock::time_point since, double seconds = 150.0) {
    const pid_t pid = pids_.at(static_cast<size_t>(host));
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (seconds_since(since) > seconds) {
        ADD_FAILURE() << NetworkLab::host_name(host) << " did not exit within " << seconds
                      << " s:\n"
                      << log(host);
        lab_.signal_all(host, SIGKILL);
        ::waitpid(pid, &status, 0);
        return {-SIGKILL, seconds_since(since)};
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    const Ending ending{WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status),
                        seconds_since(since)};
    // Whatever ran in the host's namespace has ended with it: no orphaned worker.
    const auto settle = Clock::now();
    while (!lab_.processes(host).empty() && seconds_since(settle) < 2.0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(lab_.processes(host).empty())
        << NetworkLab::host_name(host) << " left processes behind after its exit";
    return ending;
  }

  std::vector<Ending> wait_all(Clock::time_point since, double seconds = 150.0) {
    std::vector<Ending> endings;
    for (int host = 0; host < hosts(); ++host) endings.push_back(wait(host, since, seconds));
    return endings;
  }

  // What SageMaker does before a restart: every host's checkpoint folder holds the job's S3
  // prefix, i.e. what rank 0 (the only writer) wrote.
  void share_the_checkpoints() const {
    const fs::path written = root(0) + "/checkpoints";
    for (int host = 1; host < hosts(); ++host) {
      const fs::path local = root(host) + "/checkpoints";
      fs::remove_all(local);
      fs::copy(written, local, fs::copy_options::recursive);
    }
  }

  // Restarts every host after a fault, as a new SageMaker training job attempt: all must end
  // with exit 0, and the first must say it resumed.
  void restart_and_finish() {
    share_the_checkpoints();
    start();
    const std::vector<Ending> endings = wait_all(Clock::now());
    for (int host = 0; host < hosts(); ++host) {
      EXPECT_EQ(endings[static_cast<size_t>(host)].exit_code, 0) << log(host);
    }
    EXPECT_NE(log(0).find("resumed from "), std::string::npos) << log(0);
  }

 private:
  NetworkLab lab_;
  std::vector<std::unique_ptr<testing::TempDir>> roots_;
  std::vector<pid_t> pids_;
};

// The largest |a - b| over the parameters of the models two jobs wrote (the small network, or
// the one `options` describe).
double max_weight_difference(const std::string& root_a, const std::string& root_b,
                             const std::optional<UNetOptions>& options = std::nullopt) {
  const auto weights = [&options](const std::string& root) {
    if (!options) return testing::trained_weights(root);
    UNet model(*options);
    load_model_pth(root + "/model/model.pth", *model);
    return model->parameters();
  };
  const std::vector<at::Tensor> a = weights(root_a);
  const std::vector<at::Tensor> b = weights(root_b);
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  }
  return worst;
}

// Trains the same job without faults on `hosts` hosts; the model lands in <reference>/model.
void train_uninterrupted(int hosts, const std::string& hyperparameters,
                         const testing::TempDir& reference) {
  Cluster cluster(hosts, hyperparameters);
  cluster.start();
  const std::vector<Ending> endings = cluster.wait_all(Clock::now());
  for (int host = 0; host < hosts; ++host) {
    ASSERT_EQ(endings[static_cast<size_t>(host)].exit_code, 0) << cluster.log(host);
  }
  fs::copy(cluster.root(0) + "/model", reference.path() + "/model", fs::copy_options::recursive);
}

// One line per scenario for the log (and the issue's table), then each host's failure cause.
void report(const char* scenario, const Cluster& cluster, const std::vector<Ending>& endings) {
  std::string line;
  for (size_t i = 0; i < endings.size(); ++i) {
    char part[128];
    std::snprintf(part, sizeof(part), "%s%s exit %d after %.1f s", i ? ", " : "",
                  NetworkLab::host_name(static_cast<int>(i)).c_str(), endings[i].exit_code,
                  endings[i].seconds);
    line += part;
  }
  std::printf("[ FAULTS   ] %s: %s\n", scenario, line.c_str());
  for (size_t i = 0; i < endings.size(); ++i) {
    const std::string failure = cluster.failure(static_cast<int>(i));
    if (failure.empty()) continue;
    std::printf("[ FAULTS   ]   %s: %s\n", NetworkLab::host_name(static_cast<int>(i)).c_str(),
                failure.substr(0, failure.find('\n')).substr(0, 400).c_str());
  }
}

class NetworkFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = NetworkLab::unavailable_reason();
    if (!reason.empty()) {
      std::fprintf(stderr,
                   "\n*** NetworkFaultsTest SKIPPED: the multi-host fault scenarios need network "
                   "namespaces, and %s ***\n\n",
                   reason.c_str());
      GTEST_SKIP() << reason;
    }
  }
};

// A host dies mid-step (every process on it SIGKILLed): the other two fail within the bound,
// naming a rank, their launchers stop their workers, and the restarted job ends where an
// uninterrupted one does. Two workers per host: 6 ranks.
TEST_F(NetworkFaultsTest, AHostKilledMidStepEndsTheOthersAndTheRestartResumes) {
  const std::string two_workers = job(R"(, "nproc_per_node": "2")");
  testing::TempDir reference;
  train_uninterrupted(3, two_workers, reference);
  Cluster cluster(3, two_workers);
  cluster.start();
  ASSERT_TRUE(cluster.wait_for_log(0, "epoch 2/4 step 2/5")) << cluster.log(0);
  const auto fault = Clock::now();
  cluster.lab().signal_all(2, SIGKILL);
  const std::vector<Ending> endings = cluster.wait_all(fault);
  report("algo-3 SIGKILLed", cluster, endings);
  for (int host = 0; host < 2; ++host) {
    EXPECT_NE(endings[host].exit_code, 0) << cluster.log(host);
    EXPECT_LT(endings[host].seconds, kBound) << cluster.log(host);
    EXPECT_NE(cluster.failure(host).find("rank"), std::string::npos) << cluster.failure(host);
  }
  cluster.restart_and_finish();
  EXPECT_EQ(max_weight_difference(cluster.root(0), reference.path()), 0.0);
}

// A host hangs (SIGSTOP: alive, silent): the other fails within the bound; the hung host, once
// it runs again, finds its peer gone and fails too.
TEST_F(NetworkFaultsTest, AStoppedHostEndsTheOtherAndFailsWhenItRunsAgain) {
  testing::TempDir reference;
  train_uninterrupted(2, job(), reference);
  Cluster cluster(2, job());
  cluster.start();
  ASSERT_TRUE(cluster.wait_for_log(0, "epoch 2/4 step 2/5")) << cluster.log(0);
  const auto fault = Clock::now();
  cluster.lab().signal_all(1, SIGSTOP);
  const Ending first = cluster.wait(0, fault);
  EXPECT_NE(first.exit_code, 0) << cluster.log(0);
  EXPECT_LT(first.seconds, kBound) << cluster.log(0);
  EXPECT_NE(cluster.failure(0).find("rank 0"), std::string::npos) << cluster.failure(0);
  const auto resumed = Clock::now();
  cluster.lab().signal_all(1, SIGCONT);
  const Ending second = cluster.wait(1, resumed);
  report("algo-2 SIGSTOPped (algo-2: after SIGCONT)", cluster, {first, second});
  EXPECT_NE(second.exit_code, 0) << cluster.log(1);
  EXPECT_LT(second.seconds, kBound) << cluster.log(1);
  EXPECT_NE(cluster.failure(1).find("rank 1"), std::string::npos) << cluster.failure(1);
  cluster.restart_and_finish();
  EXPECT_EQ(max_weight_difference(cluster.root(0), reference.path()), 0.0);
}

// The link to a host is cut (no reset reaches either side): both sides fail within the bound.
TEST_F(NetworkFaultsTest, ACutLinkEndsBothHostsAndTheRestartResumes) {
  testing::TempDir reference;
  train_uninterrupted(2, job(), reference);
  Cluster cluster(2, job());
  cluster.start();
  ASSERT_TRUE(cluster.wait_for_log(0, "epoch 2/4 step 2/5")) << cluster.log(0);
  const auto fault = Clock::now();
  cluster.lab().cut(1);
  const std::vector<Ending> endings = cluster.wait_all(fault);
  report("algo-2's link cut", cluster, endings);
  for (int host = 0; host < 2; ++host) {
    EXPECT_NE(endings[host].exit_code, 0) << cluster.log(host);
    EXPECT_LT(endings[host].seconds, kBound) << cluster.log(host);
    EXPECT_NE(cluster.failure(host).find("rank " + std::to_string(host)), std::string::npos)
        << cluster.failure(host);
  }
  cluster.lab().restore(1);
  cluster.restart_and_finish();
  EXPECT_EQ(max_weight_difference(cluster.root(0), reference.path()), 0.0);
}

// 30% of the frames lost and the rest 200 ms late, in both directions: slower, same weights.
TEST_F(NetworkFaultsTest, LossAndDelayMakeTrainingSlowerButNotDifferent) {
  // A tiny network and few steps: TCP through 30% loss moves a few kB/s.
  const std::string tiny = job(R"(, "epochs": "1", "steps_per_epoch": "2",
    "channels": "[4, 8]", "strides": "[2]", "num_res_units": "0", "dist.timeout_seconds": "300")");
  testing::TempDir reference;
  const auto clean_start = Clock::now();
  train_uninterrupted(2, tiny, reference);
  const double clean = seconds_since(clean_start);
  Cluster cluster(2, tiny);
  cluster.lab().impair(0.3, std::chrono::milliseconds(200));
  const auto start = Clock::now();
  cluster.start();
  const std::vector<Ending> endings = cluster.wait_all(start, 400.0);
  report("30% loss + 200 ms delay", cluster, endings);
  std::printf("[ FAULTS   ] the same job took %.1f s on a clean network, %.1f s through the "
              "impaired one (%lld frames dropped of %lld)\n",
              clean, endings[0].seconds, static_cast<long long>(cluster.lab().frames_dropped()),
              static_cast<long long>(cluster.lab().frames_dropped() +
                                     cluster.lab().frames_delivered()));
  for (int host = 0; host < 2; ++host) {
    ASSERT_EQ(endings[host].exit_code, 0) << cluster.log(host);
  }
  EXPECT_GT(cluster.lab().frames_dropped(), 0);
  UNetOptions network;
  network.channels = {4, 8};
  network.strides = {2};
  network.num_res_units = 0;
  EXPECT_EQ(max_weight_difference(cluster.root(0), reference.path(), network), 0.0);
}

// The master cannot be reached when the job starts: both hosts fail within the bound, the
// worker naming the master it could not reach; once the network is back the job trains.
TEST_F(NetworkFaultsTest, AnUnreachableMasterAtStartFailsBothHosts) {
  Cluster cluster(2, job());
  cluster.lab().cut(0);
  const auto start = Clock::now();
  cluster.start();
  const std::vector<Ending> endings = cluster.wait_all(start);
  report("algo-1 (the master) unreachable at start", cluster, endings);
  for (int host = 0; host < 2; ++host) {
    EXPECT_NE(endings[host].exit_code, 0) << cluster.log(host);
    EXPECT_LT(endings[host].seconds, kBound) << cluster.log(host);
    EXPECT_NE(cluster.failure(host).find("rank " + std::to_string(host)), std::string::npos)
        << cluster.failure(host);
  }
  EXPECT_NE(cluster.failure(1).find("10.90.0.1:29500"), std::string::npos) << cluster.failure(1);
  cluster.lab().restore(0);
  cluster.start();
  const std::vector<Ending> again = cluster.wait_all(Clock::now());
  EXPECT_EQ(again[0].exit_code, 0) << cluster.log(0);
  EXPECT_EQ(again[1].exit_code, 0) << cluster.log(1);
}

// SIGTERM to every host at once (a Spot reclaim of the whole cluster): all stop at the same step
// within SageMaker's notice, exit 0 with a checkpoint, and the restart ends where an
// uninterrupted run does.
TEST_F(NetworkFaultsTest, SigtermToEveryHostStopsThemTogetherAndTheRestartResumes) {
  testing::TempDir reference;
  train_uninterrupted(3, job(), reference);
  Cluster cluster(3, job());
  cluster.start();
  ASSERT_TRUE(cluster.wait_for_log(0, "epoch 2/4 step 3/5")) << cluster.log(0);
  const auto fault = Clock::now();
  for (int host = 0; host < 3; ++host) cluster.lab().signal_all(host, SIGTERM);
  const std::vector<Ending> endings = cluster.wait_all(fault);
  report("SIGTERM to every host", cluster, endings);
  for (int host = 0; host < 3; ++host) {
    EXPECT_EQ(endings[host].exit_code, 0) << cluster.log(host);
    EXPECT_LT(endings[host].seconds, 10.0) << cluster.log(host);
  }
  const auto stopped_at = [&cluster](int host) {
    const std::string log = cluster.log(host);
    const std::string marker = "stop requested at global step ";
    const size_t at = log.find(marker);
    return at == std::string::npos ? -1 : std::stoi(log.substr(at + marker.size()));
  };
  EXPECT_GE(stopped_at(0), 0) << cluster.log(0);
  EXPECT_EQ(stopped_at(1), stopped_at(0)) << cluster.log(1);
  EXPECT_EQ(stopped_at(2), stopped_at(0)) << cluster.log(2);
  cluster.restart_and_finish();
  EXPECT_EQ(max_weight_difference(cluster.root(0), reference.path()), 0.0);
}

}  // namespace
}  // namespace medseg

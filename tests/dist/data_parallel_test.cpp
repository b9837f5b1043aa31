// Data parallelism as users run it: `medseg train` launching workers on one host, and two hosts
// (two ML roots whose resourceconfig.json list both) rendezvousing over loopback with Gloo.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "train/training_jobs.h"

namespace medseg {
namespace {

using testing::start_training;
using testing::trained_weights;
using testing::wait_exit_code;

void make_job(const std::string& root, const std::string& hyperparameters_json,
              const std::string& resource_config = "") {
  testing::make_training_job(root, hyperparameters_json, /*cases=*/8, /*seed=*/9, resource_config);
}

std::string hyperparameters(int batch_size, int nproc, int port, const std::string& extra = "") {
  return R"({"epochs": "2", "steps_per_epoch": "3", "batch_size": ")" + std::to_string(batch_size) +
         R"(", "roi_size": "[32, 32, 16]",
    "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]", "num_res_units": "1",
    "validation_fraction": "0.25", "val_interval": "1", "num_threads": "1", "seed": "3",
    "nproc_per_node": ")" +
         std::to_string(nproc) + R"(", "dist.master_port": ")" + std::to_string(port) + "\"" +
         extra + "}";
}

// The largest |a - b| / max |b| over the parameters of the models two jobs wrote.
double max_relative_weight_difference(const std::string& root_a, const std::string& root_b) {
  const std::vector<at::Tensor> a = trained_weights(root_a);
  const std::vector<at::Tensor> b = trained_weights(root_b);
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double scale = std::max(b[i].abs().max().item<double>(), 1e-12);
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

TEST(DataParallelTest, TwoWorkersWithBatchBEqualOneWorkerWithBatch2B) {
  testing::TempDir two, one;
  // SGD: its update is linear in the gradient, so the comparison sees the gradient averaging
  // itself. (Adam divides by the root of tiny second moments and amplifies the last-bit
  // differences of summation order: 1.7e-5 relative after 6 steps here.)
  const std::string sgd = R"(, "optimizer": "sgd", "learning_rate": "0.01")";
  make_job(two.path(), hyperparameters(1, 2, testing::free_loopback_port(), sgd));
  make_job(one.path(), hyperparameters(2, 1, testing::free_loopback_port(), sgd));
  const testing::CommandResult parallel =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + two.path()});
  ASSERT_EQ(parallel.exit_code, 0) << parallel.output;
  EXPECT_NE(parallel.output.find("launching 2 workers"), std::string::npos) << parallel.output;
  EXPECT_NE(parallel.output.find("rank 0 of 2"), std::string::npos) << parallel.output;
  EXPECT_NE(parallel.output.find("gradient sync"), std::string::npos) << parallel.output;
  const testing::CommandResult single =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + one.path()});
  ASSERT_EQ(single.exit_code, 0) << single.output;

  const double worst = max_relative_weight_difference(two.path(), one.path());
  std::printf("[ DDP      ] max relative weight difference after 6 steps: %.3g\n", worst);
  EXPECT_LT(worst, 1e-5);
  // Validation was sharded over the ranks and reduced: the same Dice as one process.
  const auto dice = [](const std::string& root) {
    return nlohmann::json::parse(
               testing::read_text(root + "/model/metrics.json"))["best_val_mean_dice"]
        .get<double>();
  };
  EXPECT_NEAR(dice(two.path()), dice(one.path()), 1e-4);
}

TEST(DataParallelTest, SigtermToTheLauncherStopsEveryWorkerAtTheSameStep) {
  testing::TempDir root;
  make_job(root.path(), hyperparameters(1, 2, testing::free_loopback_port(), R"(, "epochs": "1000",
    "val_interval": "0", "log_interval": "1")"));
  const pid_t launcher = start_training(root.path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::read_text(root.file("train.log")).find("epoch 3/") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(launcher, SIGTERM);
  EXPECT_EQ(wait_exit_code(launcher), 0) << testing::read_text(root.file("train.log"));
  EXPECT_TRUE(testing::file_exists(root.file("model/model.pth")));
  const std::string log = testing::read_text(root.file("train.log"));
  const auto step_of = [&log](const std::string& rank) {
    const std::string marker = "[rank " + rank + "] stop requested at global step ";
    const size_t at = log.find(marker);
    return at == std::string::npos ? -1 : std::stoi(log.substr(at + marker.size()));
  };
  EXPECT_GE(step_of("0"), 0) << log;
  EXPECT_EQ(step_of("0"), step_of("1")) << log;
}

// Two hosts on this machine: "127.0.0.1" (hosts[0], the master) and "localhost".
std::string resource_config(const std::string& current_host) {
  return R"({"current_host": ")" + current_host +
         R"(", "hosts": ["127.0.0.1", "localhost"], "network_interface_name": "lo"})";
}

TEST(DataParallelTest, TwoHostsTrainToCompletionAndOnlyTheFirstWritesTheModel) {
  testing::TempDir first, second;
  const int port = testing::free_loopback_port();
  make_job(first.path(), hyperparameters(1, 1, port), resource_config("127.0.0.1"));
  make_job(second.path(), hyperparameters(1, 1, port), resource_config("localhost"));
  const pid_t host1 = start_training(first.path());
  const pid_t host2 = start_training(second.path());
  EXPECT_EQ(wait_exit_code(host1), 0) << testing::read_text(first.file("train.log"));
  EXPECT_EQ(wait_exit_code(host2), 0) << testing::read_text(second.file("train.log"));
  EXPECT_TRUE(testing::file_exists(first.file("model/model.pth")));
  EXPECT_FALSE(testing::file_exists(second.file("model/model.pth")));
  EXPECT_NE(testing::read_text(first.file("train.log")).find("rank 0 of 2 (gloo backend, 2 hosts"),
            std::string::npos)
      << testing::read_text(first.file("train.log"));
}

// ShardedByS3Key: the hosts hold different cases, and different numbers of them. They agree on
// the steps per epoch (all training cases once per epoch), finish together, and the validation
// Dice covers the validation cases of both.
TEST(DataParallelTest, HostsWithDifferentCasesAgreeOnStepsAndValidateAll) {
  testing::TempDir first, second;
  const int port = testing::free_loopback_port();
  const std::string job = std::string(R"({"epochs": "2", "batch_size": "1",
    "roi_size": "[32, 32, 16]", "validation_fraction": "0.25", "val_interval": "1",
    "num_threads": "1", "seed": "3", "dist.timeout_seconds": "30", "dist.master_port": ")") +
                          std::to_string(port) + "\", " + testing::kSmallNetwork + "}";
  const std::string sharded = R"({"train": {"TrainingInputMode": "File",
                                            "S3DistributionType": "ShardedByS3Key"}})";
  // 6 cases -> 4 training + 2 validation; 3 cases -> 2 + 1.
  testing::make_training_job(first.path(), job, /*cases=*/6, /*seed=*/1,
                             resource_config("127.0.0.1"));
  testing::make_training_job(second.path(), job, /*cases=*/3, /*seed=*/2,
                             resource_config("localhost"));
  testing::write_text(first.file("input/config/inputdataconfig.json"), sharded);
  testing::write_text(second.file("input/config/inputdataconfig.json"), sharded);
  const pid_t host1 = start_training(first.path());
  const pid_t host2 = start_training(second.path());
  ASSERT_EQ(wait_exit_code(host1), 0) << testing::read_text(first.file("train.log"));
  ASSERT_EQ(wait_exit_code(host2), 0) << testing::read_text(second.file("train.log"));
  const std::string log = testing::read_text(first.file("train.log"));
  EXPECT_NE(log.find("hosts hold different cases: each host's 1 workers train on its own 4 cases; "
                     "steps per epoch count all 6 training cases of the 2 hosts; validation Dice "
                     "is over all 3 validation cases"),
            std::string::npos)
      << log;
  // 6 training cases / (batch 1 x 2 workers) = 3 steps per epoch.
  EXPECT_NE(log.find("training: 2 epochs x 3 steps"), std::string::npos) << log;
  EXPECT_NE(log.find("validation: mean Dice"), std::string::npos) << log;
  EXPECT_NE(log.find(") on 3 cases"), std::string::npos) << log;
  EXPECT_TRUE(testing::file_exists(first.file("model/model.pth")));
}

// A host that got no cases (more hosts than ShardedByS3Key objects): it fails with a ClientError
// naming its channel, and the other host fails at once instead of waiting for it.
TEST(DataParallelTest, AHostWithoutCasesFailsAndTheOtherDoesNotWait) {
  testing::TempDir first, second;
  const int port = testing::free_loopback_port();
  const std::string job = hyperparameters(1, 1, port);
  make_job(first.path(), job, resource_config("127.0.0.1"));
  testing::make_ml_root(second.path(), job, R"({"train": {"TrainingInputMode": "File"}})",
                        resource_config("localhost"));
  std::filesystem::create_directories(second.file("input/data/train"));
  const auto started = std::chrono::steady_clock::now();
  const pid_t host1 = start_training(first.path());
  const pid_t host2 = start_training(second.path());
  EXPECT_EQ(wait_exit_code(host2), 2) << testing::read_text(second.file("train.log"));
  EXPECT_NE(wait_exit_code(host1), 0) << testing::read_text(first.file("train.log"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LT(seconds, 60.0);
  std::printf("[ DDP      ] both hosts ended %.2f s after the start\n", seconds);
  const std::string failure = testing::read_text(second.file("output/failure"));
  EXPECT_NE(failure.find(second.file("input/data/train")), std::string::npos) << failure;
}

TEST(DataParallelTest, AHostThatDiesMakesTheOtherFailCleanly) {
  testing::TempDir first, second;
  const int port = testing::free_loopback_port();
  const std::string long_run =
      hyperparameters(1, 1, port, R"(, "epochs": "1000", "log_interval": "1",
    "dist.timeout_seconds": "20")");
  make_job(first.path(), long_run, resource_config("127.0.0.1"));
  make_job(second.path(), long_run, resource_config("localhost"));
  const pid_t host1 = start_training(first.path());
  const pid_t host2 = start_training(second.path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::read_text(first.file("train.log")).find("epoch 2/") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto killed = std::chrono::steady_clock::now();
  kill(host2, SIGKILL);
  wait_exit_code(host2);
  const int code = wait_exit_code(host1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_NE(code, 0);
  EXPECT_LT(seconds, 30.0);
  std::printf("[ DDP      ] surviving host failed %.2f s after its peer died\n", seconds);
  const std::string failure = testing::read_text(first.file("output/failure"));
  EXPECT_NE(failure.find("PlatformError"), std::string::npos) << failure;
  EXPECT_NE(failure.find("rank"), std::string::npos) << failure;
}

// Two GPUs, two NCCL workers with batch 1 end with the weights of one GPU with batch 2.
TEST(GpuDataParallelTest, TwoNcclWorkersWithBatch1EqualOneWorkerWithBatch2) {
  MEDSEG_REQUIRE_CUDA_DEVICES(2);
  testing::TempDir two, one;
  const std::string sgd_on_gpu =
      R"(, "optimizer": "sgd", "learning_rate": "0.01", "device": "cuda", "amp": "off")";
  make_job(two.path(), hyperparameters(1, 2, testing::free_loopback_port(), sgd_on_gpu));
  make_job(one.path(), hyperparameters(2, 1, testing::free_loopback_port(), sgd_on_gpu));
  const testing::CommandResult parallel =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + two.path(), "NVIDIA_TF32_OVERRIDE=0"});
  ASSERT_EQ(parallel.exit_code, 0) << parallel.output;
  EXPECT_NE(parallel.output.find("(nccl backend"), std::string::npos) << parallel.output;
  const testing::CommandResult single =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + one.path(), "NVIDIA_TF32_OVERRIDE=0"});
  ASSERT_EQ(single.exit_code, 0) << single.output;
  const double worst = max_relative_weight_difference(two.path(), one.path());
  std::printf("[ GPU DDP  ] max relative weight difference after 6 steps: %.3g\n", worst);
  EXPECT_LT(worst, 1e-4);
}

}  // namespace
}  // namespace medseg

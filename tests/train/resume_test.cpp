// Spot safety as a user sees it: a training job killed with SIGKILL at arbitrary moments and
// restarted (as SageMaker restarts an interrupted Spot job, with the checkpoint folder kept) ends
// with exactly the weights of an uninterrupted run; SIGTERM writes a checkpoint and the model and
// exits 0; a checkpoint from another configuration is refused.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "train/training_jobs.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;
using testing::start_training;
using testing::trained_weights;
using testing::wait_exit_code;

void make_job(const std::string& root, const std::string& hyperparameters) {
  testing::make_training_job(root, hyperparameters, /*cases=*/6, /*seed=*/5);
}

// Checkpoint after every step so kills land before, during and after checkpoint writes.
const char* const kResumableRun = R"({
  "epochs": "24", "steps_per_epoch": "6", "batch_size": "2", "roi_size": "[32, 32, 16]",
  "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]", "num_res_units": "1",
  "validation_fraction": "0.25", "val_interval": "2", "log_interval": "1",
  "checkpoint_every_steps": "1", "num_threads": "2", "seed": "11"})";

TEST(ResumeTest, KilledAtRandomMomentsAndRestartedEndsWithIdenticalWeights) {
  testing::TempDir reference;
  make_job(reference.path(), kResumableRun);
  ASSERT_EQ(wait_exit_code(start_training(reference.path())), 0)
      << testing::read_text(reference.file("train.log"));

  testing::TempDir interrupted;
  make_job(interrupted.path(), kResumableRun);
  std::mt19937 random(20261122);
  int kills = 0;
  int restarts = 0;
  while (true) {
    ASSERT_LT(restarts++, 40) << "the job never completed";
    // Each SageMaker restart is a fresh container: only the checkpoint folder survives.
    fs::remove_all(interrupted.file("model"));
    fs::remove_all(interrupted.file("output"));
    fs::create_directories(interrupted.file("model"));
    const size_t checkpoints_before = testing::count_occurrences(
        testing::read_text(interrupted.file("train.log")), "info checkpoint step");
    const pid_t child = start_training(interrupted.path());
    if (kills < 10) {
      // Let the job make progress (a new checkpoint), then kill it at a random moment of the
      // following steps: in a step, during a checkpoint write, in validation.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (testing::count_occurrences(testing::read_text(interrupted.file("train.log")),
                                        "info checkpoint step") == checkpoints_before &&
             waitpid(child, nullptr, WNOHANG) == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 250)(random)));
      kill(child, SIGKILL);
    }
    const int code = wait_exit_code(child);
    if (code == -SIGKILL) {
      ++kills;
      continue;
    }
    ASSERT_EQ(code, 0) << testing::read_text(interrupted.file("train.log"));
    if (testing::file_exists(interrupted.file("model/model.pth"))) break;
  }
  EXPECT_GE(kills, 10);
  std::printf("[ RESUME   ] %d SIGKILLs, %d starts in all\n", kills, restarts);
  const std::string log = testing::read_text(interrupted.file("train.log"));
  EXPECT_NE(log.find("resumed from"), std::string::npos) << log;

  const std::vector<at::Tensor> expected = trained_weights(reference.path());
  const std::vector<at::Tensor> actual = trained_weights(interrupted.path());
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(at::equal(expected[i], actual[i])) << "parameter " << i << " differs";
  }
  // The metrics of the resumed job tell the same story as the reference's; only the summary's
  // account of where this run's time, memory and checkpoints went is the last start's own.
  const auto story = [](const std::string& path) {
    nlohmann::json metrics = nlohmann::json::parse(testing::read_text(path));
    for (const char* per_run :
         {"seconds", "checkpoints", "peak_memory_mib", "samples_per_second", "validation_share"}) {
      EXPECT_TRUE(metrics["summary"].contains(per_run)) << per_run;
      metrics["summary"].erase(per_run);
    }
    return metrics.dump(2);
  };
  EXPECT_EQ(story(reference.file("model/metrics.json")),
            story(interrupted.file("model/metrics.json")));
}

TEST(ResumeTest, SigtermWritesACheckpointThatTheNextRunResumes) {
  testing::TempDir root;
  make_job(root.path(), R"({"epochs": "50", "steps_per_epoch": "4", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "0", "log_interval": "1",
    "checkpoint_every_minutes": "0"})");
  const pid_t child = start_training(root.path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::read_text(root.file("train.log")).find("epoch 2/50 step 2/4") ==
             std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(child, SIGTERM), 0);
  ASSERT_EQ(wait_exit_code(child), 0) << testing::read_text(root.file("train.log"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  EXPECT_LT(seconds, 10.0);
  std::printf("[ SIGTERM  ] signal to exit: %.2f s\n", seconds);
  EXPECT_TRUE(testing::file_exists(root.file("model/model.pth")));
  const std::string log = testing::read_text(root.file("train.log"));
  EXPECT_NE(log.find("stop requested"), std::string::npos) << log;

  // The next start continues from the stop checkpoint instead of starting over.
  testing::write_text(root.file("train.log"), "");
  const pid_t again = start_training(root.path());
  std::this_thread::sleep_for(std::chrono::seconds(3));
  kill(again, SIGTERM);
  wait_exit_code(again);
  const std::string resumed_log = testing::read_text(root.file("train.log"));
  EXPECT_NE(resumed_log.find("resumed from"), std::string::npos) << resumed_log;
  EXPECT_EQ(resumed_log.find("epoch 1/50 step 1/4"), std::string::npos) << resumed_log;
}

TEST(ResumeTest, CheckpointOfAnotherModelIsRefusedWithTheDifference) {
  testing::TempDir root;
  make_job(root.path(), R"({"epochs": "1", "steps_per_epoch": "1", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "0"})");
  ASSERT_EQ(wait_exit_code(start_training(root.path())), 0);
  testing::write_text(root.file("input/config/hyperparameters.json"),
                      R"({"epochs": "2", "steps_per_epoch": "1", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 128]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "0"})");
  EXPECT_EQ(wait_exit_code(start_training(root.path())), 2);
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_NE(failure.find("another model or data configuration"), std::string::npos) << failure;
  EXPECT_NE(failure.find("model.channels"), std::string::npos) << failure;
}

}  // namespace
}  // namespace medseg

// SIGTERM (StopTrainingJob, MaxRuntime, a Spot interruption) in the long phases between steps:
// building the record cache, validating, writing checkpoints. Each time the job exits 0 within
// 10 s, loses nothing it had finished, and the next start goes on from there.
#include <gtest/gtest.h>
#include <signal.h>

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
using testing::wait_exit_code;

// Waits (at most 120 s) until the job's log shows `line`; false if it exited or never did.
bool wait_for_log(const std::string& root, const std::string& line) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (testing::read_text(root + "/train.log").find(line) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// SIGTERM to `child`; its exit code, and the seconds from the signal to the exit.
std::pair<int, double> stop(pid_t child) {
  const auto signalled = std::chrono::steady_clock::now();
  kill(child, SIGTERM);
  const int code = wait_exit_code(child);
  return {code, std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count()};
}

TEST(StopTest, SigtermWhileBuildingTheRecordCacheExitsAndTheNextStartBuildsIt) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"epochs": "1", "steps_per_epoch": "1",
    "batch_size": "1", "roi_size": "[32, 32, 16]", )" + std::string(testing::kSmallNetwork) +
                                         R"(, "val_interval": "0", "num_threads": "2"})",
                        R"({"train": {"TrainingInputMode": "File"}})");
  SynthOptions synth;
  synth.out_dir = root.file("input/data/train");
  synth.cases = 16;
  synth.shape = {160, 160, 100};
  write_synthetic_dataset(synth);

  const pid_t child = start_training(root.path());
  ASSERT_TRUE(wait_for_log(root.path(), "preprocess: 16 of 16 cases"))
      << testing::read_text(root.file("train.log"));
  const auto [code, seconds] = stop(child);
  const std::string log = testing::read_text(root.file("train.log"));
  EXPECT_EQ(code, 0) << log;
  EXPECT_LT(seconds, 10.0) << log;
  std::printf("[ SIGTERM  ] building the record cache: signal to exit %.2f s\n", seconds);
  EXPECT_NE(log.find("stop requested while building the record cache of channel 'train' ("),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("preprocessed once for this host"), std::string::npos) << log;
  EXPECT_FALSE(testing::file_exists(root.file("output/failure")));

  testing::write_text(root.file("train.log"), "");
  ASSERT_EQ(wait_exit_code(start_training(root.path())), 0)
      << testing::read_text(root.file("train.log"));
  EXPECT_NE(testing::read_text(root.file("train.log"))
                .find("record cache: channel 'train' preprocessed once for this host: 16 cases"),
            std::string::npos);
}

TEST(StopTest, SigtermDuringValidationKeepsTheEpochAndTheNextStartValidatesItFirst) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"epochs": "2", "steps_per_epoch": "2",
    "batch_size": "2", "roi_size": "[32, 32, 16]", )" + std::string(testing::kSmallNetwork) +
                                         R"(, "val_interval": "1", "num_threads": "2",
    "checkpoint_every_minutes": "0", "pixdim": "[1.0, 1.0, 1.0]"})",
                        R"({"train": {"TrainingInputMode": "File"},
                            "validation": {"TrainingInputMode": "File"}})");
  SynthOptions synth;
  synth.out_dir = root.file("input/data/train");
  synth.cases = 4;
  synth.shape = {64, 64, 48};
  write_synthetic_dataset(synth);
  synth.out_dir = root.file("input/data/validation");
  synth.cases = 6;
  synth.shape = {160, 160, 96};  // about 400 windows per case: seconds of validation
  write_synthetic_dataset(synth);

  const pid_t child = start_training(root.path());
  ASSERT_TRUE(wait_for_log(root.path(), "epoch 1: validating 6 cases"))
      << testing::read_text(root.file("train.log"));
  const auto [code, seconds] = stop(child);
  const std::string log = testing::read_text(root.file("train.log"));
  EXPECT_EQ(code, 0) << log;
  EXPECT_LT(seconds, 10.0) << log;
  std::printf("[ SIGTERM  ] validating: signal to exit %.2f s\n", seconds);
  EXPECT_NE(log.find("stop requested during the validation of epoch 1"), std::string::npos) << log;
  EXPECT_EQ(log.find("epoch 1 validation: mean Dice"), std::string::npos) << log;
  EXPECT_TRUE(testing::file_exists(root.file("model/model.pth")));

  // The next start resumes after epoch 1, validates it, then trains epoch 2.
  testing::write_text(root.file("train.log"), "");
  ASSERT_EQ(wait_exit_code(start_training(root.path())), 0)
      << testing::read_text(root.file("train.log"));
  const std::string resumed = testing::read_text(root.file("train.log"));
  EXPECT_NE(resumed.find("epoch 1 was not validated before the restart: validating it now"),
            std::string::npos)
      << resumed;
  EXPECT_EQ(resumed.find("epoch 1/2 step"), std::string::npos) << resumed;
  EXPECT_NE(resumed.find("epoch 2/2 step 2/2"), std::string::npos) << resumed;
  std::vector<int> validated;
  std::istringstream lines(testing::read_text(root.file("output/data/metrics.jsonl")));
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    if (entry.value("type", "") == "validation") validated.push_back(entry["epoch"].get<int>());
  }
  EXPECT_EQ(validated, (std::vector<int>{1, 2}));
}

// The default network's checkpoint (weights and Adam moments, about 58 MB, fsync'ed) takes most
// of each step at a tiny crop, so the signals land during checkpoint writes.
TEST(StopTest, SigtermDuringCheckpointWritesExitsWithAValidCheckpoint) {
  std::mt19937 random(20261202);
  for (int trial = 0; trial < 3; ++trial) {
    SCOPED_TRACE(trial);
    testing::TempDir root;
    testing::make_training_job(root.path(), R"({"epochs": "100", "steps_per_epoch": "5",
      "batch_size": "1", "roi_size": "[16, 16, 16]", "val_interval": "0", "log_interval": "1",
      "checkpoint_every_steps": "1", "num_threads": "2"})",
                               /*cases=*/3, /*seed=*/1);
    const pid_t child = start_training(root.path());
    ASSERT_TRUE(wait_for_log(root.path(), "checkpoint step 3"))
        << testing::read_text(root.file("train.log"));
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 400)(random)));
    const auto [code, seconds] = stop(child);
    const std::string log = testing::read_text(root.file("train.log"));
    EXPECT_EQ(code, 0) << log;
    EXPECT_LT(seconds, 10.0) << log;
    std::printf("[ SIGTERM  ] writing checkpoints: signal to exit %.2f s\n", seconds);
    EXPECT_NE(log.find("stop requested"), std::string::npos) << log;
    // The next start resumes from the newest checkpoint (a valid one).
    testing::write_text(root.file("train.log"), "");
    const pid_t again = start_training(root.path());
    ASSERT_TRUE(wait_for_log(root.path(), "resumed from"))
        << testing::read_text(root.file("train.log"));
    kill(again, SIGTERM);
    EXPECT_EQ(wait_exit_code(again), 0) << testing::read_text(root.file("train.log"));
  }
}

}  // namespace
}  // namespace medseg

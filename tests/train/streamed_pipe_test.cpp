// Pipe mode as SageMaker delivers it (data/streamed_epochs.h): a feeder plays SageMaker's part,
// creating train_0, train_1, ... one after another, each streaming the channel's record shards
// in RecordIO frames, and `medseg train` reads one FIFO per epoch (after a first one to count the
// records), with one reader per FIFO however many workers the host runs, and resumes mid-epoch.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>

#include "test_support.h"
#include "train/pipe_feeder.h"
#include "train/training_jobs.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;
using testing::PipeFeeder;

// Record shards of `cases` synthetic cases, back to back, as Pipe mode streams a channel's S3
// objects.
std::string record_stream(const testing::TempDir& dir, int cases) {
  SynthOptions synth;
  synth.out_dir = dir.file("nifti");
  synth.cases = cases;
  synth.shape = {48, 48, 32};
  write_synthetic_dataset(synth);
  const testing::CommandResult result =
      testing::run_medseg({"preprocess", "--input", dir.file("nifti"), "--output",
                           dir.file("records"), "--ml-root", dir.file("processing")});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  std::string stream;
  for (const auto& entry : fs::directory_iterator(dir.file("records"))) {
    if (entry.path().extension() == ".medrec") stream += testing::read_text(entry.path());
  }
  EXPECT_FALSE(stream.empty());
  return stream;
}

constexpr const char* kPipeChannel =
    R"({"train": {"TrainingInputMode": "Pipe", "RecordWrapperType": "RecordIO",
                  "S3DistributionType": "FullyReplicated"}})";

std::string hyperparameters(const std::string& extra) {
  return std::string(R"({"epochs": "3", "batch_size": "2", "roi_size": "[32, 32, 16]", )") +
         testing::kSmallNetwork +
         R"(, "validation_fraction": "0.2", "val_interval": "3", "log_interval": "1",
             "shuffle_buffer": "3", "num_threads": "1", "seed": "7")" +
         extra + "}";
}

// `medseg train` on the ML root `ml` while a feeder streams `stream`; also how many FIFOs the
// feeder saw read.
std::pair<testing::CommandResult, int> train_fed(const std::string& ml, const std::string& stream) {
  PipeFeeder feeder(ml + "/input/data", stream);
  testing::CommandResult result = testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + ml});
  return {result, feeder.fifos_read()};
}

TEST(StreamedPipeTest, EveryEpochStreamsItsOwnFifoThroughTheShuffleBuffer) {
  testing::TempDir dir;
  const std::string stream = record_stream(dir, 10);
  testing::make_ml_root(dir.file("ml"), hyperparameters(""), kPipeChannel);
  const auto [result, fifos] = train_fed(dir.file("ml"), stream);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  // The counting pass, then one FIFO per epoch.
  EXPECT_EQ(fifos, 4) << result.output;
  EXPECT_NE(result.output.find("every epoch reads the next FIFO through a shuffle buffer of 3"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("read once and shared"), std::string::npos) << result.output;
  EXPECT_TRUE(testing::file_exists(dir.file("ml/model/model.pth")));
}

// A host's two workers: the first reads each of SageMaker's FIFOs and passes the bytes on, and
// both train on the same draws (had both opened a FIFO, they would have split its bytes and
// read corrupt records).
TEST(StreamedPipeTest, TwoWorkersOfAHostShareOneReaderPerFifo) {
  testing::TempDir dir;
  const std::string stream = record_stream(dir, 10);
  testing::make_ml_root(dir.file("ml"),
                        hyperparameters(R"(, "nproc_per_node": "2", "dist.master_port": ")" +
                                        std::to_string(testing::free_loopback_port()) + "\""),
                        kPipeChannel);
  const auto [result, fifos] = train_fed(dir.file("ml"), stream);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(fifos, 4) << result.output;
  EXPECT_EQ(result.output.find("hosts hold different cases"), std::string::npos) << result.output;
  EXPECT_TRUE(testing::file_exists(dir.file("ml/model/model.pth")));
}

// A job over a Pipe channel of `records` records with `extra` hyperparameters that must fail
// with a ClientError: its failure file.
std::string streamed_failure(int records, const std::string& extra) {
  testing::TempDir dir;
  const std::string stream = record_stream(dir, records);
  testing::make_ml_root(dir.file("ml"), hyperparameters(extra), kPipeChannel);
  PipeFeeder feeder(dir.file("ml/input/data"), stream);
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + dir.file("ml")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  return testing::read_text(dir.file("ml/output/failure"));
}

TEST(StreamedPipeTest, MoreStepsThanTheStreamHoldsIsAClientErrorNamingTheKey) {
  const std::string failure = streamed_failure(6, R"(, "steps_per_epoch": "50")");
  EXPECT_NE(failure.find("train.steps_per_epoch = 50"), std::string::npos) << failure;
  EXPECT_NE(failure.find("each is used at most once per epoch"), std::string::npos) << failure;
}

TEST(StreamedPipeTest, RecordsTheModelCannotTakeAreAClientErrorNamingTheCase) {
  const std::string failure = streamed_failure(4, R"(, "model.in_channels": "3")");
  EXPECT_NE(failure.find("train_0"), std::string::npos) << failure;
  EXPECT_NE(failure.find("has 4 image and 3 label channels; the model expects model.in_channels = 3"),
            std::string::npos)
      << failure;
}

// Spot: killed mid-epoch and restarted in a fresh container (its FIFOs start again at train_0),
// the job replays the epoch's draws up to its checkpoint and ends with the weights of a run that
// was never interrupted (the feeder streams the same bytes every epoch).
TEST(StreamedPipeTest, KilledMidEpochAndRestartedEndsWithTheWeightsOfAnUninterruptedRun) {
  testing::TempDir data;
  const std::string stream = record_stream(data, 12);
  const std::string job = hyperparameters(R"(, "checkpoint_every_steps": "1")");
  testing::TempDir reference;
  testing::make_ml_root(reference.path(), job, kPipeChannel);
  {
    PipeFeeder feeder(reference.file("input/data"), stream);
    ASSERT_EQ(testing::wait_exit_code(testing::start_training(reference.path())), 0)
        << testing::read_text(reference.file("train.log"));
  }
  testing::TempDir interrupted;
  testing::make_ml_root(interrupted.path(), job, kPipeChannel);
  int kills = 0;
  for (int start = 0; start < 10; ++start) {
    fs::remove_all(interrupted.file("model"));
    fs::create_directories(interrupted.file("model"));
    PipeFeeder feeder(interrupted.file("input/data"), stream);
    const size_t before = testing::count_occurrences(
        testing::read_text(interrupted.file("train.log")), "info checkpoint step");
    const pid_t child = testing::start_training(interrupted.path());
    if (kills < 2) {
      // Two new checkpoints into this start (mid-epoch: an epoch has several steps), then kill.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      while (testing::count_occurrences(testing::read_text(interrupted.file("train.log")),
                                        "info checkpoint step") < before + 2 &&
             waitpid(child, nullptr, WNOHANG) == 0 &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      kill(child, SIGKILL);
    }
    const int code = testing::wait_exit_code(child);
    if (code == -SIGKILL) {
      ++kills;
      continue;
    }
    ASSERT_EQ(code, 0) << testing::read_text(interrupted.file("train.log"));
    break;
  }
  EXPECT_EQ(kills, 2);
  const std::string log = testing::read_text(interrupted.file("train.log"));
  EXPECT_NE(log.find("resumed from"), std::string::npos) << log;
  const std::vector<at::Tensor> expected = testing::trained_weights(reference.path());
  const std::vector<at::Tensor> actual = testing::trained_weights(interrupted.path());
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(at::equal(expected[i], actual[i])) << "parameter " << i << " differs";
  }
}

}  // namespace
}  // namespace medseg

// A training job's memory does not grow with its data set: the training cases are mapped record
// shards (shared through the page cache, evictable), not decoded copies in each worker. The job
// runs inside a memory cgroup whose limit is a fraction of the data set's decoded size, with one
// and with two workers on the host; a job that held the data in its own memory is killed there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "io/medseg_record.h"
#include "test_support.h"
#include "train/pipe_feeder.h"
#include "train/training_jobs.h"

namespace medseg {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// A memory cgroup (v1, as root) limited to `limit_bytes`, removed at the end; path() is empty
// when this machine cannot make one.
class MemoryCgroup {
 public:
  explicit MemoryCgroup(int64_t limit_bytes) {
    const std::string path = "/sys/fs/cgroup/memory/medseg-test-" + std::to_string(::getpid());
    std::error_code error;
    if (!std::filesystem::create_directory(path, error)) return;
    path_ = path;
    testing::write_text(path_ + "/memory.limit_in_bytes", std::to_string(limit_bytes));
  }
  ~MemoryCgroup() {
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  int64_t peak_bytes() const {
    return std::stoll(testing::read_text(path_ + "/memory.max_usage_in_bytes"));
  }

 private:
  std::string path_;
};

// Record shards of `cases` cases of 4 x 128 x 128 x 96 float32 voxels (about 30 MiB each).
int64_t write_large_record_set(const std::string& folder, int cases) {
  std::filesystem::create_directories(folder);
  int64_t bytes = 0;
  for (int n = 0; n < cases; ++n) {
    CaseData data;
    data.case_id = "large_" + std::to_string(n);
    data.spatial_shape = {128, 128, 96};
    data.image_channels = 4;
    data.label_channels = 3;
    const int64_t voxels = data.voxels_per_channel();
    data.image.resize(static_cast<size_t>(4 * voxels));
    for (size_t i = 0; i < data.image.size(); ++i) data.image[i] = static_cast<float>(i % 97) / 97;
    data.label.assign(static_cast<size_t>(3 * voxels), 0);
    for (size_t i = 0; i < data.label.size(); i += 5) data.label[i] = 1;
    write_record_file(folder + "/cases-" + std::to_string(n) + ".medrec", {data});
    bytes += 7 * voxels * static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

// "<number> MiB private" from the job's memory line: the largest of its workers' private memory.
double private_mib(const std::string& log) {
  std::smatch match;
  const std::regex pattern("now holds ([0-9]+) MiB private");
  return std::regex_search(log, match, pattern) ? std::stod(match[1]) : -1.0;
}

// `medseg train` on `root`, inside `cgroup` when this machine made one.
testing::CommandResult train_in(const MemoryCgroup& cgroup, const std::string& root) {
  std::string command = "env MEDSEG_ML_ROOT=" + root + " " + MEDSEG_BINARY + " train";
  if (!cgroup.path().empty()) {
    command = "sh -c 'echo $$ > " + cgroup.path() + "/cgroup.procs && exec " + command + "'";
  }
  return testing::run_shell(command + " 2>&1");
}

// Prints and checks what the job held: its private memory (from its log) under data_bytes /
// `share`, the host's peak within the cgroup's limit.
void expect_bounded(const std::string& what, const MemoryCgroup& cgroup, int64_t limit,
                    int64_t data_bytes, int share, const std::string& log) {
  const double private_memory = private_mib(log);
  std::printf("[ MEMORY   ] %s, %.0f MiB of decoded training data: %s, private %.0f MiB per worker\n",
              what.c_str(), static_cast<double>(data_bytes) / kMiB,
              cgroup.path().empty()
                  ? "no memory cgroup here"
                  : ("host peak " + std::to_string(cgroup.peak_bytes() / kMiB) + " MiB under a " +
                     std::to_string(limit / kMiB) + " MiB limit")
                        .c_str(),
              private_memory);
  EXPECT_GE(private_memory, 0.0) << log;
  EXPECT_LT(private_memory * kMiB, data_bytes / share) << log;
  if (!cgroup.path().empty()) EXPECT_LE(cgroup.peak_bytes(), limit);
}

TEST(BoundedMemoryTest, TrainsOnFourTimesItsMemoryLimitWithOneAndTwoWorkers) {
  testing::TempDir dir;
  const int64_t data_bytes = write_large_record_set(dir.file("records"), 40);
  for (const int workers : {1, 2}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    const int64_t limit = data_bytes / 4;  // about 300 MiB for the whole host
    MemoryCgroup cgroup(limit);
    const std::string hyperparameters =
        std::string(R"({"epochs": "2", "steps_per_epoch": "4", "batch_size": "1",
          "roi_size": "[32, 32, 16]", "validation_fraction": "0", "val_interval": "0",
          "num_threads": "1", "nproc_per_node": ")") +
        std::to_string(workers) + R"(", "dist.master_port": ")" +
        std::to_string(testing::free_loopback_port()) + "\", " + testing::kSmallNetwork + "}";
    const std::string root = dir.file("ml-" + std::to_string(workers));
    testing::make_ml_root(root, hyperparameters, R"({"train": {"TrainingInputMode": "File"}})");
    std::filesystem::create_directories(root + "/input/data");
    std::filesystem::create_directory_symlink(dir.file("records"), root + "/input/data/train");
    const testing::CommandResult result = train_in(cgroup, root);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    expect_bounded("File mode, " + std::to_string(workers) + " workers", cgroup, limit, data_bytes,
                   8, result.output);
  }
}

// Pipe mode streamed epoch by epoch: the same records arrive through one FIFO per epoch (a
// feeder outside the cgroup plays SageMaker), and a worker holds its shuffle buffer and the
// samples being cropped, not the data set. Every epoch streams the whole set (automatic steps).
TEST(BoundedMemoryTest, StreamsPipeModeEpochsOfFourTimesItsMemoryLimitWithOneAndTwoWorkers) {
  testing::TempDir dir;
  constexpr int kCases = 60;
  const int64_t data_bytes = write_large_record_set(dir.file("records"), kCases);
  std::string stream;
  for (int n = 0; n < kCases; ++n) {
    stream += testing::read_text(dir.file("records/cases-" + std::to_string(n) + ".medrec"));
  }
  for (const int workers : {1, 2}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    const int64_t limit = data_bytes / 4;
    MemoryCgroup cgroup(limit);
    const std::string hyperparameters =
        std::string(R"({"epochs": "2", "batch_size": "1", "shuffle_buffer": "2",
          "roi_size": "[32, 32, 16]", "validation_fraction": "0", "val_interval": "0",
          "num_threads": "1", "nproc_per_node": ")") +
        std::to_string(workers) + R"(", "dist.master_port": ")" +
        std::to_string(testing::free_loopback_port()) + "\", " + testing::kSmallNetwork + "}";
    const std::string root = dir.file("pipe-" + std::to_string(workers));
    testing::make_ml_root(root, hyperparameters,
                          R"({"train": {"TrainingInputMode": "Pipe", "RecordWrapperType": "RecordIO"}})");
    std::filesystem::create_directories(root + "/input/data");
    testing::CommandResult result;
    int fifos = 0;
    {
      testing::PipeFeeder feeder(root + "/input/data", stream);
      result = train_in(cgroup, root);
      fifos = feeder.fifos_read();
    }
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_EQ(fifos, 3) << result.output;  // the count, then one per epoch
    EXPECT_NE(result.output.find("2 epochs x " + std::to_string(kCases / workers) + " steps"),
              std::string::npos)
        << result.output;
    expect_bounded("Pipe mode, " + std::to_string(workers) + " workers, streamed every epoch",
                   cgroup, limit, data_bytes, 4, result.output);
  }
}

}  // namespace
}  // namespace medseg

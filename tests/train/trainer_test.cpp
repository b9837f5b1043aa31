// End-to-end training as SageMaker runs it: `medseg train` on an ML root with a synthetic
// Decathlon channel and string hyperparameters.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "train/pipe_feeder.h"
#include "train/training_jobs.h"
#include "util/memory.h"

namespace medseg {
namespace {

// A small network and crop so a CPU learns the synthetic tumours in seconds.
void make_job(const std::string& root, const std::string& hyperparameters) {
  testing::make_training_job(root, hyperparameters, /*cases=*/8, /*seed=*/3);
}

const char* const kFastHyperparameters = R"({
  "epochs": "30", "steps_per_epoch": "5", "batch_size": "4",
  "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
  "num_res_units": "1", "learning_rate": "3e-3", "validation_fraction": "0.25",
  "val_interval": "10", "log_interval": "5", "num_threads": "2", "seed": "7"
})";

TEST(TrainerTest, LearnsTheSyntheticTumoursAndWritesTheModel) {
  testing::TempDir root;
  make_job(root.path(), kFastHyperparameters);
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;

  // SageMaker's metric regexes see one name=value per line on stdout.
  std::smatch match;
  const std::regex dice_line("(^|\n)val_mean_dice=([0-9.]+)\n");
  std::vector<double> dice_values;
  for (auto it =
           std::sregex_iterator(result.stdout_text.begin(), result.stdout_text.end(), dice_line);
       it != std::sregex_iterator(); ++it) {
    dice_values.push_back(std::stod((*it)[2]));
  }
  ASSERT_EQ(dice_values.size(), 3u) << result.stdout_text;  // epochs 10, 20, 30
  EXPECT_GE(*std::max_element(dice_values.begin(), dice_values.end()), 0.7) << result.output;
  EXPECT_NE(result.stdout_text.find("\ntrain_loss="), std::string::npos);

  const nlohmann::json metrics =
      nlohmann::json::parse(testing::read_text(root.file("model/metrics.json")));
  EXPECT_EQ(metrics["epochs_completed"], 30);
  EXPECT_EQ(metrics["global_steps"], 150);
  EXPECT_GE(metrics["best_val_mean_dice"].get<double>(), 0.7);

  // The weights load strictly into the architecture of the job's configuration.
  UNet final_model = testing::small_unet();
  EXPECT_NO_THROW(load_model_pth(root.file("model/model.pth"), *final_model));
  UNet best_model = testing::small_unet();
  EXPECT_NO_THROW(load_model_pth(root.file("model/best_model.pth"), *best_model));
  EXPECT_NE(testing::read_text(root.file("model/medseg_config.yaml")).find("epochs: 30"),
            std::string::npos);

  std::ifstream jsonl(root.file("output/data/metrics.jsonl"));
  int train_lines = 0, validation_lines = 0;
  for (std::string line; std::getline(jsonl, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    train_lines += entry["type"] == "train";
    validation_lines += entry["type"] == "validation";
  }
  EXPECT_EQ(train_lines, 30);
  EXPECT_EQ(validation_lines, 3);

  // The end summary: in metrics.json and as a table in the log.
  const nlohmann::json& summary = metrics["summary"];
  EXPECT_EQ(summary["best_epoch"], metrics["best_epoch"]);
  EXPECT_EQ(summary["best_val_mean_dice"], metrics["best_val_mean_dice"]);
  EXPECT_TRUE(summary.contains("best_val_dice_et")) << summary.dump();
  EXPECT_GT(summary["seconds"]["training"].get<double>(), 0.0);
  EXPECT_GT(summary["seconds"]["validation"].get<double>(), 0.0);
  // Validation's share of training + validation time, also at each validation.
  const double share = summary["validation_share"].get<double>();
  EXPECT_NEAR(share,
              summary["seconds"]["validation"].get<double>() /
                  (summary["seconds"]["validation"].get<double>() +
                   summary["seconds"]["training"].get<double>()),
              1e-9);
  EXPECT_TRUE(std::regex_search(
      result.output, std::regex("validation: mean Dice .* in [0-9.]+ s \\([0-9]+% of the time "
                                "since the last validation\\)")))
      << result.output;
  EXPECT_EQ(summary["checkpoints"]["written"], 30);  // one per epoch
  EXPECT_GT(summary["samples_per_second"].get<double>(), 0.0);
  EXPECT_GT(summary["peak_memory_mib"]["largest_worker"].get<double>(), 0.0);
  EXPECT_NE(result.output.find("  seconds/validation  "), std::string::npos) << result.output;
  // Where a step's time went, in the progress lines.
  EXPECT_TRUE(std::regex_search(result.output, std::regex("step time [0-9]+ ms: data_wait [0-9]+% "
                                                          "copy [0-9]+% forward [0-9]+% backward")))
      << result.output;
}

// What a user sees in TensorBoard (read with TensorBoard's own reader): every number of
// metrics.jsonl as a scalar at its step, and at each validation the picture of the first
// validation case with the true and the predicted outlines.
TEST(TrainerTest, TensorBoardShowsTheMetricsAndTheValidationPictures) {
  testing::TempDir root;
  make_job(root.path(), kFastHyperparameters);
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json read = testing::read_tensorboard(root.file("output/tensorboard"));
  ASSERT_TRUE(read.contains("scalars"));
  std::ifstream jsonl(root.file("output/data/metrics.jsonl"));
  int compared = 0;
  for (std::string line; std::getline(jsonl, line);) {
    const nlohmann::json entry = nlohmann::json::parse(line);
    const std::string type = entry["type"];
    for (const char* key : {"train_loss", "learning_rate", "samples_per_second", "val_mean_dice",
                            "val_dice_tc", "val_dice_wt", "val_dice_et"}) {
      if (!entry.contains(key)) continue;
      const nlohmann::json& points = read["scalars"][type + "/" + key];
      bool found = false;
      for (const nlohmann::json& point : points) {
        if (point[0] == entry["step"]) {
          // TensorBoard keeps float32.
          EXPECT_EQ(point[1].get<double>(),
                    static_cast<double>(static_cast<float>(entry[key].get<double>())))
              << type << "/" << key << " at step " << entry["step"];
          found = true;
          ++compared;
        }
      }
      EXPECT_TRUE(found) << type << "/" << key << " at step " << entry["step"] << " missing";
    }
  }
  EXPECT_EQ(compared, 30 * 3 + 3 * 4);
  EXPECT_EQ(read["scalars"]["train/step_time_share/forward"].size(), 30u);
  // One picture per validation (epochs 10, 20, 30) of one fixed case; the trained network's
  // predicted whole tumour (green) is in it.
  ASSERT_EQ(read["images"].size(), 1u) << read["images"].dump();
  const nlohmann::json& pictures = read["images"].begin().value();
  ASSERT_EQ(pictures.size(), 3u);
  for (const nlohmann::json& picture : pictures) {
    EXPECT_GE(picture["pixels_height"].get<int>(), 240);
    EXPECT_EQ(picture["pixels_width"], picture["width"]);
  }
  EXPECT_GT(pictures[2]["colours_right_half"]["green"].get<int>(), 0) << pictures.dump();
  EXPECT_GT(pictures[2]["colours"]["green"].get<int>(),
            pictures[2]["colours_right_half"]["green"].get<int>());  // the truth's, on the left
}

TEST(TrainerTest, SameSeedSameWeights) {
  const std::string short_run = R"({"epochs": "2", "steps_per_epoch": "2", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "0", "num_threads": "2", "seed": "5"})";
  std::vector<std::vector<at::Tensor>> weights;
  for (int run = 0; run < 2; ++run) {
    testing::TempDir root;
    make_job(root.path(), short_run);
    const testing::CommandResult result =
        testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    UNet model = testing::small_unet();
    load_model_pth(root.file("model/model.pth"), *model);
    weights.push_back(model->parameters());
  }
  for (size_t i = 0; i < weights[0].size(); ++i) {
    EXPECT_TRUE(at::equal(weights[0][i], weights[1][i])) << "parameter " << i;
  }
}

// data.device_cache = on (here on the CPU, where it runs the GPU's tensor code) trains exactly
// the weights the host loader's threads give; a Pipe channel streamed per epoch cannot be cached.
TEST(TrainerTest, TheDeviceCacheTrainsTheHostLoadersWeights) {
  const std::string run = R"({"epochs": "2", "steps_per_epoch": "3", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "1", "num_threads": "2", "seed": "5",
    "augment.flip_axes": "[0, 1, 2]")";
  std::vector<std::vector<at::Tensor>> weights;
  for (const std::string setting : {"off", "on"}) {
    testing::TempDir root;
    make_job(root.path(), run + R"(, "data.device_cache": ")" + setting + "\"}");
    const testing::CommandResult result =
        testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_EQ(result.output.find("training cases cached on cpu") != std::string::npos,
              setting == "on")
        << result.output;
    weights.push_back(testing::trained_weights(root.path()));
  }
  for (size_t i = 0; i < weights[0].size(); ++i) {
    EXPECT_TRUE(at::equal(weights[0][i], weights[1][i])) << "parameter " << i;
  }
}

// A case listed twice (here in dataset.json; also shards copied twice) is refused by name
// instead of being trained on twice as often.
TEST(TrainerTest, ACaseListedTwiceIsAClientErrorNamingIt) {
  testing::TempDir root;
  make_job(root.path(), R"({"epochs": "1", "steps_per_epoch": "1", "val_interval": "0",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "cache_dir": "memory"})");
  const std::string listing = root.file("input/data/train/dataset.json");
  nlohmann::json dataset = nlohmann::json::parse(testing::read_text(listing));
  dataset["training"].push_back(dataset["training"][0]);
  testing::write_text(listing, dataset.dump());
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_NE(failure.find("channel 'train' holds case '"), std::string::npos) << failure;
  EXPECT_NE(failure.find("more than once"), std::string::npos) << failure;
}

// A network too large for the host's memory is refused by name before anything is allocated
// (it used to be built, and the kernel's out-of-memory killer ended the job with no message).
TEST(TrainerTest, ANetworkLargerThanTheHostsMemoryIsAClientErrorBeforeItIsBuilt) {
  const double available = static_cast<double>(available_memory_bytes());
  // 4 levels of c channels, 1 residual unit: about 378 c^2 weights, 16 bytes each in training.
  const int channels = static_cast<int>(std::sqrt(2.0 * available / (16.0 * 378.0)));
  if (available <= 0 || 16.0 * 378.0 * channels * channels > 200.0 * (1ull << 30)) {
    GTEST_SKIP() << "this host's memory is beyond the configuration's static 256 GiB bound";
  }
  testing::TempDir root;
  const std::string c = std::to_string(channels);
  make_job(root.path(), R"({"epochs": "1", "steps_per_epoch": "1", "val_interval": "0",
    "roi_size": "[32, 32, 16]", "channels": "[)" + c + ", " + c + ", " + c + ", " + c +
                            R"(]", "strides": "[2, 2, 2]", "num_res_units": "1"})");
  const auto started = std::chrono::steady_clock::now();
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
            30.0);
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_NE(failure.find("model.channels [" + c), std::string::npos) << failure;
  EXPECT_NE(failure.find("free; use fewer channels"), std::string::npos) << failure;
}

std::vector<std::string> folder_names(const std::string& folder) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

// A NIfTI channel is preprocessed once per host into the record cache, reused by the next run on
// the same data and settings, rebuilt when a setting changes, built by one of a host's workers;
// and training from it gives the weights that decoding into memory gives.
TEST(TrainerTest, TheHostRecordCacheIsBuiltOnceReusedAndTrainsLikeMemory) {
  const std::string run = R"({"epochs": "2", "steps_per_epoch": "2", "batch_size": "2",
    "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
    "num_res_units": "1", "val_interval": "1", "num_threads": "2", "seed": "5",
    "resume": "false")";
  testing::TempDir cached, in_memory;
  make_job(cached.path(), run + "}");
  make_job(in_memory.path(), run + R"(, "cache_dir": "memory"})");
  const auto train = [](const testing::TempDir& root) {
    const testing::CommandResult result =
        testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return result.output;
  };
  const std::string built = train(cached);
  EXPECT_EQ(testing::count_occurrences(built,
                                       "record cache: channel 'train' preprocessed once "
                                       "for this host: 8 cases"),
            1u)
      << built;
  const std::vector<at::Tensor> from_cache = testing::trained_weights(cached.path());
  const std::string reused = train(cached);
  EXPECT_NE(reused.find("record cache: reusing " + cached.path() + "/cache/train-"),
            std::string::npos)
      << reused;
  const std::string decoded = train(in_memory);
  EXPECT_EQ(decoded.find("record cache"), std::string::npos) << decoded;
  EXPECT_FALSE(std::filesystem::exists(in_memory.file("cache")));
  const std::vector<at::Tensor> from_memory = testing::trained_weights(in_memory.path());
  for (size_t i = 0; i < from_cache.size(); ++i) {
    EXPECT_TRUE(at::equal(from_cache[i], from_memory[i])) << "parameter " << i;
  }
  const std::vector<std::string> first_cache = folder_names(cached.file("cache"));
  ASSERT_EQ(first_cache.size(), 1u);
  // Another spacing, and two workers: one new cache, built once, the old one gone.
  testing::write_text(cached.file("input/config/hyperparameters.json"),
                      run + R"(, "pixdim": "[2.0, 2.0, 2.0]", "nproc_per_node": "2",
                            "dist.master_port": ")" +
                          std::to_string(testing::free_loopback_port()) + "\"}");
  const std::string rebuilt = train(cached);
  EXPECT_EQ(testing::count_occurrences(rebuilt, "preprocessed once for this host"), 1u) << rebuilt;
  const std::vector<std::string> second_cache = folder_names(cached.file("cache"));
  ASSERT_EQ(second_cache.size(), 1u);
  EXPECT_NE(second_cache, first_cache);
}

TEST(TrainerTest, SigtermStopsAtAStepWritesTheModelAndExitsZero) {
  testing::TempDir root;
  make_job(root.path(), R"({"epochs": "1000", "batch_size": "2", "roi_size": "[32, 32, 16]",
    "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]", "num_res_units": "1",
    "val_interval": "0", "log_interval": "1"})");
  const std::string log = root.file("train.log");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("MEDSEG_ML_ROOT", root.path().c_str(), 1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl(MEDSEG_BINARY, MEDSEG_BINARY, "train", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training runs, then stop it as StopTrainingJob does.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (testing::read_text(log).find("step 3/") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(child, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  ASSERT_TRUE(WIFEXITED(status)) << testing::read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << testing::read_text(log);
  EXPECT_LT(seconds, 20.0);
  EXPECT_TRUE(testing::file_exists(root.file("model/model.pth")));
  const nlohmann::json metrics =
      nlohmann::json::parse(testing::read_text(root.file("model/metrics.json")));
  EXPECT_TRUE(metrics["stopped_early"].get<bool>());
}

}  // namespace
}  // namespace medseg

namespace medseg {
namespace {

const char* const kTinyRun = R"({"epochs": "1", "steps_per_epoch": "2", "batch_size": "2",
  "roi_size": "[32, 32, 16]", "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]",
  "num_res_units": "1", "validation_fraction": "0.25", "num_threads": "2"})";

// Preprocesses a synthetic data set into record shards, as a Processing job would.
std::string make_record_shards(const testing::TempDir& dir) {
  SynthOptions synth;
  synth.out_dir = dir.file("nifti");
  synth.cases = 6;
  synth.shape = {64, 64, 48};
  write_synthetic_dataset(synth);
  const testing::CommandResult result =
      testing::run_medseg({"preprocess", "--input", dir.file("nifti"), "--output",
                           dir.file("records"), "--ml-root", dir.path()});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return dir.file("records");
}

// File mode maps the channel's shards where they are; FastFile mode copies them (sequential
// reads) into the host's record cache first.
TEST(TrainerTest, TrainsFromRecordShardsInFileAndFastFileMode) {
  for (const std::string mode : {"File", "FastFile"}) {
    SCOPED_TRACE(mode);
    testing::TempDir dir;
    const std::string records = make_record_shards(dir);
    testing::make_ml_root(dir.file("ml"), kTinyRun,
                          R"({"train": {"TrainingInputMode": ")" + mode + R"("}})");
    std::filesystem::rename(records, dir.file("ml/input/data/train"));
    const testing::CommandResult result =
        testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + dir.file("ml")});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("data: 4 training and 2 validation cases"), std::string::npos)
        << result.output;
    EXPECT_EQ(result.output.find("FastFile channel 'train' copied once for this host") !=
                  std::string::npos,
              mode == "FastFile")
        << result.output;
    EXPECT_EQ(std::filesystem::exists(dir.file("ml/cache")), mode == "FastFile");
    EXPECT_TRUE(testing::file_exists(dir.file("ml/model/model.pth")));
  }
}

// The records of `dir`'s shards back to back, as Pipe mode streams a channel's S3 objects.
std::string pipe_payload(const testing::TempDir& dir) {
  const std::string records = make_record_shards(dir);
  std::string shard;
  for (const auto& entry : std::filesystem::directory_iterator(records)) {
    if (entry.path().extension() == ".medrec") shard += testing::read_text(entry.path());
  }
  EXPECT_FALSE(shard.empty());
  return shard;
}

constexpr const char* kPipeChannel =
    R"({"train": {"TrainingInputMode": "Pipe", "RecordWrapperType": "RecordIO",
                  "S3DistributionType": "FullyReplicated"}})";

TEST(TrainerTest, TrainsFromAPipeModeChannelWithRecordIO) {
  testing::TempDir dir;
  const std::string payload = pipe_payload(dir);
  // data.shuffle_buffer 0: the first FIFO is read once and kept in memory (streamed Pipe mode,
  // one FIFO per epoch: streamed_pipe_test.cpp).
  const std::string in_memory =
      std::string(kTinyRun).substr(0, std::string(kTinyRun).size() - 1) +
      R"(, "shuffle_buffer": "0"})";
  testing::make_ml_root(dir.file("ml"), in_memory, kPipeChannel);
  // SageMaker's part: train_0 (read once and kept in memory), then the next FIFOs unread.
  testing::CommandResult result;
  {
    testing::PipeFeeder feeder(dir.file("ml/input/data"), payload);
    result = testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + dir.file("ml")});
  }
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("data: 4 training and 2 validation cases"), std::string::npos)
      << result.output;
}

// Two workers on one host, one FIFO: exactly one reads it, and both train on all its cases (had
// they split its bytes, their records would be corrupt or their case lists would differ).
TEST(TrainerTest, TwoWorkersShareOnePipeModeFifo) {
  testing::TempDir dir;
  const std::string payload = pipe_payload(dir);
  const std::string two_workers =
      std::string(kTinyRun).substr(0, std::string(kTinyRun).size() - 1) +
      R"(, "nproc_per_node": "2", "num_threads": "1", "shuffle_buffer": "0",
                                  "dist.master_port": ")" +
      std::to_string(testing::free_loopback_port()) + R"("})";
  testing::make_ml_root(dir.file("ml"), two_workers, kPipeChannel);
  // SageMaker's part: train_0 (read once and kept in memory), then the next FIFOs unread.
  testing::CommandResult result;
  {
    testing::PipeFeeder feeder(dir.file("ml/input/data"), payload);
    result = testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + dir.file("ml")});
  }
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("Pipe mode: 6 cases of channel 'train' read once and shared with "
                               "this host's 1 other workers"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("data: 4 training and 2 validation cases"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("hosts hold different cases"), std::string::npos) << result.output;
  EXPECT_TRUE(testing::file_exists(dir.file("ml/model/model.pth")));
}

// Mixed precision on a GPU learns as well as fp32 does: the demo's recipe (MONAI's default
// UNet, 48x48x32 crops) under bf16 autocast and under fp16 with dynamic loss scaling.
void expect_gpu_training_learns(const std::string& amp) {
  testing::TempDir root;
  testing::make_ml_root(root.path(),
                        R"({"epochs": "60", "batch_size": "2",
      "roi_size": "[48, 48, 32]", "optimizer": "\"adam\"", "learning_rate": "1e-3",
      "validation_fraction": "0.2", "val_interval": "10", "log_interval": "20",
      "device": "cuda", "amp": ")" +
                            amp + R"("})",
                        R"({"train": {"TrainingInputMode": "File"}})");
  SynthOptions synth;
  synth.out_dir = root.file("input/data/train");
  synth.cases = 10;
  synth.shape = {96, 96, 64};
  synth.seed = 0;
  write_synthetic_dataset(synth);
  const testing::CommandResult result =
      testing::run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("precision " + amp), std::string::npos) << result.output;
  const nlohmann::json metrics =
      nlohmann::json::parse(testing::read_text(root.file("model/metrics.json")));
  std::printf("[ GPU      ] %s: best validation mean Dice %.4f\n", amp.c_str(),
              metrics["best_val_mean_dice"].get<double>());
  EXPECT_GE(metrics["best_val_mean_dice"].get<double>(), 0.8) << result.output;
}

TEST(GpuTrainerTest, Bf16LearnsTheSyntheticSet) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  expect_gpu_training_learns("bf16");
}

TEST(GpuTrainerTest, Fp16WithLossScalingLearnsTheSyntheticSet) {
  MEDSEG_REQUIRE_CUDA_DEVICES(1);
  expect_gpu_training_learns("fp16");
}

}  // namespace
}  // namespace medseg

// The benchmarks run and print the numbers they promise (speed itself is never asserted).
#include <gtest/gtest.h>

#include <regex>

#include "test_support.h"

namespace medseg {
namespace {

double printed_value(const std::string& output, const std::string& name) {
  std::smatch match;
  const std::regex line("(^|\n)" + name + "=([0-9.e+-]+)\n");
  if (!std::regex_search(output, match, line)) return -1.0;
  return std::stod(match[2]);
}

TEST(BenchCommandTest, EveryBenchmarkPrintsItsNumbers) {
  const testing::CommandResult crops =
      testing::run_medseg({"bench", "crops", "--roi", "32", "32", "16", "--steps", "5"});
  ASSERT_EQ(crops.exit_code, 0) << crops.output;
  EXPECT_GT(printed_value(crops.stdout_text, "crops_per_second_1_thread"), 0.0) << crops.output;

  const testing::CommandResult train =
      testing::run_medseg({"bench", "train", "--roi", "32", "32", "16", "--steps", "2", "--warmup",
                           "1", "--set", "channels=[8,16,32,64]", "--set", "strides=[2,2,2]"});
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_GT(printed_value(train.stdout_text, "train_samples_per_second"), 0.0) << train.output;
  EXPECT_GT(printed_value(train.stdout_text, "train_peak_memory_mib"), 0.0) << train.output;

  const testing::CommandResult records = testing::run_medseg({"bench", "records", "--cases", "1"});
  ASSERT_EQ(records.exit_code, 0) << records.output;
  EXPECT_GT(printed_value(records.stdout_text, "records_float16_warm_read_mb_per_second"), 0.0);

  const testing::CommandResult preprocess = testing::run_medseg(
      {"bench", "preprocess", "--cases", "1", "--shape", "48", "40", "32", "--threads", "2"});
  ASSERT_EQ(preprocess.exit_code, 0) << preprocess.output;
  EXPECT_GT(printed_value(preprocess.stdout_text, "preprocess_seconds_per_case_1_thread"), 0.0);
  EXPECT_GT(printed_value(preprocess.stdout_text, "preprocess_decode_floor_seconds_per_case"), 0.0);

  const testing::CommandResult loader = testing::run_medseg(
      {"bench", "loader", "--gb", "0.05", "--max-workers", "2", "--roi", "32", "32", "16"});
  ASSERT_EQ(loader.exit_code, 0) << loader.output;
  EXPECT_GT(printed_value(loader.stdout_text, "loader_2_workers_samples_per_second"), 0.0);
  EXPECT_GT(printed_value(loader.stdout_text, "loader_2_workers_private_mib_per_host"), 0.0);

  const testing::CommandResult serve =
      testing::run_medseg({"bench",
                           "serve",
                           "--shape",
                           "48",
                           "40",
                           "32",
                           "--steps",
                           "1",
                           "--device",
                           "cpu",
                           "--master-port",
                           std::to_string(testing::free_loopback_port()),
                           "--roi",
                           "16",
                           "16",
                           "16",
                           "--set",
                           "channels=[4,8,16]",
                           "--set",
                           "strides=[2,2]",
                           "--set",
                           "roi_size=[16,16,16]"});
  ASSERT_EQ(serve.exit_code, 0) << serve.output;
  EXPECT_GT(printed_value(serve.stdout_text, "serve_concurrency_4_requests_per_second"), 0.0);
  EXPECT_GT(printed_value(serve.stdout_text, "serve_concurrency_4_latency_p99_seconds"), 0.0);
}

TEST(BenchCommandTest, PreprocessTimesAUsersDataSetAndLeavesItInPlace) {
  const testing::TempDir dir;
  const std::string data = dir.path() + "/data";
  const testing::CommandResult synth =
      testing::run_medseg({"synth", "--out", data, "--cases", "3", "--shape", "40", "36", "24"});
  ASSERT_EQ(synth.exit_code, 0) << synth.output;

  const testing::CommandResult bench =
      testing::run_medseg({"bench", "preprocess", "--data", data, "--cases", "2"});
  ASSERT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("2 cases of " + data), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("40x36x24x4 -> "), std::string::npos) << bench.output;
  EXPECT_GT(printed_value(bench.stdout_text, "preprocess_over_floor"), 0.0) << bench.output;
  EXPECT_TRUE(testing::file_exists(data + "/dataset.json")) << "the user's data set was deleted";

  const testing::CommandResult missing =
      testing::run_medseg({"bench", "preprocess", "--data", dir.path() + "/nothing"});
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find(dir.path() + "/nothing"), std::string::npos) << missing.output;
}

TEST(BenchCommandTest, TrainWithSeveralWorkersMeasuresTheGradientSync) {
  const testing::CommandResult result = testing::run_medseg(
      {"bench", "train", "--roi", "32", "32", "16", "--steps", "2", "--warmup", "1", "--nproc", "2",
       "--master-port", "29583", "--set", "channels=[8,16,32,64]", "--set", "strides=[2,2,2]"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_GE(printed_value(result.stdout_text, "train_gradient_sync_seconds_median"), 0.0)
      << result.output;
  EXPECT_GT(printed_value(result.stdout_text, "train_samples_per_second"), 0.0);
}

TEST(BenchCommandTest, SyncWithOneWorkerGoesThroughARealProcessGroup) {
  const testing::CommandResult result = testing::run_medseg(
      {"bench", "train", "--roi", "32", "32", "16", "--steps", "2", "--warmup", "1", "--sync",
       "--master-port", "29587", "--set", "channels=[8,16,32,64]", "--set", "strides=[2,2,2]"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("bench train: 1 workers, gradient sync"), std::string::npos)
      << result.output;
}

TEST(BenchCommandTest, AmpNeedsAGpu) {
  const testing::CommandResult result =
      testing::run_medseg({"bench", "train", "--device", "cpu", "--amp", "bf16"});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("needs a CUDA device"), std::string::npos);
}

}  // namespace
}  // namespace medseg

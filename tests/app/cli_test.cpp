#include "app/cli.h"

#include <gtest/gtest.h>
#include <torch/version.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/synthetic_cases.h"
#include "test_support.h"
#include "train/training_jobs.h"

namespace medseg {
namespace {

using testing::CommandResult;
using testing::run_medseg;

TEST(CliTest, VersionAndHelpListEveryCommand) {
  const CommandResult version = run_medseg({"--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.output.find("medseg " MEDSEG_VERSION " (LibTorch " TORCH_VERSION ", "),
            std::string::npos)
      << version.output;
#ifdef USE_C10D_NCCL
  EXPECT_NE(version.output.find(", NCCL 2."), std::string::npos) << version.output;
#else
  EXPECT_NE(version.output.find("no CUDA (CPU build), Gloo)"), std::string::npos) << version.output;
#endif
  const CommandResult help = run_medseg({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* command : {"train", "preprocess", "infer", "serve", "synth", "bench"}) {
    EXPECT_NE(help.output.find(command), std::string::npos) << command;
  }
  EXPECT_EQ(run_medseg({"train", "--help"}).exit_code, 0);
}

TEST(CliTest, InvokedAsTrainImpliesTheCommand) {
  EXPECT_EQ(normalize_arguments({"/usr/local/bin/train"}),
            (std::vector<std::string>{"medseg", "train"}));
  EXPECT_EQ(normalize_arguments({"train", "train", "--print-config"}),
            (std::vector<std::string>{"medseg", "train", "--print-config"}));
  EXPECT_EQ(normalize_arguments({"serve"}), (std::vector<std::string>{"medseg", "serve"}));
  EXPECT_EQ(normalize_arguments({"medseg", "synth"}),
            (std::vector<std::string>{"medseg", "synth"}));
}

TEST(CliTest, PrintConfigShowsSageMakerHyperparametersAsTypedValues) {
  testing::TempDir root;
  testing::make_ml_root(root.path(),
                        R"({"epochs": "5", "optimizer": "\"sgd\"", "roi_size": "[64, 64, 32]",
                            "resume": "False", "lr": "0.001",
                            "sagemaker_program": "\"train.py\""})",
                        R"({"train": {"TrainingInputMode": "File"}})");
  // The training channel does not even exist: --print-config must not touch data.
  const CommandResult result =
      run_medseg({"train", "--print-config"}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string& yaml = result.stdout_text;
  EXPECT_NE(yaml.find("epochs: 5  # from " + root.path() + "/input/config/hyperparameters.json"),
            std::string::npos)
      << yaml;
  EXPECT_NE(yaml.find("name: sgd"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("roi_size: [64, 64, 32]"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("resume: false"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("learning_rate: 0.001"), std::string::npos) << yaml;
  EXPECT_FALSE(testing::file_exists(root.file("output/failure")));
}

struct BrokenRootCase {
  const char* name;
  const char* hyperparameters;
  const char* expected_in_failure;
  int expected_exit_code;
};

class BrokenMlRootTest : public ::testing::TestWithParam<BrokenRootCase> {};

TEST_P(BrokenMlRootTest, FailsWithFailureFileNamingTheProblem) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), GetParam().hyperparameters,
                        R"({"train": {"TrainingInputMode": "File"}})");
  const CommandResult result = run_medseg({"train", "--ml-root", root.path()});
  EXPECT_EQ(result.exit_code, GetParam().expected_exit_code) << result.output;
  ASSERT_TRUE(testing::file_exists(root.file("output/failure"))) << result.output;
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_EQ(failure.rfind("ClientError: ", 0), 0u) << failure;
  EXPECT_NE(failure.find(GetParam().expected_in_failure), std::string::npos) << failure;
  EXPECT_NE(result.output.find(GetParam().expected_in_failure), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    SageMakerInputs, BrokenMlRootTest,
    ::testing::Values(
        BrokenRootCase{"malformed_json", R"({"epochs": "10",)",
                       "hyperparameters.json: malformed JSON", 2},
        BrokenRootCase{"unknown_key", R"({"epoch": "10"})",
                       "unknown key 'epoch' (did you mean 'epochs'?)", 2},
        BrokenRootCase{"wrong_type", R"({"batch_size": "two"})",
                       "train.batch_size = 'two': expected an integer in [1, 4096]", 2},
        BrokenRootCase{"out_of_range", R"({"learning_rate": "-1"})",
                       "optim.learning_rate = '-1': expected a number in [0, 10]", 2},
        BrokenRootCase{"missing_channel", R"({"epochs": "1"})", "channel 'train' not found", 2}),
    [](const ::testing::TestParamInfo<BrokenRootCase>& info) { return info.param.name; });

TEST(CliTest, BadInputDataConfigIsAClientError) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), "{}", R"({"train": {"TrainingInputMode": "Streaming"}})");
  const CommandResult result = run_medseg({"train", "--ml-root", root.path(), "--print-config"});
  EXPECT_EQ(result.exit_code, 2);
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_NE(failure.find("inputdataconfig.json: channel 'train': TrainingInputMode = 'Streaming'"),
            std::string::npos)
      << failure;
}

TEST(CliTest, UnknownCommandLineOptionIsAClientError) {
  const CommandResult result = run_medseg({"synth", "--cases", "3"});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--out is required"), std::string::npos) << result.output;
}

TEST(CliTest, NoFailureFileOutsideAnMlRoot) {
  testing::TempDir dir;
  const CommandResult result = run_medseg({"train", "--print-config", "--set", "epochs=0"},
                                          {"MEDSEG_ML_ROOT=" + dir.file("absent")});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("train.epochs = '0'"), std::string::npos) << result.output;
  EXPECT_FALSE(testing::file_exists(dir.file("absent")));
}

// SageMaker SDK v3's ModelTrainer and Processing jobs start the image with no argument at all:
// medseg then chooses the command from what the platform laid out, and says so.
// SDK v3's local mode: no argument, and the resource configuration SageMaker's local mode writes
// (hosts algo-1-<id>, network interface ethwe, which its Docker network does not have).
TEST(CliTest, NoArgumentInATrainingJobTrains) {
  testing::TempDir root;
  testing::make_training_job(root.path(),
                             std::string(R"({"epochs": "1", "steps_per_epoch": "2",
      "batch_size": "1", "roi_size": "[32, 32, 16]", "val_interval": "0", "num_threads": "1", )") +
                                 testing::kSmallNetwork + "}",
                             /*cases=*/4, /*seed=*/5,
                             R"({"current_host": "algo-1-x7k2p", "hosts": ["algo-1-x7k2p"],
                                 "network_interface_name": "ethwe"})");
  const CommandResult result = run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("no command given: running `medseg train` (" + root.path() +
                               "/input/config exists"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("network interface ethwe, which this host does not have"),
            std::string::npos)
      << result.output;
  EXPECT_TRUE(testing::file_exists(root.file("model/model.pth")));
  EXPECT_FALSE(testing::file_exists(root.file("output/failure")));
}

TEST(CliTest, NoArgumentInAProcessingJobPreprocesses) {
  testing::TempDir root;
  testing::write_text(root.file("config/processingjobconfig.json"), "{}");
  SynthOptions synth;
  synth.out_dir = root.file("processing/input/data");
  synth.cases = 2;
  synth.shape = {24, 24, 16};
  write_synthetic_dataset(synth);
  const CommandResult result = run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path()});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("no command given: running `medseg preprocess`"), std::string::npos)
      << result.output;
  bool shard_written = false;
  for (const auto& entry :
       std::filesystem::directory_iterator(root.file("processing/output/data"))) {
    shard_written |= entry.path().extension() == ".medrec";
  }
  EXPECT_TRUE(shard_written);
}

TEST(CliTest, MedsegCommandSelectsTheCommandWhereArgumentsCannotBePassed) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), "{}");  // a training-job layout: the variable wins
  const CommandResult result =
      run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path(), "MEDSEG_COMMAND=infer"});
  EXPECT_NE(result.output.find("no command given: running `medseg infer` (MEDSEG_COMMAND=infer)"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.exit_code, 2) << "no model channel: a ClientError from infer\n" << result.output;
}

TEST(CliTest, AnUnknownCommandHyperparameterIsAClientErrorNamingTheKey) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"command": "\"evaluate\""})");
  for (const std::vector<std::string>& arguments :
       {std::vector<std::string>{}, std::vector<std::string>{"train"}}) {
    const CommandResult result = run_medseg(arguments, {"MEDSEG_ML_ROOT=" + root.path()});
    EXPECT_EQ(result.exit_code, 2) << result.output;
    const std::string failure = testing::read_text(root.file("output/failure"));
    EXPECT_NE(failure.find("hyperparameters.json: command = 'evaluate': expected train, "
                           "preprocess or infer"),
              std::string::npos)
        << failure;
  }
  // An explicit command is not overridden.
  EXPECT_EQ(run_medseg({"train", "--print-config"}, {"MEDSEG_ML_ROOT=" + root.path()}).exit_code,
            0);
}

TEST(CliTest, MetricDefinitionsAreTheLaunchKitsAndCaptureExactValues) {
  const CommandResult result = run_medseg({"metric-definitions"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json printed = nlohmann::json::parse(result.stdout_text);
  EXPECT_EQ(printed,
            nlohmann::json::parse(testing::read_text(std::string(MEDSEG_SOURCE_DIR) +
                                                     "/scripts/sagemaker/metric_definitions.json")))
      << "regenerate scripts/sagemaker/metric_definitions.json with `medseg metric-definitions`";
  EXPECT_LE(printed.size(), 40u);
}

// A failure file from an earlier local run is removed when a job starts; the first error of a job
// is kept, in `failure` (training jobs) and `message` (Processing jobs).
TEST(CliTest, FailureFilesHoldThisRunsFirstError) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"epochs": "-3"})");
  testing::write_text(root.file("output/failure"), "ClientError: an earlier run\n");
  testing::write_text(root.file("output/message"), "ClientError: an earlier run\n");
  const CommandResult result = run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("removed " + root.file("output/failure")), std::string::npos)
      << result.output;
  const std::string failure = testing::read_text(root.file("output/failure"));
  EXPECT_NE(failure.find("epochs"), std::string::npos) << failure;
  EXPECT_EQ(testing::read_text(root.file("output/message")), failure);
}

// A heterogeneous cluster: the host outside dist.instance_group exits 0 without training.
TEST(CliTest, AHostOutsideTheTrainingInstanceGroupExitsCleanly) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"instance_group": "\"gpus\""})",
                        R"({"train": {"TrainingInputMode": "File"}})",
                        R"({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
                            "instance_groups": [
                              {"instance_group_name": "gpus", "hosts": ["algo-1"]},
                              {"instance_group_name": "cpus", "hosts": ["algo-2"]}]})");
  const CommandResult result = run_medseg({"train"}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("host algo-2 (instance group ) is not in dist.instance_group gpus"),
            std::string::npos)
      << result.output;
  EXPECT_FALSE(testing::file_exists(root.file("model/model.pth")));
}

TEST(CliTest, NoArgumentAndNoSageMakerLayoutIsAClientError) {
  testing::TempDir root;
  const CommandResult result = run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_EQ(result.output.find("no command given: running"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace medseg

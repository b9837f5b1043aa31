#include "sagemaker/job_environment.h"

#include <gtest/gtest.h>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

TEST(InputDataConfigTest, LocalModeWritesOnlyTheInputMode) {
  testing::TempDir dir;
  testing::write_text(dir.file("inputdataconfig.json"),
                      R"({"train": {"TrainingInputMode": "File"}})");
  const auto channels = read_input_data_config(dir.file("inputdataconfig.json"));
  ASSERT_EQ(channels.count("train"), 1u);
  const ChannelConfig& train = channels.at("train");
  EXPECT_EQ(train.input_mode, "File");
  EXPECT_EQ(train.distribution, "FullyReplicated");
  EXPECT_EQ(train.record_wrapper, "None");
  EXPECT_EQ(train.content_type, "");
}

TEST(InputDataConfigTest, ReadsEveryKeySageMakerWrites) {
  testing::TempDir dir;
  testing::write_text(dir.file("inputdataconfig.json"), R"({
    "train": {"TrainingInputMode": "Pipe", "S3DistributionType": "ShardedByS3Key",
              "RecordWrapperType": "RecordIO", "ContentType": "application/x-medseg"},
    "validation": {"TrainingInputMode": "FastFile", "S3DistributionType": "FullyReplicated",
                   "RecordWrapperType": "None"}})");
  const auto channels = read_input_data_config(dir.file("inputdataconfig.json"));
  EXPECT_EQ(channels.at("train").input_mode, "Pipe");
  EXPECT_EQ(channels.at("train").distribution, "ShardedByS3Key");
  EXPECT_EQ(channels.at("train").record_wrapper, "RecordIO");
  EXPECT_EQ(channels.at("train").content_type, "application/x-medseg");
  EXPECT_EQ(channels.at("validation").input_mode, "FastFile");
}

TEST(InputDataConfigTest, UnknownInputModeNamesChannelAndChoices) {
  testing::TempDir dir;
  testing::write_text(dir.file("inputdataconfig.json"),
                      R"({"train": {"TrainingInputMode": "Stream"}})");
  const std::string message = testing::client_error_message(
      [&] { read_input_data_config(dir.file("inputdataconfig.json")); });
  EXPECT_NE(message.find("channel 'train'"), std::string::npos) << message;
  EXPECT_NE(message.find("'Stream'"), std::string::npos) << message;
  EXPECT_NE(message.find("File, Pipe, FastFile"), std::string::npos) << message;
}

TEST(ResourceConfigTest, KeepsHostOrderAsGiven) {
  testing::TempDir dir;
  // algo-10 sorts before algo-2 as text; rank order must still be the listed order.
  testing::write_text(dir.file("resourceconfig.json"),
                      R"({"current_host": "algo-10", "hosts": ["algo-2", "algo-10", "algo-1"],
                          "network_interface_name": "ens5"})");
  const ResourceConfig resources = read_resource_config(dir.file("resourceconfig.json"));
  EXPECT_EQ(resources.hosts, (std::vector<std::string>{"algo-2", "algo-10", "algo-1"}));
  EXPECT_EQ(resources.host_rank(), 1);
  EXPECT_EQ(resources.network_interface_name, "ens5");
  EXPECT_EQ(resources.instance_type, "");
}

TEST(ResourceConfigTest, ReadsOptionalKeysWhenPresent) {
  testing::TempDir dir;
  testing::write_text(dir.file("resourceconfig.json"), R"({
    "current_host": "algo-1", "current_instance_type": "ml.g5.12xlarge",
    "current_group_name": "homogeneousCluster", "hosts": ["algo-1"],
    "instance_groups": [{"instance_group_name": "homogeneousCluster",
                         "instance_type": "ml.g5.12xlarge", "hosts": ["algo-1"]}],
    "network_interface_name": "eth0"})");
  const ResourceConfig resources = read_resource_config(dir.file("resourceconfig.json"));
  EXPECT_EQ(resources.instance_type, "ml.g5.12xlarge");
  EXPECT_EQ(resources.group_name, "homogeneousCluster");
  EXPECT_TRUE(resources.from_file);
}

TEST(ResourceConfigTest, MissingFileMeansOneLocalHost) {
  testing::TempDir dir;
  const ResourceConfig resources = read_resource_config(dir.file("resourceconfig.json"));
  EXPECT_EQ(resources.hosts.size(), 1u);
  EXPECT_EQ(resources.host_rank(), 0);
  EXPECT_FALSE(resources.from_file);
}

TEST(ResourceConfigTest, CurrentHostMustBeListed) {
  testing::TempDir dir;
  testing::write_text(dir.file("resourceconfig.json"),
                      R"({"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]})");
  const std::string message =
      testing::client_error_message([&] { read_resource_config(dir.file("resourceconfig.json")); });
  EXPECT_NE(message.find("current_host 'algo-3' is not in hosts"), std::string::npos) << message;
}

// A heterogeneous cluster as SageMaker describes it: two GPU hosts and one CPU host.
ResourceConfig heterogeneous_cluster(const std::string& current_host) {
  testing::TempDir dir;
  testing::write_text(dir.file("resourceconfig.json"), R"({
    "current_host": ")" + current_host + R"(", "current_group_name": "x",
    "hosts": ["algo-1", "algo-2", "algo-3"],
    "instance_groups": [
      {"instance_group_name": "cpus", "instance_type": "ml.c5.18xlarge", "hosts": ["algo-2"]},
      {"instance_group_name": "gpus", "instance_type": "ml.p4d.24xlarge",
       "hosts": ["algo-3", "algo-1"]}],
    "network_interface_name": "eth0"})");
  return read_resource_config(dir.file("resourceconfig.json"));
}

TEST(ResourceConfigTest, TheNamedInstanceGroupIsTheTrainingWorld) {
  const std::optional<ResourceConfig> world =
      training_world(heterogeneous_cluster("algo-1"), "gpus");
  ASSERT_TRUE(world.has_value());
  EXPECT_EQ(world->hosts, (std::vector<std::string>{"algo-3", "algo-1"}));
  EXPECT_EQ(world->host_rank(), 1);
  EXPECT_FALSE(training_world(heterogeneous_cluster("algo-2"), "gpus").has_value());
  // One group (a homogeneous cluster) needs no name.
  ResourceConfig homogeneous = heterogeneous_cluster("algo-1");
  homogeneous.instance_groups.resize(1);
  EXPECT_EQ(training_world(homogeneous, "")->hosts.size(), 3u);
}

TEST(ResourceConfigTest, SeveralGroupsNeedAValidGroupName) {
  testing::expect_client_error([] { training_world(heterogeneous_cluster("algo-1"), ""); },
                               {"heterogeneous cluster", "cpus (ml.c5.18xlarge, 1 hosts)",
                                "gpus (ml.p4d.24xlarge, 2 hosts)", "dist.instance_group"});
  testing::expect_client_error([] { training_world(heterogeneous_cluster("algo-1"), "gpu"); },
                               {"dist.instance_group = 'gpu'", "expected one of cpus"});
}

TEST(CheckpointConfigTest, ReadsLocalPath) {
  testing::TempDir dir;
  testing::write_text(dir.file("checkpointconfig.json"),
                      R"({"LocalPath": "/opt/ml/checkpoints", "S3Path": "s3://b/ckpt"})");
  EXPECT_EQ(read_local_path(dir.file("checkpointconfig.json")), "/opt/ml/checkpoints");
  EXPECT_EQ(read_local_path(dir.file("absent.json")), "");
}

TEST(JobEnvironmentTest, LoadsAWholeMlRoot) {
  testing::TempDir root;
  testing::make_ml_root(root.path(), R"({"epochs": "3"})",
                        R"({"train": {"TrainingInputMode": "File"}})",
                        R"({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]})");
  const JobEnvironment environment = load_job_environment(MlPaths{root.path()});
  EXPECT_EQ(environment.hyperparameters.size(), 1u);
  EXPECT_EQ(environment.channels.size(), 1u);
  EXPECT_EQ(environment.resources.hosts.size(), 2u);
  EXPECT_EQ(environment.checkpoint_dir, "");
  EXPECT_EQ(environment.tensorboard_dir, "");
  EXPECT_EQ(environment.paths.failure_file(), root.path() + "/output/failure");
}

TEST(JobEnvironmentTest, ATensorBoardOutputConfigNamesTheEventFolder) {
  // SageMaker writes this file when the estimator has a TensorBoardOutputConfig.
  testing::TempDir root;
  testing::make_ml_root(root.path(), "{}", "{}");
  testing::write_text(
      root.file("input/config/tensorboardoutputconfig.json"),
      R"({"LocalPath": "/opt/ml/output/tensorboard", "S3OutputPath": "s3://b/tb"})");
  EXPECT_EQ(load_job_environment(MlPaths{root.path()}).tensorboard_dir,
            "/opt/ml/output/tensorboard");
}

TEST(JobEnvironmentTest, AnUnlistedChannelIsFileModeAndFullyReplicated) {
  JobEnvironment environment;
  environment.channels = read_input_data_config("/nonexistent");
  ChannelConfig pipe;
  pipe.name = "train";
  pipe.input_mode = "Pipe";
  environment.channels["train"] = pipe;
  EXPECT_EQ(environment.channel("train").input_mode, "Pipe");
  const ChannelConfig validation = environment.channel("validation");
  EXPECT_EQ(validation.name, "validation");
  EXPECT_EQ(validation.input_mode, "File");
  EXPECT_EQ(validation.distribution, "FullyReplicated");
}

}  // namespace
}  // namespace medseg

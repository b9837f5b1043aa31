#include "sagemaker/processing_job.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/synthetic_cases.h"
#include "test_support.h"

namespace medseg {
namespace {

// processingjobconfig.json as SageMaker writes it (the CreateProcessingJob request), one S3 input
// and one S3 output.
std::string processing_job_json(const std::string& distribution) {
  return R"({
    "ProcessingJobName": "medseg-preprocess",
    "AppSpecification": {"ImageUri": "123.dkr.ecr.us-east-1.amazonaws.com/medseg:latest"},
    "ProcessingInputs": [{"InputName": "input-1", "AppManaged": false, "S3Input": {
        "S3Uri": "s3://bucket/Task01_BrainTumour", "LocalPath": "/opt/ml/processing/input/data",
        "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": ")" +
         distribution + R"(", "S3CompressionType": "None"}}],
    "ProcessingOutputConfig": {"Outputs": [{"OutputName": "records", "AppManaged": false,
        "S3Output": {"S3Uri": "s3://bucket/records", "LocalPath": "/opt/ml/processing/records",
                     "S3UploadMode": "EndOfJob"}}]},
    "ProcessingResources": {"ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.c5.4xlarge",
                                              "VolumeSizeInGB": 50}},
    "RoleArn": "arn:aws:iam::123:role/medseg"})";
}

void make_processing_job(const std::string& root, const std::string& distribution,
                         const std::string& current_host) {
  testing::write_text(root + "/config/processingjobconfig.json", processing_job_json(distribution));
  testing::write_text(
      root + "/config/resourceconfig.json",
      R"({"current_host": ")" + current_host + R"(", "hosts": ["algo-1", "algo-2"]})");
}

TEST(ProcessingJobTest, InputsOutputsAndDistributionUnderTheMlRoot) {
  testing::TempDir root;
  make_processing_job(root.path(), "ShardedByS3Key", "algo-2");
  const ProcessingJobConfig job = read_processing_job_config(root.path());
  ASSERT_TRUE(job.from_file);
  const std::string path = root.file("config/processingjobconfig.json");
  const ProcessingInput* input = data_input(job, path);
  ASSERT_NE(input, nullptr);
  EXPECT_EQ(input->name, "input-1");
  EXPECT_EQ(input->local_path, root.path() + "/processing/input/data");
  EXPECT_EQ(input->distribution, "ShardedByS3Key");
  ASSERT_NE(data_output(job, path), nullptr);
  EXPECT_EQ(data_output(job, path)->local_path, root.path() + "/processing/records");
  EXPECT_EQ(job.resources.host_rank(), 1);
}

TEST(ProcessingJobTest, BadValuesAreClientErrorsNamingTheKey) {
  testing::TempDir root;
  make_processing_job(root.path(), "Sharded", "algo-1");
  testing::expect_client_error([&] { read_processing_job_config(root.path()); },
                               {"processingjobconfig.json", "input 'input-1'",
                                "S3DataDistributionType = 'Sharded'", "ShardedByS3Key"});
  nlohmann::json two = nlohmann::json::parse(processing_job_json("FullyReplicated"));
  two["ProcessingInputs"].push_back(two["ProcessingInputs"][0]);
  two["ProcessingInputs"][1]["InputName"] = "masks";
  testing::write_text(root.file("config/processingjobconfig.json"), two.dump());
  const ProcessingJobConfig job = read_processing_job_config(root.path());
  testing::expect_client_error([&] { data_input(job, "processingjobconfig.json"); },
                               {"2 inputs (input-1, masks)", "\"data\""});
}

// One host of a two-instance Processing job started as SageMaker starts it (no argument): with a
// FullyReplicated input it preprocesses its half of the cases, with ShardedByS3Key all it got.
TEST(ProcessingJobTest, EachHostPreprocessesItsShareOnce) {
  for (const auto& [distribution, expected_cases] :
       std::vector<std::pair<std::string, int>>{{"FullyReplicated", 2}, {"ShardedByS3Key", 4}}) {
    SCOPED_TRACE(distribution);
    testing::TempDir root;
    make_processing_job(root.path(), distribution, "algo-2");
    SynthOptions synth;
    synth.out_dir = root.file("processing/input/data");
    synth.cases = 4;
    synth.shape = {24, 24, 16};
    write_synthetic_dataset(synth);
    const testing::CommandResult result =
        testing::run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path()});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const nlohmann::json summary = nlohmann::json::parse(
        testing::read_text(root.file("processing/records/preprocess-summary-algo-2.json")));
    EXPECT_EQ(summary["cases_written"], expected_cases) << result.output;
  }
}

// A failing Processing job: Processing shows /opt/ml/output/message.
TEST(ProcessingJobTest, AFailureIsWrittenWhereProcessingShowsIt) {
  testing::TempDir root;
  make_processing_job(root.path(), "FullyReplicated", "algo-1");
  testing::write_text(root.file("processing/input/data/readme.txt"), "no cases here");
  const testing::CommandResult result = testing::run_medseg({}, {"MEDSEG_ML_ROOT=" + root.path()});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  const std::string message = testing::read_text(root.file("output/message"));
  EXPECT_NE(message.find("ClientError: "), std::string::npos) << message;
  EXPECT_NE(message.find(root.file("processing/input/data")), std::string::npos) << message;
}

}  // namespace
}  // namespace medseg

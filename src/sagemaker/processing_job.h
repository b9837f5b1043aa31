// What a SageMaker Processing job tells the container, read from
// <ml-root>/config/processingjobconfig.json (the CreateProcessingJob request) and
// <ml-root>/config/resourceconfig.json: where the inputs and outputs are mounted, how each input
// is distributed over the instances, and the cluster. Values that are present but invalid are
// ClientErrors naming the file and the key.
#pragma once

#include <string>
#include <vector>

#include "sagemaker/job_environment.h"

namespace medseg {

struct ProcessingInput {
  std::string name;                              // InputName
  std::string local_path;                        // S3Input.LocalPath, under the ML root
  std::string distribution = "FullyReplicated";  // or ShardedByS3Key
};

struct ProcessingOutput {
  std::string name;        // OutputName
  std::string local_path;  // S3Output.LocalPath, under the ML root
};

struct ProcessingJobConfig {
  bool from_file = false;  // false: no processingjobconfig.json (a local run)
  std::vector<ProcessingInput> inputs;
  std::vector<ProcessingOutput> outputs;
  ResourceConfig resources;
};

// Reads both files under `ml_root`. Local paths the job names under /opt/ml are moved under
// `ml_root` when that is another folder (tests and local runs lay out a copy of /opt/ml).
ProcessingJobConfig read_processing_job_config(const std::string& ml_root);

// The one input (or output) medseg uses: the only one, else the one named "data"; "" when the
// job has none. Several without one named "data" is a ClientError listing their names.
const ProcessingInput* data_input(const ProcessingJobConfig& job, const std::string& path);
const ProcessingOutput* data_output(const ProcessingJobConfig& job, const std::string& path);

}  // namespace medseg

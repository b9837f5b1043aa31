#include "sagemaker/processing_job.h"

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace {

using nlohmann::json;

constexpr const char* kSageMakerRoot = "/opt/ml";

// `key` of `object` as a string; `fallback` when absent or null.
std::string string_at(const json& object, const std::string& key, const std::string& where,
                      const std::string& fallback = "") {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) throw ClientError(where + key + " must be a string, got " + it->dump());
  return it->get<std::string>();
}

std::string under_ml_root(const std::string& local_path, const std::string& ml_root) {
  if (ml_root == kSageMakerRoot || !starts_with(local_path, std::string(kSageMakerRoot) + "/")) {
    return local_path;
  }
  return ml_root + local_path.substr(std::string(kSageMakerRoot).size());
}

const json& list_at(const json& document, const std::string& key, const std::string& where) {
  static const json kEmpty = json::array();
  const auto it = document.find(key);
  if (it == document.end() || it->is_null()) return kEmpty;
  if (!it->is_array()) throw ClientError(where + key + " must be a list, got " + it->dump());
  return *it;
}

template <typename Item>
const Item* the_data_one(const std::vector<Item>& items, const std::string& path,
                         const char* what) {
  if (items.empty()) return nullptr;
  if (items.size() == 1) return &items[0];
  std::vector<std::string> names;
  for (const Item& item : items) {
    if (item.name == "data") return &item;
    names.push_back(item.name);
  }
  throw ClientError(path + ": the job has " + std::to_string(items.size()) + " " + what + " (" +
                    join(names, ", ") + "); name the one medseg reads \"data\"");
}

}  // namespace

ProcessingJobConfig read_processing_job_config(const std::string& ml_root) {
  ProcessingJobConfig job;
  job.resources = read_resource_config(ml_root + "/config/resourceconfig.json");
  const std::string path = ml_root + "/config/processingjobconfig.json";
  const json document = read_json_file(path, /*required=*/false);
  if (document.is_null()) return job;
  if (!document.is_object()) {
    throw ClientError(path + ": expected a JSON object, got " + std::string(document.type_name()));
  }
  job.from_file = true;
  for (const json& entry : list_at(document, "ProcessingInputs", path + ": ")) {
    const std::string name = string_at(entry, "InputName", path + ": ProcessingInputs[].");
    const std::string where = path + ": input '" + name + "': ";
    const auto s3 = entry.find("S3Input");
    if (s3 == entry.end() || !s3->is_object()) continue;  // DatasetDefinition inputs: not data
    ProcessingInput input;
    input.name = name;
    input.local_path = under_ml_root(string_at(*s3, "LocalPath", where + "S3Input."), ml_root);
    input.distribution =
        string_at(*s3, "S3DataDistributionType", where + "S3Input.", "FullyReplicated");
    if (input.distribution != "FullyReplicated" && input.distribution != "ShardedByS3Key") {
      throw ClientError(where + "S3Input.S3DataDistributionType = '" + input.distribution +
                        "': expected FullyReplicated or ShardedByS3Key");
    }
    if (input.local_path.empty()) throw ClientError(where + "S3Input.LocalPath is missing");
    job.inputs.push_back(input);
  }
  const auto output_config = document.find("ProcessingOutputConfig");
  if (output_config != document.end() && output_config->is_object()) {
    for (const json& entry :
         list_at(*output_config, "Outputs", path + ": ProcessingOutputConfig.")) {
      const std::string name = string_at(entry, "OutputName", path + ": Outputs[].");
      const auto s3 = entry.find("S3Output");
      if (s3 == entry.end() || !s3->is_object()) continue;  // Feature Store outputs
      ProcessingOutput output;
      output.name = name;
      output.local_path = under_ml_root(
          string_at(*s3, "LocalPath", path + ": output '" + name + "': S3Output."), ml_root);
      job.outputs.push_back(output);
    }
  }
  return job;
}

const ProcessingInput* data_input(const ProcessingJobConfig& job, const std::string& path) {
  return the_data_one(job.inputs, path, "inputs");
}

const ProcessingOutput* data_output(const ProcessingJobConfig& job, const std::string& path) {
  return the_data_one(job.outputs, path, "outputs");
}

}  // namespace medseg

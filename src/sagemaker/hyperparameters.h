// hyperparameters.json: a flat JSON object of string -> string. Values arrive in several
// encodings depending on the client that started the job:
//   plain           "10", "adam"
//   JSON-encoded    "\"adam\"", "[128, 128, 64]", "true"
//   Python repr     "True", "None", "[1, 2]", "(1, 2)", "{'a': 1}"
// Each value is decoded as JSON, else as a Python literal, else kept as the raw string.
// Keys starting with "sagemaker_" and "_tuning_objective_metric" belong to SageMaker and are
// dropped. The key "command" chooses the medseg command (read_command_hyperparameter), not a
// configuration value.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace medseg {

// Decodes one value as described above. Never throws.
nlohmann::json decode_hyperparameter_value(const std::string& text);

// True for keys SageMaker adds for itself (sagemaker_*, _tuning_objective_metric).
bool is_sagemaker_reserved_key(const std::string& key);

// The hyperparameter that chooses the command where the launcher cannot pass arguments.
inline constexpr const char* kCommandHyperparameter = "command";

// The decoded value of the "command" hyperparameter in `path`, or "" when the file or the key is
// missing. A value that is not a string is a ClientError naming the file and the key.
std::string read_command_hyperparameter(const std::string& path);

struct Hyperparameter {
  std::string key;
  nlohmann::json value;  // decoded
  std::string raw;       // as written in the file, for messages
};

// Reads and decodes the file. A missing file means no hyperparameters. A file that is not a JSON
// object is a ClientError naming the file. Non-string values (hand-written files) are accepted.
std::vector<Hyperparameter> read_hyperparameters(const std::string& path);

}  // namespace medseg

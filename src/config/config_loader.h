// Resolves the job's configuration from its layers, later layers winning:
//   1. built-in defaults (config.h)
//   2. the YAML shipped with the image (config/brats_unet.yaml)
//   3. a user YAML: the `config_file` hyperparameter, else the one *.yaml in the `config` channel
//   4. hyperparameters.json
//   5. command-line `--set key=value`
// Keys may be dotted names (train.epochs), short aliases (epochs) or, in YAML, nested sections.
// Every unknown key or invalid value is a ClientError naming the layer, key, value and what was
// expected. The result remembers which layer set each value, for the start-up table.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "sagemaker/job_environment.h"

namespace medseg {

struct ResolvedConfig {
  Config config;
  std::map<std::string, std::string> origin;  // field name -> layer that set it last
  std::vector<std::string> layers;            // the layers applied, in order
  std::string shipped_layer;                  // the shipped YAML's path (not annotated)
};

// Hyperparameter naming a user YAML file (absolute, or relative to the config channel).
inline constexpr const char* kConfigFileKey = "config_file";

// The shipped YAML: $MEDSEG_DEFAULT_CONFIG, else <exe dir>/../share/medseg/brats_unet.yaml,
// else the source tree's config/brats_unet.yaml; "" when none exists.
std::string find_shipped_config();

void apply_yaml_file(ResolvedConfig& resolved, const std::string& path);
void apply_yaml_text(ResolvedConfig& resolved, const std::string& text, const std::string& source);
void apply_hyperparameters(ResolvedConfig& resolved, const std::vector<Hyperparameter>& values,
                           const std::string& source);
// `assignment` is "key=value"; value is parsed as YAML ("[64, 64, 32]", "1e-4", "true").
void apply_override(ResolvedConfig& resolved, const std::string& assignment);

struct ConfigRequest {
  std::string shipped_config;          // "" = skip layer 2
  std::vector<std::string> overrides;  // --set
};

// All five layers for a job, then validate_config().
ResolvedConfig resolve_config(const JobEnvironment& environment, const ConfigRequest& request);

// The resolved configuration as YAML, grouped by section, each value set by a layer other than
// the defaults annotated with that layer.
std::string config_to_yaml(const ResolvedConfig& resolved);

// A Markdown table of every key: name, aliases, type and range, default, help.
std::string config_markdown_table();

}  // namespace medseg

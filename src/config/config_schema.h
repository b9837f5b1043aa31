// The configuration schema: for every leaf of Config its dotted name, short aliases, help text,
// type and valid range. This table is the single source of truth for parsing values from YAML,
// hyperparameters.json and --set, for printing the resolved configuration, for "did you mean"
// suggestions and for the README's hyperparameter table (`medseg train --list-config`).
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "config/config.h"

namespace medseg {

using FieldRef =
    std::variant<int*, double*, bool*, std::string*, std::vector<int>*, std::vector<double>*>;

struct ConfigField {
  std::string name;                  // dotted name, e.g. "train.epochs"
  std::vector<std::string> aliases;  // short names accepted anywhere, e.g. "epochs"
  std::string help;                  // one line for users
  std::function<FieldRef(Config&)> ref;
  double min_value = -std::numeric_limits<double>::infinity();  // numbers and list elements
  double max_value = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;  // strings: the allowed values (empty = any)
  int min_length = 0;                // lists
  int max_length = std::numeric_limits<int>::max();
};

// Every field, in the order the resolved configuration is printed.
const std::vector<ConfigField>& config_schema();

// The field whose name or alias is `key`, or nullptr.
const ConfigField* find_config_field(const std::string& key);

// Like find_config_field but throws ClientError "<source>: unknown key '<key>' (did you mean
// '<closest>'?)" when there is no such field.
const ConfigField& require_config_field(const std::string& key, const std::string& source);

// Parses `value` into the field of `config`, checking type and range. Scalars may be strings of
// the right type ("10", "1e-4", "True"); lists may be sequences, "[1, 2]" or "1,2".
// Throws ClientError "<source>: <key> = <value>: expected <what>".
void set_config_field(Config& config, const ConfigField& field, const YAML::Node& value,
                      const std::string& source);

// The field's value as YAML.
YAML::Node get_config_field(const Config& config, const ConfigField& field);

// Human-readable type and range, e.g. "integer >= 1", "one of: adam, adamw, sgd".
std::string describe_field_type(const ConfigField& field);

}  // namespace medseg

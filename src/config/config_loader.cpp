#include "config/config_loader.h"

#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "config/config_schema.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

// Counts the YAML documents in `text`, stopping at `limit`. yaml-cpp 0.7's LoadAll never returns
// on some malformed input ("&a," is a document followed by an endless run of empty ones, found by
// fuzz/fuzz_config), so documents are counted here with a parser that stops early.
class IgnoreEvents : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

int count_yaml_documents(const std::string& text, int limit) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  IgnoreEvents ignore;
  int documents = 0;
  while (documents < limit && parser.HandleNextDocument(ignore)) ++documents;
  return documents;
}

YAML::Node json_to_yaml(const nlohmann::json& value) {
  if (value.is_null()) return YAML::Node(YAML::NodeType::Null);
  if (value.is_array()) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (const auto& element : value) node.push_back(json_to_yaml(element));
    return node;
  }
  if (value.is_object()) {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& [key, element] : value.items()) node[key] = json_to_yaml(element);
    return node;
  }
  if (value.is_string()) return YAML::Node(value.get<std::string>());
  if (value.is_boolean()) return YAML::Node(value.get<bool>() ? "true" : "false");
  return YAML::Node(value.dump());  // numbers keep their JSON spelling
}

bool is_section(const std::string& prefix) {
  for (const ConfigField& field : config_schema()) {
    if (starts_with(field.name, prefix + ".")) return true;
  }
  return false;
}

void set_with_origin(ResolvedConfig& resolved, const std::string& key, const YAML::Node& value,
                     const std::string& source) {
  const ConfigField& field = require_config_field(key, source);
  set_config_field(resolved.config, field, value, source);
  resolved.origin[field.name] = source;
}

// Applies a YAML mapping whose keys are sections, dotted names or aliases.
void apply_yaml_map(ResolvedConfig& resolved, const YAML::Node& node, const std::string& prefix,
                    const std::string& source) {
  for (const auto& entry : node) {
    const std::string key =
        prefix.empty() ? entry.first.Scalar() : prefix + "." + entry.first.Scalar();
    if (entry.second.IsMap() && is_section(key)) {
      apply_yaml_map(resolved, entry.second, key, source);
    } else {
      set_with_origin(resolved, key, entry.second, source);
    }
  }
}

std::string executable_dir() {
  char buffer[PATH_MAX];
  const ssize_t length = ::readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (length <= 0) return "";
  buffer[length] = '\0';
  return fs::path(buffer).parent_path().string();
}

// The user YAML: the config_file hyperparameter, else the single YAML in the config channel.
std::string find_user_config(const JobEnvironment& environment) {
  const std::string channel_dir = environment.paths.channel_dir("config");
  for (const Hyperparameter& hyperparameter : environment.hyperparameters) {
    if (hyperparameter.key != kConfigFileKey) continue;
    if (!hyperparameter.value.is_string()) {
      throw ClientError(environment.paths.hyperparameters_file() + ": config_file = '" +
                        hyperparameter.raw + "': expected the path of a YAML file");
    }
    const fs::path requested = hyperparameter.value.get<std::string>();
    if (requested.is_absolute()) return requested.string();
    const fs::path in_channel = fs::path(channel_dir) / requested;
    std::error_code error;
    if (fs::exists(in_channel, error)) return in_channel.string();
    if (fs::exists(requested, error)) return requested.string();
    throw ClientError(environment.paths.hyperparameters_file() + ": config_file = '" +
                      requested.string() + "': no such file in the config channel (" + channel_dir +
                      ") or the working directory");
  }
  std::error_code error;
  if (!fs::is_directory(channel_dir, error)) return "";
  std::vector<std::string> yaml_files;
  for (const auto& entry : fs::directory_iterator(channel_dir, error)) {
    const std::string name = entry.path().filename().string();
    if (ends_with(name, ".yaml") || ends_with(name, ".yml")) yaml_files.push_back(entry.path());
  }
  std::sort(yaml_files.begin(), yaml_files.end());
  if (yaml_files.size() > 1) {
    throw ClientError("the config channel " + channel_dir + " holds several YAML files (" +
                      join(yaml_files, ", ") + "): name one with the config_file hyperparameter");
  }
  return yaml_files.empty() ? "" : yaml_files.front();
}

}  // namespace

std::string find_shipped_config() {
  const char* from_environment = std::getenv("MEDSEG_DEFAULT_CONFIG");
  if (from_environment && *from_environment) return from_environment;
  std::error_code error;
  const std::string exe_dir = executable_dir();
  if (!exe_dir.empty()) {
    const fs::path installed = fs::path(exe_dir) / ".." / "share" / "medseg" / "brats_unet.yaml";
    if (fs::exists(installed, error)) return fs::canonical(installed, error).string();
  }
  const fs::path source_tree = fs::path(MEDSEG_SOURCE_CONFIG_DIR) / "brats_unet.yaml";
  if (fs::exists(source_tree, error)) return source_tree.string();
  return "";
}

void apply_yaml_text(ResolvedConfig& resolved, const std::string& text, const std::string& source) {
  // yaml-cpp parses recursively: refuse nesting deeper than any configuration has before it can
  // overflow the stack.
  const int depth = nesting_depth(text);
  if (depth > kMaxJsonDepth) {
    throw ClientError(source + ": nested " + std::to_string(depth) + " levels deep; at most " +
                      std::to_string(kMaxJsonDepth) + " are accepted");
  }
  YAML::Node document;
  try {
    if (count_yaml_documents(text, 2) > 1) {
      throw ClientError(source +
                        ": holds several YAML documents; expected one mapping of configuration keys");
    }
    document = YAML::Load(text);
  } catch (const YAML::Exception& parse_error) {
    throw ClientError(source + ": malformed YAML at line " +
                      std::to_string(parse_error.mark.line + 1) + ": " + parse_error.msg);
  }
  if (document.IsNull()) return;
  if (!document.IsMap()) {
    throw ClientError(source + ": expected a YAML mapping of configuration keys");
  }
  apply_yaml_map(resolved, document, "", source);
  resolved.layers.push_back(source);
}

void apply_yaml_file(ResolvedConfig& resolved, const std::string& path) {
  std::error_code error;
  if (!fs::exists(path, error)) throw ClientError(path + ": configuration file not found");
  // A folder, a device (/dev/zero) or a huge file is not a configuration: refuse it unread.
  constexpr uintmax_t kMaxConfigBytes = 1 << 20;
  if (!fs::is_regular_file(path, error)) {
    throw ClientError(path + ": is not a regular file; expected a YAML configuration file");
  }
  if (fs::file_size(path, error) > kMaxConfigBytes) {
    throw ClientError(path + ": " + std::to_string(fs::file_size(path, error)) +
                      " bytes; a configuration file holds at most 1 MiB");
  }
  apply_yaml_text(resolved, read_text_file(path), path);
}

void apply_hyperparameters(ResolvedConfig& resolved, const std::vector<Hyperparameter>& values,
                           const std::string& source) {
  for (const Hyperparameter& hyperparameter : values) {
    if (hyperparameter.key == kConfigFileKey) continue;
    set_with_origin(resolved, hyperparameter.key, json_to_yaml(hyperparameter.value), source);
  }
  if (!values.empty()) resolved.layers.push_back(source);
}

void apply_override(ResolvedConfig& resolved, const std::string& assignment) {
  const size_t equals = assignment.find('=');
  if (equals == std::string::npos || equals == 0) {
    throw ClientError("--set '" + assignment + "': expected key=value, e.g. --set epochs=10");
  }
  const std::string key = trim(assignment.substr(0, equals));
  const std::string text = assignment.substr(equals + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception&) {
    value = YAML::Node(text);
  }
  if (value.IsNull() && !trim(text).empty() && trim(text) != "null" && trim(text) != "~") {
    value = YAML::Node(text);
  }
  set_with_origin(resolved, key, value, "--set");
  if (resolved.layers.empty() || resolved.layers.back() != "--set") {
    resolved.layers.push_back("--set");
  }
}

ResolvedConfig resolve_config(const JobEnvironment& environment, const ConfigRequest& request) {
  ResolvedConfig resolved;
  resolved.shipped_layer = request.shipped_config;
  if (!request.shipped_config.empty()) apply_yaml_file(resolved, request.shipped_config);
  const std::string user_config = find_user_config(environment);
  if (!user_config.empty()) {
    const bool named = std::any_of(
        environment.hyperparameters.begin(), environment.hyperparameters.end(),
        [](const Hyperparameter& hyperparameter) { return hyperparameter.key == kConfigFileKey; });
    if (named && !fs::is_regular_file(user_config)) {
      throw ClientError(environment.paths.hyperparameters_file() + ": config_file = '" +
                        user_config + "' is not a regular file; expected a YAML configuration "
                        "file");
    }
    apply_yaml_file(resolved, user_config);
  }
  apply_hyperparameters(resolved, environment.hyperparameters,
                        environment.paths.hyperparameters_file());
  for (const std::string& assignment : request.overrides) apply_override(resolved, assignment);
  validate_config(resolved.config);
  return resolved;
}

std::string config_to_yaml(const ResolvedConfig& resolved) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (const ConfigField& field : config_schema()) {
    const std::string field_section = field.name.substr(0, field.name.find('.'));
    if (field_section != section) {
      if (!section.empty()) out << YAML::EndMap;
      section = field_section;
      out << YAML::Key << section << YAML::Value << YAML::BeginMap;
    }
    out << YAML::Key << field.name.substr(section.size() + 1) << YAML::Value
        << get_config_field(resolved.config, field);
    const auto origin = resolved.origin.find(field.name);
    if (origin != resolved.origin.end() && origin->second != resolved.shipped_layer) {
      out << YAML::Comment("from " + origin->second);
    }
  }
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string config_markdown_table() {
  std::ostringstream table;
  const Config defaults;
  table << "| key | alias | type | default | description |\n";
  table << "|---|---|---|---|---|\n";
  for (const ConfigField& field : config_schema()) {
    YAML::Emitter value;
    value << YAML::Flow << get_config_field(defaults, field);
    std::string default_text = value.c_str();
    if (default_text.empty() || default_text == "\"\"") default_text = "(empty)";
    std::vector<std::string> aliases;
    for (const std::string& alias : field.aliases) aliases.push_back("`" + alias + "`");
    table << "| `" << field.name << "` | " << join(aliases, ", ") << " | "
          << describe_field_type(field) << " | `" << default_text << "` | " << field.help << " |\n";
  }
  return table.str();
}

}  // namespace medseg

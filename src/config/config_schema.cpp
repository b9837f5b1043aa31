#include "config/config_schema.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <type_traits>

#include "util/error.h"
#include "util/strings.h"

namespace medseg {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// FIELD(train.epochs) expands to the dotted name and an accessor for that member, so a field's
// name can never drift from the member it sets.
#define FIELD(path) #path, [](Config & c) -> FieldRef { return &c.path; }

struct FieldBuilder {
  ConfigField field;
  FieldBuilder(const char* name, std::function<FieldRef(Config&)> ref) {
    field.name = name;
    field.ref = std::move(ref);
  }
  FieldBuilder& alias(std::string name) {
    field.aliases.push_back(std::move(name));
    return *this;
  }
  FieldBuilder& help(std::string text) {
    field.help = std::move(text);
    return *this;
  }
  FieldBuilder& range(double min_value, double max_value = kInf) {
    field.min_value = min_value;
    field.max_value = max_value;
    return *this;
  }
  FieldBuilder& choices(std::vector<std::string> values) {
    field.choices = std::move(values);
    return *this;
  }
  FieldBuilder& length(int min_length, int max_length) {
    field.min_length = min_length;
    field.max_length = max_length;
    return *this;
  }
};

std::vector<ConfigField> build_schema() {
  std::vector<FieldBuilder> f;
  // data
  f.emplace_back(FIELD(data.layout))
      .choices({"auto", "decathlon", "brats", "records"})
      .help(
          "Layout of the training channel (auto detects dataset.json, BraTS case folders or "
          "medseg records)");
  f.emplace_back(FIELD(data.label_scheme))
      .alias("label_scheme")
      .choices({"msd", "brats", "monai_tutorial"})
      .help("Label values to [TC, WT, ET]: msd (Task01), brats (1/2/4) or monai_tutorial");
  f.emplace_back(FIELD(data.train_channel)).help("Channel holding the training data");
  f.emplace_back(FIELD(data.validation_channel)).help("Channel holding validation data (optional)");
  f.emplace_back(FIELD(data.validation_fraction))
      .alias("validation_fraction")
      .range(0.0, 0.9)
      .help("Share of training cases held out when there is no validation channel");
  f.emplace_back(FIELD(data.pixdim))
      .alias("pixdim")
      .range(0.01, 100.0)
      .length(3, 3)
      .help("Target voxel spacing in mm (x, y, z)");
  f.emplace_back(FIELD(data.normalize))
      .choices({"volume", "crop"})
      .help("NormalizeIntensity over the whole volume once, or per random crop (MONAI seed)");
  f.emplace_back(FIELD(data.num_workers))
      .alias("num_workers")
      .range(0, 256)
      .help("Data-loading threads per worker; 0 = 4 on a GPU, 1 on the CPU (its cores compute)");
  f.emplace_back(FIELD(data.prefetch_batches))
      .range(1, 64)
      .help("Batches prepared ahead of the training step");
  f.emplace_back(FIELD(data.max_case_mb))
      .range(1, 1 << 20)
      .help(
          "Refuse cases whose decoded image, or the case resampled to pixdim, exceeds this many "
          "MiB");
  f.emplace_back(FIELD(data.cache_dir))
      .alias("cache_dir")
      .help(
          "NIfTI training channels are preprocessed once per host into record shards here and "
          "mapped by every worker (reused after a restart while the data and the preprocessing "
          "settings are the same); empty = <ml-root>/cache; `memory` = each worker decodes the "
          "channel into its own memory");
  f.emplace_back(FIELD(data.shuffle_buffer))
      .alias("shuffle_buffer")
      .range(0, 100000)
      .help(
          "Pipe mode: each epoch streams its FIFO through a shuffle buffer of this many cases "
          "(memory: that many decoded cases per worker); 0 = read the first FIFO once and keep "
          "every case in memory (exact shuffles, the data must fit)");
  f.emplace_back(FIELD(data.device_cache))
      .choices({"auto", "on", "off"})
      .help(
          "Keep every training case on the training device and cut crops and augmentations "
          "there (no host loader, no copies per step); auto = on when training on a GPU and the "
          "cases take at most half of its free memory; on = also on the CPU; off = host loader "
          "threads");
  // augment
  f.emplace_back(FIELD(augment.roi_size))
      .alias("roi_size")
      .range(1, 4096)
      .length(3, 3)
      .help("Random crop (and sliding window) size in voxels (x, y, z)");
  f.emplace_back(FIELD(augment.flip_prob)).range(0.0, 1.0).help("RandFlip probability");
  f.emplace_back(FIELD(augment.flip_axes))
      .range(0, 2)
      .length(0, 3)
      .help("Spatial axes RandFlip flips");
  f.emplace_back(FIELD(augment.scale_intensity_prob))
      .range(0.0, 1.0)
      .help("RandScaleIntensity probability");
  f.emplace_back(FIELD(augment.scale_intensity_factor))
      .range(0.0, 10.0)
      .help("RandScaleIntensity: v * (1 + f), f ~ U(-factor, factor)");
  f.emplace_back(FIELD(augment.shift_intensity_prob))
      .range(0.0, 1.0)
      .help("RandShiftIntensity probability");
  f.emplace_back(FIELD(augment.shift_intensity_offset))
      .range(0.0, 100.0)
      .help("RandShiftIntensity: v + o, o ~ U(-offset, offset)");
  // model
  f.emplace_back(FIELD(model.in_channels)).range(1, 64).help("Input channels (modalities)");
  f.emplace_back(FIELD(model.out_channels)).range(1, 64).help("Output channels (TC, WT, ET)");
  f.emplace_back(FIELD(model.channels))
      .alias("channels")
      .range(1, 4096)
      .length(2, 8)
      .help("UNet feature channels per level");
  f.emplace_back(FIELD(model.strides))
      .alias("strides")
      .range(1, 4)
      .length(1, 7)
      .help("UNet down-sampling strides (one fewer than channels)");
  f.emplace_back(FIELD(model.num_res_units))
      .alias("num_res_units")
      .range(0, 8)
      .help("Residual units per block (0 = plain convolutions)");
  f.emplace_back(FIELD(model.dropout))
      .alias("dropout")
      .range(0.0, 0.99)
      .help("Dropout probability in every block");
  // optim
  f.emplace_back(FIELD(optim.name))
      .alias("optimizer")
      .choices({"adam", "adamw", "sgd"})
      .help("Optimiser (sgd uses Nesterov momentum)");
  f.emplace_back(FIELD(optim.learning_rate))
      .alias("learning_rate")
      .alias("lr")
      .range(0.0, 10.0)
      .help("Peak learning rate");
  f.emplace_back(FIELD(optim.weight_decay))
      .alias("weight_decay")
      .range(0.0, 1.0)
      .help("Weight decay (L2 for adam and sgd, decoupled for adamw)");
  f.emplace_back(FIELD(optim.momentum)).alias("momentum").range(0.0, 1.0).help("SGD momentum");
  f.emplace_back(FIELD(optim.betas)).range(0.0, 0.999999).length(2, 2).help("Adam/AdamW betas");
  f.emplace_back(FIELD(optim.grad_clip_norm))
      .alias("grad_clip_norm")
      .range(0.0)
      .help("Clip the global gradient norm; 0 = off");
  f.emplace_back(FIELD(optim.fused))
      .alias("fused_optimizer")
      .help("adam/adamw: one fused kernel per parameter group (as torch.optim.Adam(fused=True))");
  // schedule
  f.emplace_back(FIELD(schedule.name))
      .alias("lr_schedule")
      .choices({"constant", "cosine", "poly"})
      .help("Learning-rate schedule after warm-up");
  f.emplace_back(FIELD(schedule.warmup_steps))
      .alias("warmup_steps")
      .range(0)
      .help("Linear warm-up steps");
  f.emplace_back(FIELD(schedule.poly_power)).range(0.0, 10.0).help("Exponent of poly");
  f.emplace_back(FIELD(schedule.min_learning_rate))
      .range(0.0, 10.0)
      .help("Floor of cosine and poly");
  // train
  f.emplace_back(FIELD(train.epochs)).alias("epochs").range(1, 1000000).help("Epochs");
  f.emplace_back(FIELD(train.batch_size))
      .alias("batch_size")
      .range(1, 4096)
      .help("Samples per device per step");
  f.emplace_back(FIELD(train.loss))
      .alias("loss")
      .choices({"dice", "dice_bce"})
      .help("Loss: sigmoid Dice, or Dice + BCE");
  f.emplace_back(FIELD(train.amp))
      .alias("amp")
      .choices({"auto", "bf16", "fp16", "off"})
      .help("Mixed precision (auto = bf16 on GPUs that have it, else off)");
  f.emplace_back(FIELD(train.device))
      .alias("device")
      .choices({"auto", "cpu", "cuda"})
      .help("Device to train on");
  f.emplace_back(FIELD(train.cudnn_benchmark))
      .help("GPU: let cuDNN time its convolution algorithms for the fixed crop shape once");
  f.emplace_back(FIELD(train.channels_last))
      .help("GPU: convolution weights and inputs in channels-last (NDHWC) layout");
  f.emplace_back(FIELD(train.seed))
      .alias("seed")
      .range(0, 2147483647)
      .help("Seed of weights, data order and augmentation");
  f.emplace_back(FIELD(train.num_threads))
      .alias("num_threads")
      .range(0, 1024)
      .help("Compute threads per worker; 0 = the host's cores divided among its workers");
  f.emplace_back(FIELD(train.steps_per_epoch))
      .alias("steps_per_epoch")
      .range(0)
      .help("Steps per epoch; 0 = training cases / (batch size x workers), at least 1");
  f.emplace_back(FIELD(train.validate_every_epochs))
      .alias("val_interval")
      .range(0)
      .help("Validate every N epochs and after the last; 0 = never");
  f.emplace_back(FIELD(train.log_every_steps))
      .alias("log_interval")
      .range(1)
      .help("Progress line every N steps");
  f.emplace_back(FIELD(train.log_level))
      .alias("log_level")
      .choices({"trace", "debug", "info", "warn", "error"})
      .help("Log verbosity");
  f.emplace_back(FIELD(train.tensorboard_dir))
      .alias("tensorboard_dir")
      .help(
          "TensorBoard event files (scalars every progress line, a validation picture at each "
          "validation); empty = LocalPath of tensorboardoutputconfig.json, else "
          "<ml-root>/output/tensorboard; off = none");
  // sliding window
  f.emplace_back(FIELD(sliding_window.overlap))
      .alias("overlap")
      .range(0.0, 0.95)
      .help("Sliding-window overlap");
  f.emplace_back(FIELD(sliding_window.blend))
      .alias("blend")
      .choices({"constant", "gaussian"})
      .help("Blending of overlapping windows");
  f.emplace_back(FIELD(sliding_window.batch_size))
      .alias("sw_batch_size")
      .range(1, 256)
      .help("Windows per forward pass");
  f.emplace_back(FIELD(sliding_window.threshold))
      .range(0.0, 1.0)
      .help("Sigmoid probability threshold of a positive voxel");
  // checkpoint
  f.emplace_back(FIELD(checkpoint.dir))
      .alias("checkpoint_dir")
      .help("Checkpoint folder; empty = checkpointconfig.json LocalPath or <ml-root>/checkpoints");
  f.emplace_back(FIELD(checkpoint.every_steps))
      .alias("checkpoint_every_steps")
      .range(0)
      .help("Checkpoint every N steps (0 = off); always at epoch end");
  f.emplace_back(FIELD(checkpoint.every_minutes))
      .alias("checkpoint_every_minutes")
      .range(0.0)
      .help("Checkpoint every M minutes of training (0 = off)");
  f.emplace_back(FIELD(checkpoint.keep))
      .alias("checkpoint_keep")
      .range(1, 1000)
      .help("Newest checkpoints kept");
  f.emplace_back(FIELD(checkpoint.resume))
      .alias("resume")
      .help("Resume from the newest complete checkpoint");
  // dist
  f.emplace_back(FIELD(dist.backend))
      .choices({"auto", "nccl", "gloo"})
      .help("Collective backend (auto = nccl on GPUs, gloo on CPU)");
  f.emplace_back(FIELD(dist.nproc_per_node))
      .alias("nproc_per_node")
      .range(0, 64)
      .help("Workers per host; 0 = one per GPU (1 on CPU)");
  f.emplace_back(FIELD(dist.master_port)).range(1, 65535).help("TCPStore port on hosts[0]");
  f.emplace_back(FIELD(dist.bucket_mb))
      .range(1, 4096)
      .help(
          "Gradient all-reduce bucket size in MiB: each bucket is reduced as soon as backward "
          "has produced it, the last one after backward ends");
  f.emplace_back(FIELD(dist.timeout_seconds))
      .range(10, 86400)
      .help("A silent worker or peer ends the job after this many seconds");
  f.emplace_back(FIELD(dist.dns_retry_seconds))
      .range(0, 3600)
      .help("How long to retry resolving host names");
  f.emplace_back(FIELD(dist.instance_group))
      .alias("instance_group")
      .help(
          "Heterogeneous clusters: the instance group that trains (hosts of other groups exit 0); "
          "required when the job has several groups");
  // preprocess
  f.emplace_back(FIELD(preprocess.format))
      .choices({"records", "nifti"})
      .help("preprocess output: medseg record shards or NIfTI");
  f.emplace_back(FIELD(preprocess.image_dtype))
      .choices({"float16", "float32"})
      .help("Image precision in records");
  f.emplace_back(FIELD(preprocess.shard_mb)).range(1, 65536).help("Record shard size in MiB");

  std::vector<ConfigField> schema;
  schema.reserve(f.size());
  for (FieldBuilder& builder : f) schema.push_back(std::move(builder.field));
  return schema;
}

#undef FIELD

std::string scalar_text(const YAML::Node& value) {
  if (value.IsScalar()) return value.Scalar();
  YAML::Emitter out;
  out << YAML::Flow << value;
  return out.c_str();
}

[[noreturn]] void throw_bad_value(const ConfigField& field, const YAML::Node& value,
                                  const std::string& source) {
  throw ClientError(source + ": " + field.name + " = '" + truncate_text(scalar_text(value), 80) +
                    "': expected " + describe_field_type(field));
}

bool parse_integer(const std::string& text, long long* out) {
  const std::string t = trim(text);
  if (t.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long parsed = std::strtoll(t.c_str(), &end, 10);
  if (errno == 0 && *end == '\0') {
    *out = parsed;
    return true;
  }
  // Clients such as tuning jobs may send integers as "10.0".
  double as_double = 0;
  errno = 0;
  as_double = std::strtod(t.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(as_double) ||
      as_double != std::floor(as_double) || std::fabs(as_double) > 9.0e15) {
    return false;
  }
  *out = static_cast<long long>(as_double);
  return true;
}

bool parse_double(const std::string& text, double* out) {
  const std::string t = trim(text);
  if (t.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double parsed = std::strtod(t.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(parsed)) return false;
  *out = parsed;
  return true;
}

bool parse_bool(const std::string& text, bool* out) {
  std::string t = trim(text);
  for (char& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "true" || t == "yes" || t == "on" || t == "1") {
    *out = true;
    return true;
  }
  if (t == "false" || t == "no" || t == "off" || t == "0") {
    *out = false;
    return true;
  }
  return false;
}

bool in_range(const ConfigField& field, double value) {
  return value >= field.min_value && value <= field.max_value;
}

// The elements of a list value: a YAML sequence, a scalar holding "[a, b]", or "a,b".
std::vector<std::string> list_elements(const YAML::Node& value, bool* ok) {
  std::vector<std::string> elements;
  *ok = true;
  if (value.IsSequence()) {
    for (const YAML::Node& element : value) {
      if (!element.IsScalar()) {
        *ok = false;
        return {};
      }
      elements.push_back(element.Scalar());
    }
    return elements;
  }
  if (!value.IsScalar()) {
    *ok = false;
    return {};
  }
  std::string text = trim(value.Scalar());
  if (!text.empty() && (text.front() == '[' || text.front() == '(')) {
    const char close = text.front() == '[' ? ']' : ')';
    if (text.back() != close) {
      *ok = false;
      return {};
    }
    text = text.substr(1, text.size() - 2);
  }
  if (trim(text).empty()) return elements;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) elements.push_back(trim(item));
  return elements;
}

template <typename T, typename Parse>
void set_list(std::vector<T>* target, const ConfigField& field, const YAML::Node& value,
              const std::string& source, Parse parse) {
  bool ok = false;
  const std::vector<std::string> elements = list_elements(value, &ok);
  if (!ok) throw_bad_value(field, value, source);
  if (static_cast<int>(elements.size()) < field.min_length ||
      static_cast<int>(elements.size()) > field.max_length) {
    throw_bad_value(field, value, source);
  }
  std::vector<T> parsed;
  for (const std::string& element : elements) {
    T item{};
    if (!parse(element, &item) || !in_range(field, static_cast<double>(item))) {
      throw_bad_value(field, value, source);
    }
    parsed.push_back(item);
  }
  *target = std::move(parsed);
}

// The shortest text that reads back as the same double ("0.2", not "0.20000000000000001").
std::string shortest_double_text(double value) {
  char buffer[32];
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    std::snprintf(buffer, sizeof(buffer), "%.1f", value);  // 10.0, not 1e+01
    return buffer;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::string text = buffer;
  // Keep it a YAML float, not an integer: 1 -> 1.0, 1e-05 stays.
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

template <typename T>
YAML::Node scalar_node(const T& value) {
  if constexpr (std::is_same_v<T, double>) {
    return YAML::Node(shortest_double_text(value));
  } else {
    return YAML::Node(value);
  }
}

std::string format_number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

const std::vector<ConfigField>& config_schema() {
  static const std::vector<ConfigField> schema = build_schema();
  return schema;
}

const ConfigField* find_config_field(const std::string& key) {
  for (const ConfigField& field : config_schema()) {
    if (field.name == key) return &field;
    for (const std::string& alias : field.aliases) {
      if (alias == key) return &field;
    }
  }
  return nullptr;
}

const ConfigField& require_config_field(const std::string& key, const std::string& source) {
  if (const ConfigField* field = find_config_field(key)) return *field;
  std::vector<std::string> names;
  for (const ConfigField& field : config_schema()) {
    names.push_back(field.name);
    names.insert(names.end(), field.aliases.begin(), field.aliases.end());
    // Let "epochs" also match the leaf of "train.epochs" when a user drops the section.
    names.push_back(field.name.substr(field.name.find('.') + 1));
  }
  // No key is longer than 64 characters: a longer one gets no suggestion (and is shortened below).
  std::string closest = key.size() <= 64 ? closest_match(key, names) : "";
  if (!closest.empty() && !find_config_field(closest)) {
    // A bare leaf name: suggest the full dotted name.
    for (const ConfigField& field : config_schema()) {
      if (ends_with(field.name, "." + closest)) closest = field.name;
    }
  }
  std::string message = source + ": unknown key '" + truncate_text(key, 80) + "'";
  message += closest.empty() ? " (run `medseg train --list-config` for the valid keys)"
                             : " (did you mean '" + closest + "'?)";
  throw ClientError(message);
}

void set_config_field(Config& config, const ConfigField& field, const YAML::Node& value,
                      const std::string& source) {
  const FieldRef ref = field.ref(config);
  const bool scalar = value.IsScalar();
  if (auto* target = std::get_if<int*>(&ref)) {
    long long parsed = 0;
    if (!scalar || !parse_integer(value.Scalar(), &parsed) ||
        !in_range(field, static_cast<double>(parsed))) {
      throw_bad_value(field, value, source);
    }
    **target = static_cast<int>(parsed);
  } else if (auto* target = std::get_if<double*>(&ref)) {
    double parsed = 0;
    if (!scalar || !parse_double(value.Scalar(), &parsed) || !in_range(field, parsed)) {
      throw_bad_value(field, value, source);
    }
    **target = parsed;
  } else if (auto* target = std::get_if<bool*>(&ref)) {
    bool parsed = false;
    if (!scalar || !parse_bool(value.Scalar(), &parsed)) throw_bad_value(field, value, source);
    **target = parsed;
  } else if (auto* target = std::get_if<std::string*>(&ref)) {
    if (value.IsNull()) {
      **target = "";
    } else {
      if (!scalar) throw_bad_value(field, value, source);
      const std::string text = trim(value.Scalar());
      if (!field.choices.empty() &&
          std::find(field.choices.begin(), field.choices.end(), text) == field.choices.end()) {
        throw_bad_value(field, value, source);
      }
      **target = text;
    }
  } else if (auto* target = std::get_if<std::vector<int>*>(&ref)) {
    set_list<int>(*target, field, value, source, [](const std::string& text, int* out) {
      long long parsed = 0;
      if (!parse_integer(text, &parsed) || parsed < INT32_MIN || parsed > INT32_MAX) return false;
      *out = static_cast<int>(parsed);
      return true;
    });
  } else if (auto* target = std::get_if<std::vector<double>*>(&ref)) {
    set_list<double>(*target, field, value, source, parse_double);
  }
}

YAML::Node get_config_field(const Config& config, const ConfigField& field) {
  // The accessor hands out a mutable pointer; reading through it leaves the config untouched.
  const FieldRef ref = field.ref(const_cast<Config&>(config));
  YAML::Node node;
  std::visit(
      [&node](auto* member) {
        using T = std::decay_t<decltype(*member)>;
        if constexpr (std::is_same_v<T, std::vector<int>> ||
                      std::is_same_v<T, std::vector<double>>) {
          node = YAML::Node(YAML::NodeType::Sequence);
          node.SetStyle(YAML::EmitterStyle::Flow);
          for (const auto& element : *member) node.push_back(scalar_node(element));
        } else {
          node = scalar_node(*member);
        }
      },
      ref);
  return node;
}

std::string describe_field_type(const ConfigField& field) {
  Config scratch;  // only the alternative held matters, not the value
  const FieldRef ref = field.ref(scratch);
  auto range_text = [&field]() -> std::string {
    const bool has_min = std::isfinite(field.min_value);
    const bool has_max = std::isfinite(field.max_value);
    if (has_min && has_max) {
      return " in [" + format_number(field.min_value) + ", " + format_number(field.max_value) + "]";
    }
    if (has_min) return " >= " + format_number(field.min_value);
    if (has_max) return " <= " + format_number(field.max_value);
    return "";
  };
  auto length_text = [&field]() -> std::string {
    if (field.min_length == field.max_length) return std::to_string(field.min_length) + " ";
    if (field.max_length == std::numeric_limits<int>::max()) return "";
    return std::to_string(field.min_length) + " to " + std::to_string(field.max_length) + " ";
  };
  if (std::holds_alternative<int*>(ref)) return "an integer" + range_text();
  if (std::holds_alternative<double*>(ref)) return "a number" + range_text();
  if (std::holds_alternative<bool*>(ref)) return "true or false";
  if (std::holds_alternative<std::string*>(ref)) {
    return field.choices.empty() ? "a string" : "one of: " + join(field.choices, ", ");
  }
  if (std::holds_alternative<std::vector<int>*>(ref)) {
    return "a list of " + length_text() + "integers" + range_text();
  }
  return "a list of " + length_text() + "numbers" + range_text();
}

}  // namespace medseg

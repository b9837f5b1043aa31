#include "train/training_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "io/torch_archive.h"
#include "train/checkpoint_store.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/strings.h"

namespace medseg {
namespace {

constexpr const char* kStartFresh =
    "; start fresh with another checkpoint folder or checkpoint.resume = false";

// Reads meta[key] into `out`, or throws a ClientError naming the key and what was expected.
class MetaReader {
 public:
  MetaReader(const nlohmann::json& meta, const std::string& path) : meta_(meta), path_(path) {}

  void integer(const char* key, int64_t minimum, int64_t& out) const {
    const nlohmann::json& value = at(key);
    if (!value.is_number_integer() || value.get<int64_t>() < minimum) {
      fail(key, value, "an integer >= " + std::to_string(minimum));
    }
    out = value.get<int64_t>();
  }
  void number(const char* key, double& out, bool positive = false) const {
    const nlohmann::json& value = at(key);
    if (!value.is_number() || !std::isfinite(value.get<double>()) ||
        (positive && !(value.get<double>() > 0.0))) {
      fail(key, value, positive ? "a positive finite number" : "a finite number");
    }
    out = value.get<double>();
  }
  void string(const char* key, std::string& out) const {
    const nlohmann::json& value = at(key);
    if (!value.is_string()) fail(key, value, "a string");
    out = value.get<std::string>();
  }
  void array(const char* key, nlohmann::json& out) const {
    const nlohmann::json& value = at(key);
    if (!value.is_array()) fail(key, value, "an array");
    out = value;
  }

 private:
  const nlohmann::json& at(const char* key) const {
    if (!meta_.contains(key)) {
      throw ClientError("checkpoint " + path_ + ": its metadata has no '" + key +
                        "' (written by another program or version); start fresh with another "
                        "checkpoint folder or checkpoint.resume = false");
    }
    return meta_[key];
  }
  [[noreturn]] void fail(const char* key, const nlohmann::json& value,
                         const std::string& expected) const {
    throw ClientError("checkpoint " + path_ + ": metadata '" + key + "' is " +
                      truncate_text(value.dump(), 80) + ", expected " + expected);
  }

  const nlohmann::json& meta_;
  const std::string& path_;
};

}  // namespace

std::string CheckpointMeta::to_json() const {
  return nlohmann::json{
      {"format_version", kFormatVersion},
      {"reason", reason},
      {"epoch", epoch},
      {"next_step", next_step},
      {"global_step", global_step},
      {"world_size", world_size},
      {"compatibility_key", compatibility_key},
      {"config_yaml", config_yaml},
      {"history", history},
      {"best_mean_dice", best_mean_dice},
      {"best_epoch", best_epoch},
      {"loss_scale", loss_scale},
      {"loss_scale_good_steps", loss_scale_good_steps},
      {"last_loss", last_loss},
  }
      .dump();
}

CheckpointMeta CheckpointMeta::parse(const std::string& text, const std::string& path) {
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw ClientError("checkpoint " + path + ": its metadata is not JSON (" + error.what() + ")");
  }
  if (!meta.is_object()) {
    throw ClientError("checkpoint " + path + ": its metadata is " + truncate_text(meta.dump(), 80) +
                      ", expected a JSON object");
  }
  const MetaReader read(meta, path);
  int64_t version = 0;
  read.integer("format_version", 0, version);
  if (version != kFormatVersion) {
    throw ClientError("checkpoint " + path + " has format version " + std::to_string(version) +
                      "; this medseg reads version " + std::to_string(kFormatVersion) +
                      ": resume it with the medseg that wrote it, or start fresh");
  }
  CheckpointMeta result;
  read.string("reason", result.reason);
  read.integer("epoch", 0, result.epoch);
  read.integer("next_step", 0, result.next_step);
  read.integer("global_step", 0, result.global_step);
  read.integer("world_size", 1, result.world_size);
  read.string("compatibility_key", result.compatibility_key);
  read.string("config_yaml", result.config_yaml);
  read.array("history", result.history);
  read.number("best_mean_dice", result.best_mean_dice);
  read.integer("best_epoch", -1, result.best_epoch);
  read.number("loss_scale", result.loss_scale, /*positive=*/true);
  read.integer("loss_scale_good_steps", 0, result.loss_scale_good_steps);
  read.number("last_loss", result.last_loss);
  return result;
}

void write_training_state(torch::serialize::OutputArchive& archive, const torch::nn::Module& model,
                          const torch::optim::Optimizer& optimizer, const CheckpointMeta& meta) {
  for (const auto& parameter : model.named_parameters()) {
    archive.write("model/" + parameter.key(), parameter.value().detach().cpu());
  }
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("rng/cpu", at::detail::getDefaultCPUGenerator().get_state());
  write_string(archive, "meta", meta.to_json());
}

namespace {

// Runs `read`, turning what LibTorch throws on an archive that is not what it seems (c10::Error,
// and the torch::jit::ObjectAttributeError or ErrorReport of an archive's module missing a field
// or naming an unknown type) into a ClientError naming the checkpoint; medseg's own errors pass.
template <typename Read>
auto reading(const std::string& path, const char* what, Read read) -> decltype(read()) {
  try {
    return read();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    const c10::Error* c10_error = dynamic_cast<const c10::Error*>(&error);
    std::string cause = c10_error ? c10_error->what_without_backtrace() : error.what();
    cause.erase(0, std::min(cause.size(), cause.find_first_not_of(" \n")));
    throw ClientError("checkpoint " + path + ": its " + what + " does not fit this job (" +
                      truncate_text(cause.substr(0, cause.find('\n')), 300) + ")" + kStartFresh);
  }
}

void read_training_state_unguarded(torch::serialize::InputArchive& archive,
                                   const std::string& path, torch::nn::Module& model,
                                   torch::optim::Optimizer& optimizer);

}  // namespace

CheckpointMeta read_checkpoint_meta(torch::serialize::InputArchive& archive,
                                    const std::string& path) {
  return reading(path, "metadata",
                 [&] { return CheckpointMeta::parse(read_string(archive, "meta"), path); });
}

void read_training_state(torch::serialize::InputArchive& archive, const std::string& path,
                         torch::nn::Module& model, torch::optim::Optimizer& optimizer) {
  reading(path, "training state (weights, optimiser or random generator)",
          [&] { read_training_state_unguarded(archive, path, model, optimizer); });
}

namespace {

void read_training_state_unguarded(torch::serialize::InputArchive& archive,
                                   const std::string& path, torch::nn::Module& model,
                                   torch::optim::Optimizer& optimizer) {
  // Every parameter is read and checked before any is changed.
  std::vector<std::pair<at::Tensor, at::Tensor>> updates;
  for (auto& parameter : model.named_parameters()) {
    at::Tensor stored;
    if (!archive.try_read("model/" + parameter.key(), stored)) {
      throw ClientError("checkpoint " + path + " has no parameter '" + parameter.key() +
                        "' of this model");
    }
    const std::string problem = tensor_storage_problem(stored);
    if (!problem.empty()) {
      throw ClientError("checkpoint " + path + ": parameter '" + parameter.key() + "' is " +
                        problem);
    }
    if (stored.sizes() != parameter.value().sizes() || !stored.is_floating_point()) {
      throw ClientError("checkpoint " + path + ": parameter '" + parameter.key() + "' is " +
                        std::string(stored.dtype().name()) + " " + shape_text(stored.sizes()) +
                        ", this model's is " + shape_text(parameter.value().sizes()));
    }
    updates.emplace_back(parameter.value(), stored);
  }
  at::Tensor rng_state;
  if (!archive.try_read("rng/cpu", rng_state)) {
    throw ClientError("checkpoint " + path + " has no 'rng/cpu' random generator state");
  }
  // The generator copies its state out of the tensor's memory as it finds it.
  const at::Tensor current_state = at::detail::getDefaultCPUGenerator().get_state();
  std::string rng_problem = tensor_storage_problem(rng_state);
  if (rng_problem.empty() && (rng_state.scalar_type() != at::kByte || rng_state.dim() != 1 ||
                              rng_state.numel() != current_state.numel())) {
    rng_problem = std::string(rng_state.dtype().name()) + " " + shape_text(rng_state.sizes()) +
                  ", expected uint8 " + shape_text(current_state.sizes());
  }
  if (!rng_problem.empty()) {
    throw ClientError("checkpoint " + path + ": its random generator state 'rng/cpu' is " +
                      rng_problem + kStartFresh);
  }
  rng_state = rng_state.contiguous();
  torch::serialize::InputArchive optimizer_archive;
  if (!archive.try_read("optimizer", optimizer_archive)) {
    throw ClientError("checkpoint " + path + " has no optimiser state");
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [parameter, stored] : updates) parameter.copy_(stored);
  }
  try {
    load_optimizer_state(optimizer, optimizer_archive);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // the global one
    generator.set_state(rng_state);
  } catch (const ClientError& error) {
    throw ClientError("checkpoint " + path + ": its " + error.what() + kStartFresh);
  } catch (const c10::Error& error) {
    throw ClientError("checkpoint " + path +
                      ": its optimiser or random generator state does not fit this job (" +
                      truncate_text(error.what_without_backtrace(), 300) + ")" + kStartFresh);
  }
}

}  // namespace

void check_position(const CheckpointMeta& meta, int64_t steps_per_epoch, const std::string& path) {
  constexpr int64_t kMaxEpochs = 1'000'000'000;  // keeps the product below from overflowing
  if (meta.epoch > kMaxEpochs || meta.next_step > steps_per_epoch ||
      meta.global_step != meta.epoch * steps_per_epoch + meta.next_step) {
    throw ClientError("checkpoint " + path + ": epoch " + std::to_string(meta.epoch) +
                      ", next_step " + std::to_string(meta.next_step) + " and global_step " +
                      std::to_string(meta.global_step) + " disagree with " +
                      std::to_string(steps_per_epoch) +
                      " steps per epoch; expected global_step = epoch x steps per epoch + "
                      "next_step (a damaged or hand-edited checkpoint)");
  }
}

}  // namespace medseg

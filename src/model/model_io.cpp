#include "model/model_io.h"

#include <ATen/core/Dict.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"

namespace medseg {
namespace {

// The module's state dict in registration order: parameters, then buffers (MONAI's UNet has
// none, but a future norm with running statistics would).
std::vector<std::pair<std::string, torch::Tensor>> state_entries(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> entries;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    entries.emplace_back(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    entries.emplace_back(item.key(), item.value());
  }
  return entries;
}

std::string shape_text(c10::IntArrayRef sizes) {
  std::ostringstream text;
  text << sizes;
  return text.str();
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The dict stored in `model_path`, as name -> tensor; ClientError for anything else.
std::map<std::string, torch::Tensor> read_tensor_dict(const std::string& model_path) {
  if (!std::filesystem::is_regular_file(model_path)) {
    throw ClientError("model file " + model_path + " does not exist or is not a regular file");
  }
  const std::string bytes = read_text_file(model_path);
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const c10::Error& error) {
    throw ClientError(
        "model file " + model_path +
        " is not a PyTorch file written by medseg or torch.save: " + first_line(error.what()));
  }
  if (!value.isGenericDict()) {
    throw ClientError("model file " + model_path + " holds a " + value.tagKind() +
                      ", expected a dict of state-dict name -> tensor");
  }
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      throw ClientError("model file " + model_path + " has an entry of types " +
                        entry.key().tagKind() + " -> " + entry.value().tagKind() +
                        ", expected str -> Tensor");
    }
    tensors.emplace(entry.key().toStringRef(), entry.value().toTensor());
  }
  return tensors;
}

}  // namespace

std::string model_config_path(const std::string& model_path) {
  return (std::filesystem::path(model_path).parent_path() / "medseg_config.yaml").string();
}

void save_model_pth(const std::string& model_path, const UNetImpl& unet,
                    const std::string& config_yaml) {
  if (!config_yaml.empty()) write_file_atomically(model_config_path(model_path), config_yaml);
  // A typed Dict keeps insertion order, so Python sees the keys in state-dict order.
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& [name, tensor] : state_entries(unet)) {
    state.insert(name, tensor.detach().to(torch::kCPU).contiguous());
  }
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(state));
  write_file_atomically(model_path, bytes.data(), bytes.size());
}

void load_model_pth(const std::string& model_path, UNetImpl& unet) {
  const std::map<std::string, torch::Tensor> loaded = read_tensor_dict(model_path);
  const auto expected = state_entries(unet);

  std::vector<std::string> problems;
  std::set<std::string> known;
  for (const auto& [name, tensor] : expected) {
    known.insert(name);
    auto found = loaded.find(name);
    if (found == loaded.end()) {
      problems.push_back("missing key " + name + " (model expects shape " +
                         shape_text(tensor.sizes()) + ")");
    } else if (found->second.sizes() != tensor.sizes()) {
      problems.push_back("key " + name + " has shape " + shape_text(found->second.sizes()) +
                         " in the file but the model expects " + shape_text(tensor.sizes()));
    }
  }
  for (const auto& [name, tensor] : loaded) {
    if (!known.count(name)) {
      problems.push_back("unexpected key " + name + " (shape " + shape_text(tensor.sizes()) + ")");
    }
  }
  if (!problems.empty()) {
    constexpr size_t kShown = 5;
    std::string message = "model file " + model_path + " does not fit the configured UNet: ";
    for (size_t i = 0; i < problems.size() && i < kShown; ++i) {
      message += (i ? "; " : "") + problems[i];
    }
    if (problems.size() > kShown) {
      message += "; and " + std::to_string(problems.size() - kShown) + " more";
    }
    message +=
        ". Hint: use the model.channels/strides/num_res_units it was trained with "
        "(see medseg_config.yaml beside it)";
    throw ClientError(message);
  }

  // NaN or infinite weights predict an all-0 or NaN map without a word: refuse them.
  for (const auto& [name, tensor] : loaded) {
    if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>()) {
      throw ClientError("model file " + model_path + ": " + name +
                        " holds NaN or infinite values; expected finite weights (a diverged or "
                        "damaged model)");
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : expected) tensor.copy_(loaded.at(name));
}

}  // namespace medseg

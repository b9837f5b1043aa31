#include "model/model_io.h"

#include <ATen/core/Dict.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "io/torch_archive.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"
#include "util/strings.h"

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

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// LibTorch's archive reader over the open file: reads stay inside it, and the file is not copied
// into memory first. (torch::jit::pickle_load's reader over a byte vector copies whatever miniz
// asks for, past the end of the vector when a damaged archive points there: a heap overflow
// fuzz/fuzz_model found.) miniz calls this from C, so failures are short counts, not throws.
class FileReadAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit FileReadAdapter(const ReadOnlyFile& file) : file_(file) {}
  size_t size() const override { return static_cast<size_t>(file_.size()); }
  size_t read(uint64_t position, void* out, size_t length, const char*) const override {
    if (position >= size()) return 0;
    length = static_cast<size_t>(std::min<uint64_t>(length, size() - position));
    try {
      return static_cast<size_t>(
          file_.read_at(static_cast<int64_t>(position), static_cast<int64_t>(length), out));
    } catch (const std::exception& error) {
      failure = error.what();
      return 0;
    }
  }
  mutable std::string failure;

 private:
  const ReadOnlyFile& file_;
};

// The dict stored in `model_path`, as name -> tensor; ClientError for anything else.
std::map<std::string, torch::Tensor> read_tensor_dict(const std::string& model_path) {
  if (!std::filesystem::is_regular_file(model_path)) {
    throw ClientError("model file " + model_path + " does not exist or is not a regular file");
  }
  const ReadOnlyFile file(model_path, "model file");
  const auto adapter = std::make_shared<FileReadAdapter>(file);
  c10::IValue value;
  try {
    // What torch::jit::pickle_load does, over the adapter: torch.save's zip archive, "data.pkl".
    check_zip_directory(*adapter, "model file " + model_path);
    caffe2::serialize::PyTorchStreamReader reader(adapter);
    check_torch_archive(reader, static_cast<uint64_t>(file.size()), "model file " + model_path);
    value = torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                              /*type_resolver=*/std::nullopt,
                                              /*obj_loader=*/std::nullopt,
                                              /*device=*/std::nullopt, reader);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    if (!adapter->failure.empty()) {
      throw PlatformError("cannot read model file " + model_path + ": " + adapter->failure);
    }
    // c10::Error, and the std::runtime_error or torch::jit::ErrorReport LibTorch throws for
    // some damaged archives.
    const c10::Error* c10_error = dynamic_cast<const c10::Error*>(&error);
    throw ClientError(
        "model file " + model_path + " is not a PyTorch file written by medseg or torch.save: " +
        first_line(c10_error ? c10_error->what_without_backtrace() : error.what()));
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
    const std::string problem = tensor_storage_problem(entry.value().toTensor());
    if (!problem.empty()) {
      throw ClientError("model file " + model_path + ": " +
                        truncate_text(entry.key().toStringRef(), 200) + " is " + problem);
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
    } else if (!found->second.is_floating_point()) {
      // (An integer, bool, complex or bit-packed tensor: LibTorch cannot even copy some.)
      problems.push_back("key " + name + " holds " +
                         std::string(c10::toString(found->second.scalar_type())) +
                         " values, expected floating-point weights");
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

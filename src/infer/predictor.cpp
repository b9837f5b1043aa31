#include "infer/predictor.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>
#include <utility>

#include "config/component_options.h"
#include "data/case_store.h"
#include "data/static_transforms.h"
#include "infer/evaluate.h"
#include "infer/sliding_window.h"
#include "model/model_io.h"
#include "model/unet.h"
#include "train/compute.h"
#include "util/archive.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

constexpr const char* kConfigFileName = "medseg_config.yaml";
constexpr const char* kBestWeights = "best_model.pth";
constexpr const char* kFinalWeights = "model.pth";
constexpr const char* kArchiveName = "model.tar.gz";

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs body(begin, end) over [0, count) in `threads` contiguous chunks.
void parallel_chunks(int64_t count, int threads,
                     const std::function<void(int64_t, int64_t)>& body) {
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, count));
  if (workers == 1) {
    body(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < workers; ++w) {
    pool.emplace_back(body, count * w / workers, count * (w + 1) / workers);
  }
  for (std::thread& thread : pool) thread.join();
}

// Inverse of a 4x4 matrix by Gauss-Jordan elimination with partial pivoting; false if singular.
bool invert(const Affine& matrix, Affine* inverse) {
  Affine a = matrix;
  Affine b = identity_affine();
  for (int column = 0; column < 4; ++column) {
    int pivot = column;
    for (int row = column + 1; row < 4; ++row) {
      if (std::fabs(a[row][column]) > std::fabs(a[pivot][column])) pivot = row;
    }
    if (!(std::fabs(a[pivot][column]) > 1e-12)) return false;
    std::swap(a[column], a[pivot]);
    std::swap(b[column], b[pivot]);
    const double scale = 1.0 / a[column][column];
    for (int k = 0; k < 4; ++k) {
      a[column][k] *= scale;
      b[column][k] *= scale;
    }
    for (int row = 0; row < 4; ++row) {
      if (row == column || a[row][column] == 0.0) continue;
      const double factor = a[row][column];
      for (int k = 0; k < 4; ++k) {
        a[row][k] -= factor * a[column][k];
        b[row][k] -= factor * b[column][k];
      }
    }
  }
  *inverse = b;
  return true;
}

Affine multiply(const Affine& a, const Affine& b) {
  Affine out{};
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      for (int k = 0; k < 4; ++k) out[i][j] += a[i][k] * b[k][j];
    }
  }
  return out;
}

bool is_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error);
}

bool looks_like_model_folder(const fs::path& folder) {
  return is_file(folder / kConfigFileName) || is_file(folder / kFinalWeights) ||
         is_file(folder / kBestWeights);
}

// The model folder inside an extracted archive: its root, or its only sub-folder.
std::string model_folder_in_archive(const std::string& root, const std::string& archive) {
  if (looks_like_model_folder(root)) return root;
  std::vector<fs::path> folders;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    if (entry.is_directory(error)) folders.push_back(entry.path());
  }
  if (folders.size() == 1 && looks_like_model_folder(folders[0])) return folders[0].string();
  throw ClientError("model archive " + archive + " holds no " + kFinalWeights + ", " +
                    kBestWeights + " or " + kConfigFileName +
                    " at its root; expected the model.tar.gz a medseg training job writes");
}

std::string pth_files_in(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const std::string name = entry.path().filename().string();
    if (ends_with(name, ".pth")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names.empty() ? "none" : join(names, ", ");
}

}  // namespace

// ----------------------------------------------------------------------------- CasePredictor

struct CasePredictor::State {
  ResolvedConfig resolved;
  LabelScheme scheme = LabelScheme::kMsd;
  PredictorOptions options;
  std::string weights_file;
  Compute compute;
  UNet model{nullptr};
  SlidingWindowOptions window;
  StaticTransformOptions transforms;

  void load(const std::string& model_path);
  void load_folder(const std::string& folder, const std::string& weights_hint);
};

void CasePredictor::State::load(const std::string& model_path) {
  std::error_code error;
  const fs::path path(model_path);
  if (model_path.empty() || !fs::exists(path, error)) {
    throw ClientError("model " + model_path + ": not found; expected a model folder (model.pth + " +
                      kConfigFileName + "), a model.tar.gz or a .pth file");
  }
  auto from_archive = [&](const std::string& archive) {
    // Removed once the weights are in memory.
    const TemporaryFolder temporary("to extract the model archive in");
    // Weights hardly compress: an archive expanding beyond 32x its size (or 512 MiB) is refused.
    std::error_code size_error;
    const auto archive_bytes = static_cast<int64_t>(fs::file_size(archive, size_error));
    extract_tar(
        archive, temporary.path(), "model archive " + archive,
        std::string("expected SageMaker's model.tar.gz holding model.pth and ") + kConfigFileName,
        std::max<int64_t>(int64_t{512} << 20, size_error ? 0 : 32 * archive_bytes));
    const std::string folder = model_folder_in_archive(temporary.path(), archive);
    try {
      load_folder(folder, "");
    } catch (const ClientError& failure) {
      // Name the archive, not the temporary folder it was extracted to (gone by now).
      std::string message = failure.what();
      for (size_t at = message.find(folder); at != std::string::npos; at = message.find(folder)) {
        message.replace(at, folder.size(), archive + ":");
      }
      throw ClientError(message);
    }
    weights_file = archive + ":" + fs::path(weights_file).filename().string();
  };
  if (fs::is_directory(path, error)) {
    if (!looks_like_model_folder(path) && is_file(path / kArchiveName)) {
      from_archive((path / kArchiveName).string());
      return;
    }
    load_folder(model_path, "");
    return;
  }
  const std::string name = path.filename().string();
  if (ends_with(name, ".tar.gz") || ends_with(name, ".tgz")) {
    from_archive(model_path);
  } else if (ends_with(name, ".pth")) {
    load_folder(path.parent_path().empty() ? "." : path.parent_path().string(), name);
  } else {
    throw ClientError("model " + model_path +
                      ": expected a model folder, a model.tar.gz (.tgz) or a .pth file");
  }
}

void CasePredictor::State::load_folder(const std::string& folder, const std::string& weights_hint) {
  // 1. The configuration the weights were trained with, then the overrides.
  const std::string config_file = (fs::path(folder) / kConfigFileName).string();
  if (!is_file(config_file)) {
    throw ClientError(config_file + ": not found; a medseg model folder holds the " +
                      kConfigFileName +
                      " the training job wrote beside model.pth (it gives pixdim, label scheme, "
                      "architecture and ROI size)");
  }
  apply_yaml_file(resolved, config_file);
  for (const std::string& assignment : options.overrides) apply_override(resolved, assignment);
  validate_config(resolved.config);
  const Config& config = resolved.config;
  scheme = parse_label_scheme(config.data.label_scheme);

  // 2. The weights file.
  std::string chosen = !options.weights.empty() ? options.weights : weights_hint;
  if (chosen.empty()) {
    chosen = is_file(fs::path(folder) / kBestWeights) ? kBestWeights : kFinalWeights;
  }
  const fs::path weights_path =
      fs::path(chosen).is_absolute() ? fs::path(chosen) : fs::path(folder) / chosen;
  if (!is_file(weights_path)) {
    throw ClientError("weights file " + weights_path.string() + ": not found (.pth files in " +
                      folder + ": " + pth_files_in(folder) + ")");
  }
  weights_file = weights_path.string();

  // 3. The device, then the network.
  // On a GPU, the precision the model was validated in during training (its train.amp; auto:
  // bf16 on GPUs that have it); on the CPU, fp32.
  ComputeRequest request;
  request.device = options.device.empty() ? "auto" : options.device;
  request.device_setting = "--device";
  request.local_rank = options.gpu;
  request.amp_setting = "the model's train.amp";
  const bool may_use_gpu = request.device != "cpu" && torch::cuda::is_available();
  request.amp = may_use_gpu ? config.train.amp : "off";
  request.cudnn_benchmark = config.train.cudnn_benchmark;
  request.channels_last = config.train.channels_last;
  compute = resolve_compute(request);
  // The network's weights must fit before it is built (a configuration naming a huge network
  // would otherwise end in the kernel's out-of-memory kill).
  const double weight_bytes = 4.0 * estimated_unet_weights(config.model);
  const int64_t available = free_memory_bytes(compute);
  if (available > 0 && weight_bytes > static_cast<double>(available)) {
    throw ClientError("the model's model.channels need about " +
                      std::to_string(static_cast<int64_t>(weight_bytes / (1 << 20))) +
                      " MiB of weights, more than the " +
                      std::to_string(available / (1 << 20)) + " MiB free for them");
  }
  model = UNet(unet_options_from_config(config.model));
  load_model_pth(weights_file, *model);
  model->to(compute.device);
  to_compute_layout(*model, compute);
  model->eval();

  window = sliding_window_options_from_config(config);

  // Whole-volume statistics, as validation and MONAI's tutorial.
  transforms = static_transform_options_from_config(config, /*normalize=*/true);
  transforms.threads = resolve_threads(options.threads);
}

CasePredictor::CasePredictor(const std::string& model_path, const PredictorOptions& options)
    : state_(std::make_unique<State>()) {
  state_->options = options;
  state_->load(model_path);
}

CasePredictor::~CasePredictor() = default;

const ResolvedConfig& CasePredictor::config() const { return state_->resolved; }
LabelScheme CasePredictor::label_scheme() const { return state_->scheme; }
const std::string& CasePredictor::weights_file() const { return state_->weights_file; }
std::string CasePredictor::device_name() const { return state_->compute.device.str(); }

std::string CasePredictor::precision() const { return state_->compute.precision; }

Prediction CasePredictor::predict(const NiftiVolume& image, const std::string& case_id) {
  State& s = *state_;
  // NaN/Inf voxels would give an all-0 or NaN map: refused, as training refuses them.
  check_finite_intensities(image, case_id);
  // 1. Static transforms, no label.
  CaseData data = preprocess_case(image, nullptr, s.transforms, case_id);
  const std::array<int64_t, 3>& shape = data.spatial_shape;
  const int64_t voxels = data.voxels_per_channel();

  // 2. Sliding window -> sigmoid probabilities -> masks.
  at::Tensor probabilities;
  {
    torch::NoGradGuard no_grad;
    const at::Tensor input =
        at::from_blob(data.image.data(), {1, data.image_channels, shape[0], shape[1], shape[2]},
                      at::kFloat)
            .to(s.compute.device);
    probabilities = predict_probabilities(s.model, input, s.window, s.compute)
                        .to(at::kCPU, at::kFloat)
                        .contiguous();
  }
  const int64_t channels = probabilities.size(0);
  if (channels != 3) {
    throw ClientError("model.out_channels = " + std::to_string(channels) +
                      ": inference needs the 3 channels [TC, WT, ET]");
  }
  const float threshold = static_cast<float>(s.resolved.config.sliding_window.threshold);
  const float* probability = probabilities.data_ptr<float>();
  data.label_channels = channels;
  data.label.resize(static_cast<size_t>(channels * voxels));
  for (int64_t i = 0; i < channels * voxels; ++i) {
    data.label[i] = probability[i] >= threshold ? 1 : 0;
  }

  // 3-5. Back to the source grid, in the scheme's values, with the source header.
  Prediction prediction;
  prediction.preprocessed_shape = shape;
  prediction.label_map =
      label_map_in_original_grid(data, s.scheme, image.header, s.transforms.threads);

  if (s.options.keep_probabilities) {
    NiftiVolume& out = prediction.probabilities;
    out.ndim = 4;
    out.dim = {shape[0], shape[1], shape[2], channels};
    out.affine = data.affine;
    out.header = image.header;
    out.header.datatype = static_cast<int>(NiftiDataType::kFloat32);
    out.data.resize(static_cast<size_t>(channels * voxels));
    // C-order [c, x, y, z] -> NIfTI order (x fastest, channel last).
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t x = 0; x < shape[0]; ++x) {
        for (int64_t y = 0; y < shape[1]; ++y) {
          const float* row = probability + ((c * shape[0] + x) * shape[1] + y) * shape[2];
          for (int64_t z = 0; z < shape[2]; ++z) {
            out.data[x + shape[0] * (y + shape[1] * (z + shape[2] * c))] = row[z];
          }
        }
      }
    }
  }
  return prediction;
}

// ----------------------------------------------------------------------------- back-mapping

std::vector<uint8_t> map_channels_to_original_grid(const std::vector<uint8_t>& channels,
                                                   int64_t channel_count,
                                                   const std::array<int64_t, 3>& shape,
                                                   const Affine& affine,
                                                   const OriginalGeometry& original, int threads) {
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  if (static_cast<int64_t>(channels.size()) != channel_count * voxels || voxels <= 0) {
    throw InternalError("map_channels_to_original_grid: " + std::to_string(channels.size()) +
                        " mask values for " + std::to_string(channel_count) + " channels of " +
                        std::to_string(voxels) + " voxels");
  }
  Affine to_world_inverse;
  if (!invert(affine, &to_world_inverse)) {
    throw InternalError("map_channels_to_original_grid: the preprocessed affine is singular");
  }
  // Source voxel -> continuous preprocessed voxel.
  const Affine to_preprocessed = multiply(to_world_inverse, original.affine);
  const int64_t nx = original.spatial_shape[0], ny = original.spatial_shape[1],
                nz = original.spatial_shape[2];
  const int64_t out_voxels = nx * ny * nz;
  std::vector<uint8_t> out(static_cast<size_t>(channel_count * out_voxels), 0);
  auto nearest = [](double position, int64_t size) {
    const double rounded = std::floor(position + 0.5);
    return static_cast<int64_t>(std::min(static_cast<double>(size - 1), std::max(0.0, rounded)));
  };
  // Parallel over z-slices of the source grid.
  parallel_chunks(nz, threads, [&](int64_t z_begin, int64_t z_end) {
    for (int64_t z = z_begin; z < z_end; ++z) {
      for (int64_t y = 0; y < ny; ++y) {
        double base[3];
        for (int r = 0; r < 3; ++r) {
          base[r] = to_preprocessed[r][1] * static_cast<double>(y) +
                    to_preprocessed[r][2] * static_cast<double>(z) + to_preprocessed[r][3];
        }
        for (int64_t x = 0; x < nx; ++x) {
          int64_t index[3];
          for (int r = 0; r < 3; ++r) {
            index[r] = nearest(base[r] + to_preprocessed[r][0] * static_cast<double>(x), shape[r]);
          }
          const int64_t source = (index[0] * shape[1] + index[1]) * shape[2] + index[2];
          const int64_t target = x + nx * (y + ny * z);
          for (int64_t c = 0; c < channel_count; ++c) {
            out[c * out_voxels + target] = channels[c * voxels + source];
          }
        }
      }
    }
  });
  return out;
}

void channels_to_label_values(const uint8_t* channels, int64_t count, LabelScheme scheme,
                              float* values) {
  // Values for: ET, TC without ET, WT without TC (priority order), background 0.
  float et_value = 3, tc_value = 2, wt_value = 1;
  switch (scheme) {
    case LabelScheme::kMsd:
      break;
    case LabelScheme::kBrats:
      et_value = 4, tc_value = 1, wt_value = 2;
      break;
    case LabelScheme::kMonaiTutorial:
      et_value = 2, tc_value = 3, wt_value = 1;
      break;
  }
  const uint8_t* tc = channels;
  const uint8_t* wt = channels + count;
  const uint8_t* et = channels + 2 * count;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = et[i] ? et_value : tc[i] ? tc_value : wt[i] ? wt_value : 0.0f;
  }
}

NiftiVolume label_map_in_original_grid(const CaseData& prediction, LabelScheme scheme,
                                       const NiftiHeaderInfo& source_header, int threads) {
  if (prediction.label_channels != 3) {
    throw InternalError("label_map_in_original_grid: case '" + prediction.case_id + "' has " +
                        std::to_string(prediction.label_channels) +
                        " label channels, expected [TC, WT, ET]");
  }
  const std::vector<uint8_t> masks =
      map_channels_to_original_grid(prediction.label, 3, prediction.spatial_shape,
                                    prediction.affine, prediction.original, threads);
  NiftiVolume label_map;
  const std::array<int64_t, 3>& shape = prediction.original.spatial_shape;
  label_map.ndim = 3;
  label_map.dim = {shape[0], shape[1], shape[2], 1};
  label_map.affine = prediction.original.affine;
  for (int axis = 0; axis < 3; ++axis) {
    const Affine& a = label_map.affine;
    label_map.pixdim[axis] =
        std::sqrt(a[0][axis] * a[0][axis] + a[1][axis] * a[1][axis] + a[2][axis] * a[2][axis]);
  }
  label_map.header = source_header;
  label_map.header.datatype = static_cast<int>(NiftiDataType::kUint8);
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  label_map.data.resize(static_cast<size_t>(voxels));
  channels_to_label_values(masks.data(), voxels, scheme, label_map.data.data());
  return label_map;
}

}  // namespace medseg

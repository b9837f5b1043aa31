#include "data/case_discovery.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>

#include "util/buffer_pool.h"
#include "util/error.h"
#include "util/json_file.h"
#include "util/strings.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

// BraTS file suffixes in Task01's modality order (FLAIR, T1w, T1gd, T2w), then the label.
constexpr const char* kBratsModalities[] = {"flair", "t1", "t1ce", "t2"};
constexpr const char* kBratsLabel = "seg";

// The NIfTI file in `folder` whose name without extension ends with "_<suffix>".
std::string find_modality_file(const fs::path& folder, const std::string& suffix) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    const std::string name = entry.path().filename().string();
    if (is_nifti_file_name(name) && ends_with(strip_nifti_extension(name), "_" + suffix)) {
      return entry.path().string();
    }
  }
  return "";
}

bool is_brats_case_folder(const fs::path& folder) {
  return !find_modality_file(folder, kBratsModalities[0]).empty();
}

std::vector<fs::path> sorted_entries(const fs::path& folder) {
  std::vector<fs::path> entries;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) entries.push_back(entry.path());
  std::sort(entries.begin(), entries.end());
  return entries;
}

std::vector<CaseSource> discover_decathlon(const fs::path& root, bool require_labels) {
  const std::string dataset_file = (root / "dataset.json").string();
  const nlohmann::json dataset = read_json_file(dataset_file, /*required=*/true);
  if (!dataset.is_object() || !dataset.contains("training") || !dataset["training"].is_array()) {
    throw ClientError(dataset_file +
                      ": expected an object with a \"training\" list of "
                      "{\"image\": ..., \"label\": ...} entries");
  }
  std::vector<CaseSource> cases;
  const nlohmann::json& training = dataset["training"];
  for (size_t i = 0; i < training.size(); ++i) {
    const nlohmann::json& entry = training[i];
    const std::string where = dataset_file + ": training[" + std::to_string(i) + "]";
    auto path_of = [&](const char* key, bool required) -> std::string {
      if (!entry.is_object() || !entry.contains(key)) {
        if (required) throw ClientError(where + " has no \"" + key + "\" entry");
        return "";
      }
      if (!entry[key].is_string()) {
        throw ClientError(where + "." + key + " must be a path string, got " + entry[key].dump());
      }
      const std::string relative = entry[key].get<std::string>();
      const fs::path path = fs::path(relative).is_absolute() ? fs::path(relative)
                                                             : (root / relative).lexically_normal();
      std::error_code error;
      if (!fs::is_regular_file(path, error)) {
        throw ClientError(where + "." + key + " = '" + relative + "': file not found (" +
                          path.string() + ")");
      }
      return path.string();
    };
    CaseSource source;
    source.image_files = {path_of("image", true)};
    source.label_file = path_of("label", require_labels);
    source.case_id = strip_nifti_extension(fs::path(source.image_files[0]).filename().string());
    cases.push_back(std::move(source));
  }
  if (cases.empty()) throw ClientError(dataset_file + ": the \"training\" list is empty");
  return cases;
}

std::vector<fs::path> brats_case_folders(const fs::path& root) {
  std::vector<fs::path> folders;
  // Case folders directly under the root, or one level down (an archive's top folder).
  for (const fs::path& entry : sorted_entries(root)) {
    std::error_code error;
    if (!fs::is_directory(entry, error)) continue;
    if (is_brats_case_folder(entry)) {
      folders.push_back(entry);
      continue;
    }
    for (const fs::path& nested : sorted_entries(entry)) {
      if (fs::is_directory(nested, error) && is_brats_case_folder(nested)) {
        folders.push_back(nested);
      }
    }
  }
  return folders;
}

std::vector<CaseSource> discover_brats(const fs::path& root, bool require_labels) {
  std::vector<CaseSource> cases;
  for (const fs::path& folder : brats_case_folders(root)) {
    CaseSource source;
    source.case_id = folder.filename().string();
    for (const char* modality : kBratsModalities) {
      const std::string file = find_modality_file(folder, modality);
      if (file.empty()) {
        throw ClientError("BraTS case " + folder.string() + " has no *_" + modality +
                          ".nii[.gz] file (expected flair, t1, t1ce, t2 and seg)");
      }
      source.image_files.push_back(file);
    }
    source.label_file = find_modality_file(folder, kBratsLabel);
    if (require_labels && source.label_file.empty()) {
      throw ClientError("BraTS case " + folder.string() + " has no *_seg.nii[.gz] label file");
    }
    cases.push_back(std::move(source));
  }
  if (cases.empty()) {
    throw ClientError(root.string() + ": no BraTS case folders (folders with *_flair.nii.gz)");
  }
  return cases;
}

std::vector<std::string> record_files_in(const fs::path& root) {
  std::vector<std::string> files;
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(root, error);
       it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (error) break;
    if (it->is_regular_file(error) && ends_with(it->path().filename().string(), kShardFileSuffix)) {
      files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

bool is_nifti_file_name(const std::string& name) {
  return ends_with(name, ".nii") || ends_with(name, ".nii.gz");
}

std::string strip_nifti_extension(const std::string& name) {
  if (ends_with(name, ".nii.gz")) return name.substr(0, name.size() - 7);
  if (ends_with(name, ".nii")) return name.substr(0, name.size() - 4);
  return name;
}

const char* dataset_layout_name(DatasetLayout layout) {
  switch (layout) {
    case DatasetLayout::kDecathlon:
      return "decathlon";
    case DatasetLayout::kBrats:
      return "brats";
    case DatasetLayout::kRecords:
      return "records";
  }
  return "unknown";
}

DatasetIndex discover_dataset(const std::string& root, const std::string& layout,
                              bool require_labels) {
  std::error_code error;
  if (!fs::is_directory(root, error)) {
    throw ClientError(root + ": data folder not found");
  }
  DatasetIndex index;
  index.root = root;
  std::string chosen = layout;
  if (chosen == "auto") {
    if (fs::exists(fs::path(root) / "dataset.json", error)) {
      chosen = "decathlon";
    } else if (!record_files_in(root).empty()) {
      chosen = "records";
    } else if (!brats_case_folders(root).empty()) {
      chosen = "brats";
    } else {
      throw ClientError(root +
                        ": no data found: expected a Decathlon folder (dataset.json), "
                        "BraTS case folders (*_flair.nii.gz ...) or medseg records (*" +
                        std::string(kShardFileSuffix) + ")");
    }
  }
  if (chosen == "decathlon") {
    index.layout = DatasetLayout::kDecathlon;
    index.cases = discover_decathlon(root, require_labels);
  } else if (chosen == "brats") {
    index.layout = DatasetLayout::kBrats;
    index.cases = discover_brats(root, require_labels);
  } else if (chosen == "records") {
    index.layout = DatasetLayout::kRecords;
    index.record_files = record_files_in(root);
    if (index.record_files.empty()) {
      throw ClientError(root + ": no medseg record files (*" + std::string(kShardFileSuffix) + ")");
    }
  } else {
    throw ClientError("data.layout = '" + layout +
                      "': expected one of auto, decathlon, brats, records");
  }
  return index;
}

NiftiVolume load_case_image(const CaseSource& source, const NiftiReadOptions& options,
                            CaseBuffers* buffers) {
  if (source.image_files.size() == 1) return read_nifti(source.image_files[0], options, buffers);
  // The first modality is read on its own (its size says how large the stack is) and copied in;
  // the others are decoded straight into their place in the stack.
  NiftiReadOptions stack_options = options;
  stack_options.voxels_in_place = false;  // each modality's voxels go to its place in the stack
  NiftiVolume stacked = read_nifti(source.image_files[0], stack_options, buffers);
  if (stacked.dim[3] != 1) {
    throw ClientError(source.image_files[0] + ": expected a 3-D modality image, got " +
                      std::to_string(stacked.dim[3]) + " volumes");
  }
  const int64_t volume_size = static_cast<int64_t>(stacked.data.size());
  const int64_t modalities = static_cast<int64_t>(source.image_files.size());
  const size_t room = static_cast<size_t>(volume_size * modalities + kNiftiDecodeSlackFloats);
  std::vector<float> all =
      buffers != nullptr ? buffers->floats.take(room) : std::vector<float>(room);
  std::copy(stacked.data.begin(), stacked.data.end(), all.begin());
  if (buffers != nullptr) {
    buffers->floats.give(std::exchange(stacked.data, std::move(all)));
  } else {
    stacked.data = std::move(all);
  }
  stacked.ndim = 4;
  stacked.dim[3] = modalities;
  for (int64_t m = 1; m < modalities; ++m) {
    const std::string& file = source.image_files[static_cast<size_t>(m)];
    float* place = stacked.data.data() + m * volume_size;
    const int64_t room_left = static_cast<int64_t>(room) - m * volume_size;
    // A modality of another shape may have been decoded over the places after its own (never
    // beyond the stack's room); it is refused below either way.
    NiftiVolume modality = read_nifti(file, stack_options, buffers, place, room_left);
    if (modality.dim[3] != 1) {
      throw ClientError(file + ": expected a 3-D modality image, got " +
                        std::to_string(modality.dim[3]) + " volumes");
    }
    for (int axis = 0; axis < 3; ++axis) {
      if (modality.dim[axis] != stacked.dim[axis]) {
        throw ClientError("case " + source.case_id + ": " + file + " has shape " +
                          std::to_string(modality.dim[0]) + "x" + std::to_string(modality.dim[1]) +
                          "x" + std::to_string(modality.dim[2]) + " but " + source.image_files[0] +
                          " has " + std::to_string(stacked.dim[0]) + "x" +
                          std::to_string(stacked.dim[1]) + "x" + std::to_string(stacked.dim[2]));
      }
    }
    for (int row = 0; row < 3; ++row) {
      for (int column = 0; column < 4; ++column) {
        if (std::fabs(modality.affine[row][column] - stacked.affine[row][column]) > 1e-3) {
          throw ClientError("case " + source.case_id + ": the affine of " + file +
                            " differs from that of " + source.image_files[0] +
                            " (modalities must share one grid)");
        }
      }
    }
    if (!modality.data.empty()) {  // it needed more room than its place (8-byte voxels)
      std::copy(modality.data.begin(), modality.data.end(), place);
      if (buffers != nullptr) buffers->floats.give(std::move(modality.data));
    }
    stacked.known_finite = stacked.known_finite && modality.known_finite;
  }
  stacked.data.resize(static_cast<size_t>(volume_size * modalities));
  return stacked;
}

}  // namespace medseg

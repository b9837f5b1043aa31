#include "data/case_discovery.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

namespace {

std::string shape_text(const std::array<int64_t, 4>& dim) {
  return std::to_string(dim[0]) + "x" + std::to_string(dim[1]) + "x" + std::to_string(dim[2]);
}

}  // namespace

NiftiVolume load_case_image(const CaseSource& source, const NiftiReadOptions& options,
                            CaseBuffers* buffers) {
  if (source.image_files.size() == 1) return read_nifti(source.image_files[0], options, buffers);
  // Modalities in separate files are decoded into their places in one stack. The headers come
  // first: they size the stack and refuse a modality of another shape before any voxel is read.
  const std::vector<std::string>& files = source.image_files;
  const int64_t modalities = static_cast<int64_t>(files.size());
  std::vector<NiftiLayout> layouts;
  for (const std::string& file : files) {
    layouts.push_back(read_nifti_layout(file, options));
    const NiftiLayout& layout = layouts.back();
    if (layout.dim[3] != 1) {
      throw ClientError(file + ": expected a 3-D modality image, got " +
                        std::to_string(layout.dim[3]) + " volumes");
    }
    if (layout.dim != layouts[0].dim) {
      throw ClientError("case " + source.case_id + ": " + file + " has shape " +
                        shape_text(layout.dim) + " but " + files[0] + " has " +
                        shape_text(layouts[0].dim));
    }
  }
  const int64_t volume_size = layouts[0].dim[0] * layouts[0].dim[1] * layouts[0].dim[2];
  // Plain float32 .nii.gz modalities stay where the decompression writes them, and so do
  // unscaled int16 ones (the stack then holds int16 voxels, two per float): each file's header
  // bytes land just before its place, at the end of the previous modality's place, so the files
  // are decoded last to first (and the stack starts `lead` voxels in, for the first one's
  // header). Other files, or a mix, are decoded first to last, each into its place, where it is
  // converted to floats (its header bytes, ahead of its voxels, may pass into later places, which
  // are decoded after).
  const bool raw_int16 = layouts[0].raw_int16;
  const int64_t per_float = raw_int16 ? 2 : 1;  // voxels per float of an in-place stack
  int64_t lead = 0;
  bool in_place = options.voxels_in_place && volume_size % per_float == 0;
  for (const NiftiLayout& layout : layouts) {
    in_place = in_place && layout.in_place_prefix >= 0 && layout.raw_int16 == raw_int16 &&
               layout.in_place_prefix % per_float == 0 &&
               layout.in_place_prefix <= kNiftiDecodeSlackFloats;
    lead = std::max(lead, layout.in_place_prefix);
  }
  if (!in_place) lead = 0;
  const int64_t unit = in_place ? per_float : 1;
  const int64_t room = (lead + volume_size * modalities) / unit + kNiftiDecodeSlackFloats;
  std::vector<float> all = buffers != nullptr ? buffers->floats.take(static_cast<size_t>(room))
                                              : std::vector<float>(static_cast<size_t>(room));
  NiftiReadOptions read = options;
  read.voxels_in_place = in_place;
  NiftiVolume first;  // modality 0's header facts
  std::vector<Affine> affines(static_cast<size_t>(modalities));
  bool known_finite = true;
  for (int64_t i = 0; i < modalities; ++i) {
    const int64_t m = in_place ? modalities - 1 - i : i;
    const std::string& file = files[static_cast<size_t>(m)];
    const int64_t place = lead + m * volume_size;  // in voxels
    // In place: exactly the header and the voxels, so that nothing reaches the next place.
    const int64_t prefix = in_place ? layouts[static_cast<size_t>(m)].in_place_prefix : 0;
    float* into = all.data() + (place - prefix) / unit;
    const int64_t into_floats =
        in_place ? (prefix + volume_size) / unit : room - static_cast<int64_t>(into - all.data());
    NiftiVolume modality = read_nifti(file, read, buffers, into, into_floats);
    // The header is read again: a file changed since its layout was read is refused or handled.
    const std::string changed = " (the file changed while it was read?)";
    if (modality.dim != layouts[0].dim) {
      throw ClientError("case " + source.case_id + ": " + file + " has shape " +
                        shape_text(modality.dim) + " but " + files[0] + " has " +
                        shape_text(layouts[0].dim) + changed);
    }
    if (in_place) {
      if (!modality.data.empty() || modality.first_voxel != prefix ||
          modality.raw_int16 != raw_int16) {
        throw ClientError("case " + source.case_id + ": " + file +
                          " was not decoded as its header said" + changed);
      }
    } else {
      // Voxels decoded elsewhere (8-byte voxels need more room than their place) are moved in.
      float* to = all.data() + place;
      const float* voxels = modality.data.empty() ? into : modality.voxels();
      if (voxels != to) std::memmove(to, voxels, static_cast<size_t>(volume_size) * 4);
    }
    if (buffers != nullptr) buffers->floats.give(std::move(modality.data));
    modality.data.clear();
    known_finite = known_finite && modality.known_finite;
    affines[static_cast<size_t>(m)] = modality.affine;
    if (m == 0) first = std::move(modality);
  }
  for (int64_t m = 1; m < modalities; ++m) {
    for (int row = 0; row < 3; ++row) {
      for (int column = 0; column < 4; ++column) {
        if (std::fabs(affines[static_cast<size_t>(m)][row][column] - affines[0][row][column]) >
            1e-3) {
          throw ClientError("case " + source.case_id + ": the affine of " +
                            files[static_cast<size_t>(m)] + " differs from that of " + files[0] +
                            " (modalities must share one grid)");
        }
      }
    }
  }
  first.data = std::move(all);
  first.data.resize(static_cast<size_t>((lead + volume_size * modalities) / unit));
  first.first_voxel = lead;
  first.raw_int16 = in_place && raw_int16;
  first.ndim = 4;
  first.dim[3] = modalities;
  first.known_finite = known_finite;
  return first;
}

}  // namespace medseg

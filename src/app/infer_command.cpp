// `medseg infer`: sliding-window inference over NIfTI cases (SPEC §9). The story:
//   1. resolve paths: --model / --input / --output, each defaulting to the SageMaker training-job
//      layout (channels `model` and `data`, results to <ml-root>/model)
//   2. load the model (infer/predictor.h) and find the cases
//   3. per case: read, predict, write <case_id>.nii.gz (and <case_id>_probabilities.nii.gz), one
//      log line with the seconds it took
//   4. write <output>/inference_summary.json; cases that failed on bad input are listed there and
//      end the command with one ClientError naming them (the other cases' results stay written)
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "data/case_discovery.h"
#include "infer/predictor.h"
#include "sagemaker/ml_paths.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"
#include "util/log.h"
#include "util/strings.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

constexpr const char* kModelChannel = "model";
constexpr const char* kDataChannel = "data";
constexpr const char* kSummaryFile = "inference_summary.json";
constexpr const char* kBratsModalities[] = {"flair", "t1", "t1ce", "t2"};

CaseSource single_image_case(const fs::path& file) {
  CaseSource source;
  source.case_id = strip_nifti_extension(file.filename().string());
  source.image_files = {file.string()};
  return source;
}

// The NIfTI files directly in `folder`, sorted.
std::vector<fs::path> nifti_files_in(const fs::path& folder) {
  std::vector<fs::path> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(folder, error)) {
    if (entry.is_regular_file(error) && is_nifti_file_name(entry.path().filename().string())) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

// One BraTS case folder given directly: its four modality files in Task01's order.
bool brats_case_in(const fs::path& folder, CaseSource* source) {
  const std::vector<fs::path> files = nifti_files_in(folder);
  source->case_id = folder.filename().string();
  source->image_files.clear();
  for (const char* modality : kBratsModalities) {
    for (const fs::path& file : files) {
      if (ends_with(strip_nifti_extension(file.filename().string()), std::string("_") + modality)) {
        source->image_files.push_back(file.string());
        break;
      }
    }
  }
  return source->image_files.size() == std::size(kBratsModalities);
}

// Decathlon dataset.json: the images of "training" ({image, label}) and "test" (paths or
// {image}) entries; labels are not needed.
std::vector<CaseSource> decathlon_cases(const fs::path& root) {
  const std::string dataset_file = (root / "dataset.json").string();
  const nlohmann::json dataset = read_json_file(dataset_file, /*required=*/true);
  if (!dataset.is_object()) {
    throw ClientError(dataset_file +
                      ": expected an object with \"training\" and/or \"test\" lists");
  }
  std::vector<CaseSource> cases;
  for (const char* list : {"training", "test"}) {
    if (!dataset.contains(list)) continue;
    if (!dataset[list].is_array()) {
      throw ClientError(dataset_file + ": \"" + list + "\" must be a list");
    }
    const nlohmann::json& entries = dataset[list];
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string where = dataset_file + ": " + list + "[" + std::to_string(i) + "]";
      const nlohmann::json& entry = entries[i];
      const nlohmann::json* image = &entry;
      if (entry.is_object()) {
        if (!entry.contains("image")) throw ClientError(where + " has no \"image\" entry");
        image = &entry["image"];
      }
      if (!image->is_string()) {
        throw ClientError(where + ": expected an image path string, got " + image->dump());
      }
      const std::string relative = image->get<std::string>();
      const fs::path path = fs::path(relative).is_absolute() ? fs::path(relative)
                                                             : (root / relative).lexically_normal();
      std::error_code error;
      if (!fs::is_regular_file(path, error)) {
        throw ClientError(where + " = '" + relative + "': file not found (" + path.string() + ")");
      }
      cases.push_back(single_image_case(path));
    }
  }
  if (cases.empty()) {
    throw ClientError(dataset_file + ": no cases in its \"training\" or \"test\" lists");
  }
  return cases;
}

// The cases of `input`: a NIfTI file; a Decathlon folder (dataset.json); BraTS case folders (or
// one BraTS case folder); a folder of NIfTI images; or a Decathlon folder without dataset.json
// (imagesTr/, imagesTs/).
std::vector<CaseSource> inference_cases(const std::string& input) {
  std::error_code error;
  const fs::path root(input);
  if (input.empty() || !fs::exists(root, error)) {
    throw ClientError("input " + input +
                      ": not found; expected a NIfTI file or a folder of cases (Decathlon "
                      "dataset.json, BraTS case folders or *.nii.gz images)");
  }
  if (!fs::is_directory(root, error)) {
    if (!is_nifti_file_name(root.filename().string())) {
      throw ClientError("input " + input + ": expected a .nii or .nii.gz file or a folder");
    }
    return {single_image_case(root)};
  }
  if (fs::exists(root / "dataset.json", error)) return decathlon_cases(root);
  CaseSource one_case;
  if (brats_case_in(root, &one_case)) return {one_case};
  const std::vector<fs::path> images = nifti_files_in(root);
  std::vector<CaseSource> cases;
  if (!images.empty()) {
    for (const fs::path& file : images) cases.push_back(single_image_case(file));
    return cases;
  }
  for (const char* folder : {"imagesTr", "imagesTs"}) {
    for (const fs::path& file : nifti_files_in(root / folder)) {
      cases.push_back(single_image_case(file));
    }
  }
  if (!cases.empty()) return cases;
  // BraTS case folders (directly under the root or one level down).
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    if (!entry.is_directory(error)) continue;
    folders.push_back(entry.path());
    for (const auto& nested : fs::directory_iterator(entry.path(), error)) {
      if (nested.is_directory(error)) folders.push_back(nested.path());
    }
  }
  for (const fs::path& folder : folders) {
    CaseSource probe;
    if (brats_case_in(folder, &probe)) {
      return discover_dataset(input, "brats", /*require_labels=*/false).cases;
    }
  }
  throw ClientError("input " + input +
                    ": no cases found; expected a NIfTI file, a Decathlon folder (dataset.json, "
                    "or imagesTr/ imagesTs/), a folder of *.nii(.gz) images, or BraTS case "
                    "folders (*_flair, *_t1, *_t1ce, *_t2)");
}

// Refuses duplicate case ids and outputs that would overwrite an input image.
void check_outputs(const std::vector<CaseSource>& cases, const std::string& output_dir,
                   bool probabilities) {
  std::map<std::string, std::string> first_image_of;
  std::map<std::string, std::string> inputs;  // canonical path -> as given
  for (const CaseSource& source : cases) {
    const auto [it, inserted] = first_image_of.emplace(source.case_id, source.image_files[0]);
    if (!inserted) {
      throw ClientError("input images " + it->second + " and " + source.image_files[0] +
                        " have the same case id '" + source.case_id +
                        "', so their outputs would collide; rename one");
    }
    for (const std::string& file : source.image_files) {
      inputs[fs::weakly_canonical(file).string()] = file;
    }
  }
  for (const CaseSource& source : cases) {
    std::vector<std::string> outputs = {output_dir + "/" + source.case_id + ".nii.gz"};
    if (probabilities)
      outputs.push_back(output_dir + "/" + source.case_id + "_probabilities.nii.gz");
    for (const std::string& output : outputs) {
      const auto found = inputs.find(fs::weakly_canonical(output).string());
      if (found != inputs.end()) {
        throw ClientError("--output " + output_dir + " would overwrite input image " +
                          found->second + "; choose another output folder");
      }
    }
  }
}

std::string shape_text(const std::array<int64_t, 3>& shape) {
  return std::to_string(shape[0]) + "x" + std::to_string(shape[1]) + "x" + std::to_string(shape[2]);
}

}  // namespace

int run_infer_command(const std::string& ml_root, const InferCommandOptions& options) {
  // 1. Paths: flags, else the SageMaker training-job layout.
  const MlPaths paths{ml_root};
  const std::string model_path =
      options.model_path.empty() ? paths.channel_dir(kModelChannel) : options.model_path;
  const std::string input_path =
      options.input_path.empty() ? paths.channel_dir(kDataChannel) : options.input_path;
  const std::string output_dir =
      options.output_dir.empty() ? paths.model_dir() : options.output_dir;
  spdlog::info("medseg {} infer: model {}, input {}, output {}", MEDSEG_VERSION, model_path,
               input_path, output_dir);

  // 2. Model and cases.
  const Clock::time_point job_start = Clock::now();
  PredictorOptions predictor_options;
  predictor_options.weights = options.weights;
  predictor_options.device = options.device.empty() ? "auto" : options.device;
  predictor_options.overrides = options.overrides;
  predictor_options.keep_probabilities = options.probabilities;
  CasePredictor predictor(model_path, predictor_options);
  const Config& config = predictor.config().config;
  const std::vector<CaseSource> cases = inference_cases(input_path);
  spdlog::info("model {} on {} ({}): label scheme {}, pixdim {}x{}x{}, roi {}x{}x{}, {} case(s)",
               predictor.weights_file(), predictor.device_name(), predictor.precision(),
               config.data.label_scheme, config.data.pixdim[0], config.data.pixdim[1],
               config.data.pixdim[2], config.augment.roi_size[0], config.augment.roi_size[1],
               config.augment.roi_size[2], cases.size());
  std::error_code error;
  fs::create_directories(output_dir, error);
  if (error) {
    throw PlatformError("cannot create output folder " + output_dir + ": " + error.message());
  }
  check_outputs(cases, output_dir, options.probabilities);

  // 3. One case at a time.
  NiftiReadOptions read_options;
  read_options.max_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  nlohmann::json case_entries = nlohmann::json::array();
  std::vector<std::string> failures;
  double predicted_seconds = 0.0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const CaseSource& source = cases[i];
    const Clock::time_point start = Clock::now();
    nlohmann::json entry = {{"case_id", source.case_id}, {"images", source.image_files}};
    try {
      const NiftiVolume image = load_case_image(source, read_options);
      const Prediction prediction = predictor.predict(image, source.case_id);
      const std::string label_file = output_dir + "/" + source.case_id + ".nii.gz";
      write_nifti(label_file, prediction.label_map, NiftiDataType::kUint8);
      entry["output"] = label_file;
      if (options.probabilities) {
        const std::string probability_file =
            output_dir + "/" + source.case_id + "_probabilities.nii.gz";
        write_nifti(probability_file, prediction.probabilities, NiftiDataType::kFloat32);
        entry["probabilities"] = probability_file;
      }
      const double seconds = seconds_since(start);
      predicted_seconds += seconds;
      const std::array<int64_t, 3> original = {image.dim[0], image.dim[1], image.dim[2]};
      entry["original_shape"] = original;
      entry["preprocessed_shape"] = prediction.preprocessed_shape;
      entry["seconds"] = seconds;
      spdlog::info("case {} ({}/{}): {} -> {} -> {}, {:.2f} s", source.case_id, i + 1, cases.size(),
                   shape_text(original), shape_text(prediction.preprocessed_shape), label_file,
                   seconds);
    } catch (const ClientError& case_error) {
      // Bad input in one case: report it, keep going, fail at the end.
      spdlog::error("case {} ({}/{}): {}", source.case_id, i + 1, cases.size(), case_error.what());
      entry["error"] = case_error.what();
      failures.push_back(source.case_id + ": " + case_error.what());
    }
    case_entries.push_back(std::move(entry));
  }

  // 4. Summary.
  const size_t succeeded = cases.size() - failures.size();
  const nlohmann::json summary = {
      {"model", model_path},
      {"weights", predictor.weights_file()},
      {"device", predictor.device_name()},
      {"label_scheme", config.data.label_scheme},
      {"input", input_path},
      {"cases", case_entries},
      {"succeeded", succeeded},
      {"failed", failures.size()},
      {"seconds_per_case", succeeded > 0 ? predicted_seconds / succeeded : 0.0},
      {"total_seconds", seconds_since(job_start)},
  };
  write_file_atomically(output_dir + "/" + kSummaryFile, summary.dump(2) + "\n");
  if (succeeded > 0) log_metric("infer_seconds_per_case", predicted_seconds / succeeded);
  if (!failures.empty()) {
    throw ClientError(std::to_string(failures.size()) + " of " + std::to_string(cases.size()) +
                      " case(s) failed (the others were written to " + output_dir +
                      "): " + truncate_text(join(failures, "; "), 800));
  }
  spdlog::info("inference done: {} case(s), {:.2f} s per case, summary in {}/{}", succeeded,
               succeeded > 0 ? predicted_seconds / succeeded : 0.0, output_dir, kSummaryFile);
  return 0;
}

}  // namespace medseg

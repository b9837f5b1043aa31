#include "data/case_store.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "config/config.h"
#include "io/medseg_record.h"
#include "io/pipe_channel.h"
#include "sagemaker/job_environment.h"
#include "util/error.h"
#include "util/stop_signals.h"

namespace medseg {
namespace {

// "<file>: " of volume `volume` of a case's image (empty when the files are not known).
std::string file_of_volume(const std::vector<std::string>& image_files, int64_t volume) {
  if (image_files.empty()) return "";
  const size_t file = image_files.size() > 1 ? static_cast<size_t>(volume) : 0;
  return file < image_files.size() ? image_files[file] + ": " : "";
}

}  // namespace

void check_finite_intensities(const NiftiVolume& image, const std::string& case_id,
                              const std::vector<std::string>& image_files) {
  if (image.known_finite) return;  // integer voxels, or floats checked while decoded
  try {
    check_finite_channels(image.voxels(), image.dim[0] * image.dim[1] * image.dim[2], image.dim[3],
                          case_id);
  } catch (const NonFiniteImageError& e) {
    throw ClientError(file_of_volume(image_files, e.volume) + e.what());
  }
}

CaseData load_case(const CaseSource& source, const CaseLoadOptions& options, CaseBuffers* buffers) {
  // A plain float32 image stays where it was decompressed; preprocess_case checks the values it
  // computes from it for NaN and infinity, a pass over the (smaller) resampled image instead of
  // one over the decoded file.
  NiftiReadOptions read = options.read;
  read.voxels_in_place = true;
  NiftiVolume image = load_case_image(source, read, buffers);
  NiftiVolume label;
  NiftiReadOptions label_read = options.read;
  label_read.bytes_in_place = true;  // a uint8 label's bytes are read as they are
  if (!source.label_file.empty()) label = read_nifti(source.label_file, label_read, buffers);
  CaseData data;
  try {
    data = preprocess_case(image, source.label_file.empty() ? nullptr : &label, options.transforms,
                           source.case_id, buffers);
  } catch (const NonFiniteImageError& e) {
    throw ClientError(file_of_volume(source.image_files, e.volume) + e.what());
  }
  if (buffers != nullptr) {
    buffers->floats.give(std::move(image.data));
    buffers->floats.give(std::move(label.data));
  }
  return data;
}

void give_back(CaseData& data, CaseBuffers& buffers) {
  buffers.floats.give(std::move(data.image));
  buffers.bytes.give(std::move(data.label));
}

std::vector<CaseData> load_cases(const DatasetIndex& index, const CaseLoadOptions& options) {
  if (index.layout == DatasetLayout::kRecords) {
    throw InternalError("load_cases: record channels are read by the record reader");
  }
  std::vector<CaseData> cases(index.cases.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int threads =
      std::max(1, std::min<int>(options.threads, static_cast<int>(index.cases.size())));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < cases.size(); i = next++) {
        try {
          if (stop_requested()) {
            throw StopRequested("while decoding the " + std::to_string(cases.size()) +
                                " cases of " + index.root);
          }
          cases[i] = load_case(index.cases[i], options);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = cases.size();  // stop the other workers early
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  if (failure) std::rethrow_exception(failure);
  return cases;
}

int64_t case_bytes(const std::vector<CaseData>& cases) {
  int64_t bytes = 0;
  for (const CaseData& data : cases) {
    bytes += static_cast<int64_t>(data.image.size() * sizeof(float) + data.label.size());
  }
  return bytes;
}

namespace {

CaseLoadOptions load_options_from(const Config& config, bool normalize) {
  CaseLoadOptions options;
  options.transforms = static_transform_options_from_config(config, normalize);
  options.read.max_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return options;
}

}  // namespace

std::vector<CaseData> load_channel_cases(const JobEnvironment& environment,
                                         const std::string& channel, const Config& config,
                                         bool normalize) {
  const ChannelConfig channel_config = environment.channel(channel);
  std::vector<CaseData> cases;
  if (channel_config.input_mode == "Pipe") {
    PipeChannelOptions options;
    options.data_dir = environment.paths.data_dir();
    options.channel = channel;
    options.record_io = channel_config.record_wrapper == "RecordIO";
    PipeChannel pipe_channel(options);
    std::unique_ptr<ByteSource> stream = pipe_channel.open_next_epoch();
    RecordStreamReader reader(*stream, stream_read_options_from_config(config));
    CaseData data;
    while (reader.next(&data)) cases.push_back(data);
    if (cases.empty()) {
      throw ClientError("Pipe-mode channel '" + channel + "' (" + pipe_channel.fifo_path(0) +
                        ") delivered no medseg records: Pipe mode streams shards written by "
                        "`medseg preprocess`");
    }
    return cases;
  }
  const std::string folder = environment.paths.channel_dir(channel);
  std::error_code error;
  if (!std::filesystem::exists(folder, error)) {
    throw ClientError("channel '" + channel + "' not found: expected the folder " + folder);
  }
  const DatasetIndex index = discover_dataset(folder, config.data.layout, /*require_labels=*/true);
  if (index.layout == DatasetLayout::kRecords) {
    const MappedRecordReader reader(folder);
    for (size_t i = 0; i < reader.size(); ++i) cases.push_back(reader.read(i));
    return cases;
  }
  return load_cases(index, load_options_from(config, normalize));
}

RecordReadOptions stream_read_options_from_config(const Config& config) {
  RecordReadOptions options;
  options.max_record_bytes = static_cast<uint64_t>(config.data.max_case_mb) << 20;
  return options;
}

StaticTransformOptions static_transform_options_from_config(const Config& config, bool normalize) {
  StaticTransformOptions options;
  options.pixdim = {config.data.pixdim[0], config.data.pixdim[1], config.data.pixdim[2]};
  options.label_scheme = parse_label_scheme(config.data.label_scheme);
  options.expected_channels = config.model.in_channels;
  options.normalize = normalize;
  options.max_output_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  return options;
}

std::string record_channel_folder(const JobEnvironment& environment, const std::string& channel,
                                  const Config& config) {
  if (environment.channel(channel).input_mode == "Pipe") return "";
  const std::string folder = environment.paths.channel_dir(channel);
  std::error_code error;
  if (!std::filesystem::is_directory(folder, error)) return "";
  const DatasetIndex index = discover_dataset(folder, config.data.layout, /*require_labels=*/true);
  return index.layout == DatasetLayout::kRecords ? folder : "";
}

}  // namespace medseg

#include "data/preprocess_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/case_discovery.h"
#include "data/case_store.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/json_file.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

// Channel-first C-order [C, X, Y, Z] -> NIfTI order (x fastest) with channels last.
template <typename T>
std::vector<float> to_nifti_order(const std::vector<T>& values, int64_t channels,
                                  const std::array<int64_t, 3>& shape) {
  const int64_t nx = shape[0], ny = shape[1], nz = shape[2];
  std::vector<float> out(values.size());
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t x = 0; x < nx; ++x) {
      for (int64_t y = 0; y < ny; ++y) {
        const T* row = values.data() + ((c * nx + x) * ny + y) * nz;
        for (int64_t z = 0; z < nz; ++z) {
          out[static_cast<size_t>(x + nx * (y + ny * (z + nz * c)))] = static_cast<float>(row[z]);
        }
      }
    }
  }
  return out;
}

NiftiVolume volume_like(const CaseData& data, int64_t channels) {
  NiftiVolume volume;
  volume.ndim = 4;
  volume.dim = {data.spatial_shape[0], data.spatial_shape[1], data.spatial_shape[2], channels};
  volume.affine = data.affine;
  return volume;
}

// Writes processed cases in index order into shards of about `shard_bytes`.
class ShardSink {
 public:
  ShardSink(const PreprocessJobOptions& options, PreprocessSummary& summary)
      : options_(options), summary_(summary) {}

  void write(const CaseData& data) {
    if (options_.format == "nifti") {
      const std::string image = options_.output_dir + "/" + data.case_id + "_image.nii.gz";
      write_nifti(image, case_image_to_nifti(data), NiftiDataType::kFloat32);
      summary_.files.push_back(image);
      if (data.label_channels > 0) {
        const std::string label = options_.output_dir + "/" + data.case_id + "_label.nii.gz";
        write_nifti(label, case_label_to_nifti(data), NiftiDataType::kUint8);
        summary_.files.push_back(label);
      }
      return;
    }
    if (!writer_) {
      char name[64];
      std::snprintf(name, sizeof(name), "-%04d", shard_index_++);
      const std::string path =
          options_.output_dir + "/cases-" + options_.host_name + name + kShardFileSuffix;
      RecordWriterOptions writer_options;
      writer_options.image_dtype = options_.image_dtype;
      writer_ = std::make_unique<RecordWriter>(path, writer_options);
      current_path_ = path;
    }
    writer_->append(data);
    if (static_cast<int64_t>(writer_->bytes_written()) >= options_.shard_bytes) close_shard();
  }

  void close_shard() {
    if (!writer_) return;
    writer_->finish();
    summary_.bytes_written += static_cast<int64_t>(writer_->bytes_written());
    summary_.files.push_back(current_path_);
    writer_.reset();
  }

 private:
  const PreprocessJobOptions& options_;
  PreprocessSummary& summary_;
  std::unique_ptr<RecordWriter> writer_;  // an unfinished shard is removed on destruction
  std::string current_path_;
  int shard_index_ = 0;
};

}  // namespace

NiftiVolume case_image_to_nifti(const CaseData& data) {
  NiftiVolume volume = volume_like(data, data.image_channels);
  volume.data = to_nifti_order(data.image, data.image_channels, data.spatial_shape);
  return volume;
}

NiftiVolume case_label_to_nifti(const CaseData& data) {
  NiftiVolume volume = volume_like(data, data.label_channels);
  volume.data = to_nifti_order(data.label, data.label_channels, data.spatial_shape);
  return volume;
}

PreprocessSummary run_preprocess_job(const PreprocessJobOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const DatasetIndex index =
      discover_dataset(options.input_dir, options.layout, options.require_labels);
  if (index.layout == DatasetLayout::kRecords) {
    throw ClientError(options.input_dir +
                      " already holds medseg records; preprocess reads "
                      "Decathlon or BraTS NIfTI folders");
  }
  std::vector<const CaseSource*> mine;
  for (size_t i = 0; i < index.cases.size(); ++i) {
    if (static_cast<int>(i % options.host_count) == options.host_rank) {
      mine.push_back(&index.cases[i]);
    }
  }
  std::error_code error;
  fs::create_directories(options.output_dir, error);
  if (error) throw PlatformError("cannot create " + options.output_dir + ": " + error.message());

  PreprocessSummary summary;
  summary.cases_total = static_cast<int64_t>(index.cases.size());
  spdlog::info("preprocess: {} of {} cases on host {} ({} of {}), {} threads -> {} ({})",
               mine.size(), index.cases.size(), options.host_name, options.host_rank + 1,
               options.host_count, options.threads, options.output_dir, options.format);

  CaseLoadOptions load_options;
  load_options.transforms = options.transforms;
  load_options.read = options.read;
  ShardSink sink(options, summary);
  // Preprocess a window of `threads` cases in parallel, then write them in order: memory stays at
  // about `threads` cases, and the output is the same for any thread count.
  const size_t window = static_cast<size_t>(std::max(1, options.threads));
  // Each slot of the window reuses its buffers from case to case (no image-sized allocation, page
  // fault or zeroing after the first case).
  std::vector<CaseBuffers> buffers(window);
  for (size_t first = 0; first < mine.size(); first += window) {
    if (options.stop != nullptr && options.stop->load()) {
      summary.stopped = true;
      spdlog::warn("preprocess: stop requested: {} of {} cases written, in whole shards",
                   summary.cases_written, mine.size());
      break;
    }
    const size_t count = std::min(window, mine.size() - first);
    std::vector<CaseData> done(count);
    std::vector<std::exception_ptr> failures(count);
    std::vector<std::thread> workers;
    for (size_t k = 0; k < count; ++k) {
      workers.emplace_back([&, k] {
        try {
          const auto case_started = std::chrono::steady_clock::now();
          done[k] = load_case(*mine[first + k], load_options, &buffers[k]);
          spdlog::info(
              "preprocess: {} -> {}x{}x{} in {:.2f} s", done[k].case_id, done[k].spatial_shape[0],
              done[k].spatial_shape[1], done[k].spatial_shape[2],
              std::chrono::duration<double>(std::chrono::steady_clock::now() - case_started)
                  .count());
        } catch (...) {
          failures[k] = std::current_exception();
        }
      });
    }
    for (std::thread& worker : workers) worker.join();
    for (const std::exception_ptr& failure : failures) {
      if (failure) std::rethrow_exception(failure);
    }
    for (size_t k = 0; k < count; ++k) {
      sink.write(done[k]);
      ++summary.cases_written;
      give_back(done[k], buffers[k]);
    }
  }
  sink.close_shard();
  summary.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  nlohmann::json report = {
      {"host", options.host_name},
      {"cases_total", summary.cases_total},
      {"cases_written", summary.cases_written},
      {"stopped", summary.stopped},
      {"seconds", summary.seconds},
      {"seconds_per_case", summary.cases_written ? summary.seconds / summary.cases_written : 0.0},
      {"threads", options.threads},
      {"format", options.format},
      {"bytes_written", summary.bytes_written},
      {"files", summary.files}};
  write_file_atomically(options.output_dir + "/preprocess-summary-" + options.host_name + ".json",
                        report.dump(2) + "\n");
  spdlog::info("preprocess: {} cases in {:.1f} s ({:.2f} s per case with {} threads), {} files",
               summary.cases_written, summary.seconds,
               summary.cases_written ? summary.seconds / summary.cases_written : 0.0,
               options.threads, summary.files.size());
  return summary;
}

}  // namespace medseg

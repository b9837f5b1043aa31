#include "data/record_cache.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "config/config.h"
#include "data/case_store.h"
#include "data/preprocess_job.h"
#include "sagemaker/job_environment.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/stop_signals.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

// Bump when what a cache holds changes meaning (record layout, preprocessing code).
constexpr const char* kCacheVersion = "medseg-record-cache-1";

class Digest {
 public:
  void add(const std::string& text) {
    for (const char c : text) hash_ = (hash_ ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    hash_ = (hash_ ^ 0xFF) * 1099511628211ull;  // a separator no text contains
  }
  std::string hex() const {
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hash_));
    return text;
  }

 private:
  uint64_t hash_ = 1469598103934665603ull;  // FNV-1a
};

PreprocessJobOptions preprocess_options(const Config& config, bool normalize) {
  PreprocessJobOptions job;
  job.layout = config.data.layout;
  job.format = "records";
  job.transforms = static_transform_options_from_config(config, normalize);
  job.read.max_bytes = static_cast<int64_t>(config.data.max_case_mb) << 20;
  job.image_dtype = ImageDType::kFloat32;  // bit-exact: what decoding in memory gives
  job.require_labels = true;
  job.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return job;
}

// Every regular file under the channel folder, sorted.
std::vector<std::string> channel_files(const std::string& channel_dir) {
  std::vector<std::string> files;
  std::error_code error;
  for (auto it = fs::recursive_directory_iterator(channel_dir, error);
       !error && it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (it->is_regular_file(error)) files.push_back(it->path().string());
  }
  if (error) {
    throw PlatformError("cannot list channel folder " + channel_dir + ": " + error.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// The files' relative paths, sizes and modification times.
void add_channel_files(const std::string& channel_dir, Digest& digest) {
  std::error_code error;
  for (const std::string& file : channel_files(channel_dir)) {
    const auto modified = fs::last_write_time(file, error).time_since_epoch().count();
    digest.add(fs::relative(file, channel_dir).string() + "|" +
               std::to_string(fs::file_size(file, error)) + "|" + std::to_string(modified));
  }
}

RecordCache cache_at(const std::string& cache_dir, const std::string& channel,
                     const Digest& digest) {
  RecordCache cache;
  cache.folder = (fs::path(cache_dir) / (channel + "-" + digest.hex())).string();
  std::error_code error;
  cache.complete = fs::is_directory(cache.folder, error);
  return cache;
}

// Creates the cache's parent folder and removes the channel's older caches and unfinished builds.
// Returns the temporary folder to build in.
std::string prepare_cache(const RecordCache& cache, const std::string& channel) {
  const fs::path folder(cache.folder);
  std::error_code error;
  fs::create_directories(folder.parent_path(), error);
  if (error) {
    throw PlatformError("cannot create the record cache folder " + folder.parent_path().string() +
                        ": " + error.message() + " (set data.cache_dir)");
  }
  const std::string prefix = channel + "-";
  for (const auto& entry : fs::directory_iterator(folder.parent_path(), error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 || name.rfind("." + prefix, 0) == 0) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
      spdlog::info("record cache: removed {}", entry.path().string());
    }
  }
  return (folder.parent_path() /
          ("." + folder.filename().string() + ".tmp-" + std::to_string(::getpid())))
      .string();
}

// Renames the finished temporary folder into place.
void publish_cache(const std::string& temporary, const RecordCache& cache) {
  std::error_code error;
  fs::rename(temporary, cache.folder, error);
  if (error) {
    throw PlatformError("cannot rename " + temporary + " to " + cache.folder + ": " +
                        error.message());
  }
  fsync_directory(fs::path(cache.folder).parent_path().string());
}

}  // namespace

RecordCache find_record_cache(const JobEnvironment& environment, const std::string& channel,
                              const Config& config, bool normalize, const std::string& cache_dir) {
  Digest digest;
  digest.add(kCacheVersion);
  const PreprocessJobOptions job = preprocess_options(config, normalize);
  digest.add(job.layout + "|" + config.data.label_scheme + "|" + std::to_string(normalize) + "|" +
             std::to_string(job.transforms.expected_channels) + "|" +
             std::to_string(job.read.max_bytes));
  for (const double spacing : job.transforms.pixdim) digest.add(std::to_string(spacing));
  add_channel_files(environment.paths.channel_dir(channel), digest);
  return cache_at(cache_dir, channel, digest);
}

void build_record_cache(const JobEnvironment& environment, const std::string& channel,
                        const Config& config, bool normalize, const RecordCache& cache) {
  const Clock::time_point started = Clock::now();
  PreprocessJobOptions job = preprocess_options(config, normalize);
  job.input_dir = environment.paths.channel_dir(channel);
  job.output_dir = prepare_cache(cache, channel);
  job.stop = stop_flag();
  const PreprocessSummary summary = run_preprocess_job(job);
  if (summary.stopped) {
    throw StopRequested("while building the record cache of channel '" + channel + "' (" +
                        std::to_string(summary.cases_written) + " of " +
                        std::to_string(summary.cases_total) +
                        " cases done; the next start builds it again)");
  }
  publish_cache(job.output_dir, cache);
  spdlog::info(
      "record cache: channel '{}' preprocessed once for this host: {} cases, {:.0f} MiB in "
      "{:.1f} s -> {}",
      channel, summary.cases_written, static_cast<double>(summary.bytes_written) / (1 << 20),
      seconds_since(started), cache.folder);
}

RecordCache find_record_copy(const JobEnvironment& environment, const std::string& channel,
                             const std::string& cache_dir) {
  Digest digest;
  digest.add(std::string(kCacheVersion) + "|copy");
  add_channel_files(environment.paths.channel_dir(channel), digest);
  return cache_at(cache_dir, channel, digest);
}

void copy_records_to_cache(const JobEnvironment& environment, const std::string& channel,
                           const RecordCache& cache) {
  const Clock::time_point started = Clock::now();
  const std::string temporary = prepare_cache(cache, channel);
  const std::string channel_dir = environment.paths.channel_dir(channel);
  int64_t bytes = 0;
  for (const std::string& file : channel_files(channel_dir)) {
    const fs::path target = fs::path(temporary) / fs::relative(file, channel_dir);
    std::error_code error;
    fs::create_directories(target.parent_path(), error);
    if (error || !fs::copy_file(file, target, error)) {
      throw PlatformError("cannot copy " + file + " to the record cache " + target.string() + ": " +
                          error.message() + " (set data.cache_dir)");
    }
    bytes += static_cast<int64_t>(fs::file_size(target, error));
  }
  publish_cache(temporary, cache);
  const double seconds = seconds_since(started);
  const double mib = static_cast<double>(bytes) / (1 << 20);
  spdlog::info(
      "record cache: FastFile channel '{}' copied once for this host, {:.0f} MiB in {:.1f} s "
      "({:.0f} MiB/s) -> {}",
      channel, mib, seconds, seconds > 0 ? mib / seconds : 0.0, cache.folder);
}

}  // namespace medseg

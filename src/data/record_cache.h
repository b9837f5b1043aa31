// The host-local record cache of a NIfTI training channel: the channel preprocessed once per host
// (static transforms, float32 records, `medseg preprocess`'s code) into
// <cache_dir>/<channel>-<key>/, which every worker of the host then maps. The key digests the
// channel's files (relative path, size, modification time) and every setting the preprocessing
// depends on, so a job restarted after a Spot interruption on the same data and configuration
// finds its cache, and any change builds a new one (older caches of the channel are removed).
// A cache folder appears whole or not at all (built under a temporary name, then renamed).
#pragma once

#include <string>

namespace medseg {

struct Config;
struct JobEnvironment;

struct RecordCache {
  std::string folder;  // <cache_dir>/<channel>-<key>
  bool complete = false;
};

// Where the channel's cache is and whether it is already built. `cache_dir` is data.cache_dir
// resolved (not empty, not "memory").
RecordCache find_record_cache(const JobEnvironment& environment, const std::string& channel,
                              const Config& config, bool normalize, const std::string& cache_dir);

// FastFile mode streams a channel's S3 objects on first read: training's random access would page
// them in piece by piece over the network. Record shards of a FastFile channel are therefore
// copied, each read sequentially once, into the host's cache (same key and naming as above).
RecordCache find_record_copy(const JobEnvironment& environment, const std::string& channel,
                             const std::string& cache_dir);
void copy_records_to_cache(const JobEnvironment& environment, const std::string& channel,
                           const RecordCache& cache);

// Builds the cache (all cores), removing the channel's older caches. Errors name the channel's
// files (ClientError) or the cache folder (PlatformError: a full or read-only disk).
void build_record_cache(const JobEnvironment& environment, const std::string& channel,
                        const Config& config, bool normalize, const RecordCache& cache);

}  // namespace medseg

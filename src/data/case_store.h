// Loads a data set's cases into memory with the static transforms applied once per case
// (data/static_transforms.h), in parallel over cases. This is the "cache" of the training input
// pipeline: random crops are then cut from these buffers every step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/case_discovery.h"
#include "data/static_transforms.h"
#include "io/case_data.h"
#include "util/buffer_pool.h"

namespace medseg {

struct CaseLoadOptions {
  StaticTransformOptions transforms;
  NiftiReadOptions read;
  int threads = 1;  // cases loaded at once
};

// Every case of `index`, in index order. Errors name the case's files.
std::vector<CaseData> load_cases(const DatasetIndex& index, const CaseLoadOptions& options);

// NaN/Inf voxels would poison NormalizeIntensity and then the loss or the prediction: a
// ClientError naming the case, its volume and (when given) the file it came from.
void check_finite_intensities(const NiftiVolume& image, const std::string& case_id,
                              const std::vector<std::string>& image_files = {});

// Loads and preprocesses one NIfTI case. With `buffers` (the calling thread's pools), every
// image-sized buffer comes from them and the intermediate ones go back; give the case's buffers
// back too (give_back) once done with it, and the next case allocates nothing image-sized.
CaseData load_case(const CaseSource& source, const CaseLoadOptions& options,
                   CaseBuffers* buffers = nullptr);

// Returns `data`'s image and label buffers to `buffers` (leaves them empty).
void give_back(CaseData& data, CaseBuffers& buffers);

// Bytes held by the cases' buffers.
int64_t case_bytes(const std::vector<CaseData>& cases);

}  // namespace medseg

namespace medseg {

struct JobEnvironment;
struct Config;

// Every case of a SageMaker data channel, preprocessed, in a fixed order:
//  - File / FastFile mode: the channel folder, a Decathlon or BraTS NIfTI layout (preprocessed
//    here with the configuration's static transforms) or medseg record shards (already
//    preprocessed by `medseg preprocess`; read by memory map);
//  - Pipe mode: medseg records streamed from the FIFO <channel>_0 (RecordIO wrapping accepted),
//    read once and kept in memory for every epoch.
// `normalize` applies NormalizeIntensity to NIfTI cases (records carry what preprocess did).
// ClientError when the channel is missing or holds no usable data.
std::vector<CaseData> load_channel_cases(const JobEnvironment& environment,
                                         const std::string& channel, const Config& config,
                                         bool normalize);

// The static transforms of data.* (pixdim, label scheme, in_channels, data.max_case_mb for the
// resampled case); `normalize` says whether NormalizeIntensity runs on the whole volume.
StaticTransformOptions static_transform_options_from_config(const Config& config, bool normalize);

// How Pipe-mode streams are read: a record header is believed only up to data.max_case_mb, since
// buffers are sized from it before the payload arrives.
RecordReadOptions stream_read_options_from_config(const Config& config);

// The folder of a File/FastFile channel that holds medseg record shards (which training maps
// rather than decodes), or "" for any other channel (Pipe mode, NIfTI, missing).
std::string record_channel_folder(const JobEnvironment& environment, const std::string& channel,
                                  const Config& config);

}  // namespace medseg

// The `medseg preprocess` job (a SageMaker Processing job): this host's share of a data set's
// cases through the static transforms, written as medseg record shards (or NIfTI files for
// inspection). Cases are preprocessed in parallel, one per thread, and written in case order, so
// the output does not depend on the thread count.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "data/static_transforms.h"
#include "io/medseg_record.h"

namespace medseg {

struct PreprocessJobOptions {
  std::string input_dir;
  std::string output_dir;
  std::string layout = "auto";     // data.layout
  std::string format = "records";  // records or nifti
  StaticTransformOptions transforms;
  NiftiReadOptions read;
  ImageDType image_dtype = ImageDType::kFloat16;
  int64_t shard_bytes = int64_t{512} << 20;
  int host_rank = 0;  // this host's share: cases with index % host_count == host_rank
  int host_count = 1;
  std::string host_name = "algo-1";  // part of the output file names (hosts' outputs are merged)
  int threads = 1;
  bool require_labels = false;  // training caches refuse unlabelled cases, like training
  // Set by SIGTERM (Processing's StopProcessingJob): the job stops after the cases being
  // preprocessed, closes its shard (every shard written stays whole) and reports.
  const std::atomic<bool>* stop = nullptr;
};

struct PreprocessSummary {
  bool stopped = false;       // by `stop`, before every case was written
  int64_t cases_total = 0;    // in the data set
  int64_t cases_written = 0;  // by this host
  double seconds = 0.0;
  int64_t bytes_written = 0;
  std::vector<std::string> files;
};

PreprocessSummary run_preprocess_job(const PreprocessJobOptions& options);

// A preprocessed case as NIfTI volumes (x fastest): image [x, y, z, C] float32 and label
// [x, y, z, 3] (TC, WT, ET), both with the case's affine.
NiftiVolume case_image_to_nifti(const CaseData& data);
NiftiVolume case_label_to_nifti(const CaseData& data);

}  // namespace medseg

// Finds the cases of a data channel. Layouts:
//   decathlon  dataset.json whose "training" list holds {image, label} paths relative to the
//              folder (Task01: imagesTr/BRATS_001.nii.gz, 4-D, modalities in the last axis)
//   brats      one folder per case holding <case>_flair, _t1, _t1ce, _t2 and _seg NIfTI files
//   records    medseg record shards (written by `medseg preprocess`)
// A missing file, a dataset.json entry without image or label, or a case missing a modality is a
// ClientError naming the file or case and what was expected.
#pragma once

#include <string>
#include <vector>

#include "io/medseg_record.h"
#include "io/nifti_volume.h"

namespace medseg {

struct CaseSource {
  std::string case_id;
  std::vector<std::string> image_files;  // one 4-D file, or one 3-D file per modality, in order
  std::string label_file;                // empty when the case has no label
};

enum class DatasetLayout { kDecathlon, kBrats, kRecords };

const char* dataset_layout_name(DatasetLayout layout);

// True for "*.nii" and "*.nii.gz".
bool is_nifti_file_name(const std::string& name);

// "BRATS_001.nii.gz" -> "BRATS_001".
std::string strip_nifti_extension(const std::string& name);

struct DatasetIndex {
  std::string root;
  DatasetLayout layout = DatasetLayout::kDecathlon;
  std::vector<CaseSource> cases;          // decathlon and brats
  std::vector<std::string> record_files;  // records: shard files, sorted by name
};

// `layout` is "auto", "decathlon", "brats" or "records". With require_labels, a case without a
// label is an error (training); without, labels are optional (inference).
DatasetIndex discover_dataset(const std::string& root, const std::string& layout,
                              bool require_labels);

// Reads a case's image as one 4-D volume (x, y, z, modality); BraTS modality files are stacked
// after checking their shapes and affines agree.
// With `buffers`, the volumes are read into (and the modalities' own buffers go back to) them.
// With options.voxels_in_place, a stack of plain float32 or of unscaled int16 .nii.gz modalities
// (not a mix) keeps them where they were decompressed, as read_nifti keeps one file's voxels
// (first_voxel, raw_int16); any other stack holds floats from data[0].
NiftiVolume load_case_image(const CaseSource& source, const NiftiReadOptions& options,
                            CaseBuffers* buffers = nullptr);

}  // namespace medseg

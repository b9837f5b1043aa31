// The in-memory form of one case between the static transforms and the random crops, shared by
// the transforms (data/static_transforms.h), the record format (io/medseg_record.h) and the
// training input pipeline.
//
// Layout: channel-first and C-order like MONAI's arrays, i.e. index (c, x, y, z) is at
// ((c * X + x) * Y + y) * Z + z (z fastest). This is the layout of a torch tensor [C, X, Y, Z],
// so a crop becomes network input without a transpose.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/nifti_volume.h"

namespace medseg {

// Where a case came from, kept so inference can map predictions back to the original grid.
struct OriginalGeometry {
  std::array<int64_t, 3> spatial_shape{0, 0, 0};  // X, Y, Z of the source NIfTI
  Affine affine = identity_affine();              // the source affine (nibabel's choice)
};

struct CaseData {
  std::string case_id;
  std::array<int64_t, 3> spatial_shape{0, 0, 0};  // X, Y, Z
  int64_t image_channels = 0;                     // modalities
  std::vector<float> image;                       // [image_channels, X, Y, Z]
  int64_t label_channels = 0;                     // 3 ([TC, WT, ET]) or 0 when unlabelled
  std::vector<uint8_t> label;                     // [label_channels, X, Y, Z], values 0 or 1
  Affine affine = identity_affine();              // voxel -> world of this grid
  OriginalGeometry original;

  int64_t voxels_per_channel() const {
    return spatial_shape[0] * spatial_shape[1] * spatial_shape[2];
  }
};

// A case's voxels where they already are, in CaseData's layout: a CaseData in memory, or a
// record in a memory-mapped shard (float32 or float16 image). Random crops read from a view, so
// a host's workers can share one mapped copy of the training data (the page cache) instead of
// each decoding its own. Valid while what it points into lives.
struct CaseView {
  const std::string* case_id = nullptr;
  std::array<int64_t, 3> spatial_shape{0, 0, 0};
  int64_t image_channels = 0;
  int64_t label_channels = 0;
  const float* image_float32 = nullptr;  // exactly one of the two image pointers is set
  const uint16_t* image_float16 = nullptr;
  const uint8_t* label = nullptr;  // null when label_channels == 0

  int64_t voxels_per_channel() const {
    return spatial_shape[0] * spatial_shape[1] * spatial_shape[2];
  }
};

// A view of `data` (which must outlive it).
inline CaseView view_of(const CaseData& data) {
  CaseView view;
  view.case_id = &data.case_id;
  view.spatial_shape = data.spatial_shape;
  view.image_channels = data.image_channels;
  view.label_channels = data.label_channels;
  view.image_float32 = data.image.data();
  view.label = data.label.empty() ? nullptr : data.label.data();
  return view;
}

}  // namespace medseg

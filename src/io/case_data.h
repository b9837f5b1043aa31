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

}  // namespace medseg

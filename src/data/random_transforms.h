// The random transforms applied to every training sample (SPEC §4), MONAI's seed pipeline:
// RandSpatialCrop -> RandFlip (per configured axis) -> [NormalizeIntensity on the crop, when
// data.normalize = crop] -> RandScaleIntensity -> RandShiftIntensity.
//
// Every draw comes from RandomStream(seed, epoch, sample index), in a fixed order (crop start
// x, y, z; one flip draw per flip axis; scale gate then factor; shift gate then offset), so a
// sample depends only on its key and the case, never on threads or timing.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "config/config.h"
#include "io/case_data.h"

namespace medseg {

struct RandomTransformOptions {
  std::array<int64_t, 3> roi_size{128, 128, 64};
  double flip_prob = 0.5;
  std::vector<int> flip_axes = {0};
  bool normalize_crop = false;  // NormalizeIntensity(nonzero, channel-wise) on the crop
  double scale_prob = 0.5;
  double scale_factor = 0.1;
  double shift_prob = 0.5;
  double shift_offset = 0.1;

  static RandomTransformOptions from_config(const Config& config);
};

// One training sample: image [C, rx, ry, rz] float32 and label [L, rx, ry, rz] uint8, C-order.
struct Sample {
  std::array<int64_t, 3> shape{0, 0, 0};
  int64_t image_channels = 0;
  int64_t label_channels = 0;
  std::vector<float> image;
  std::vector<uint8_t> label;
  std::vector<uint16_t> image_float16;  // scratch for float16 sources
};

// What a sample's draws were, for tests and debugging.
struct SampleDraws {
  std::array<int64_t, 3> crop_start{0, 0, 0};  // in the (possibly padded) volume
  std::array<bool, 3> flipped{false, false, false};
  double scale = 0.0;   // f in v * (1 + f); 0 when not applied
  double offset = 0.0;  // o in v + o; 0 when not applied
};

// The random draws of sample `sample_index` of `epoch` from a volume of `spatial_shape`: what
// make_random_sample applies (and the GPU-resident cache, train/device_batches.h, applies on the
// device).
SampleDraws draw_random_sample(const std::array<int64_t, 3>& spatial_shape,
                               const RandomTransformOptions& options, uint64_t seed,
                               uint64_t epoch, uint64_t sample_index);

// Crops and augments one sample from `source` into `out` (its buffers are reused, so a loader
// thread allocates nothing in steady state). A volume smaller than the ROI on an axis is padded
// with zeros, symmetrically (the extra voxel after), before cropping. A float16 image is widened
// crop by crop (bit-identical to cropping the widened volume).
SampleDraws make_random_sample(const CaseView& source, const RandomTransformOptions& options,
                               uint64_t seed, uint64_t epoch, uint64_t sample_index, Sample& out);
inline SampleDraws make_random_sample(const CaseData& source, const RandomTransformOptions& options,
                                      uint64_t seed, uint64_t epoch, uint64_t sample_index,
                                      Sample& out) {
  return make_random_sample(view_of(source), options, seed, epoch, sample_index, out);
}

// NormalizeIntensity(nonzero=True, channel_wise=True) over a [C, N] float buffer: per channel,
// over values != 0, (v - mean) / std with population std (std 0 -> 1); zeros stay 0. Means and
// variances are accumulated in double.
void normalize_nonzero_channelwise(float* values, int64_t channels, int64_t voxels_per_channel);

}  // namespace medseg

#include "data/random_transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/medseg_record.h"
#include "util/error.h"
#include "util/random.h"

namespace medseg {
namespace {

// Source index along one axis for each output position (-1 = padding), flips included.
void axis_indices(int64_t source_size, int64_t roi, int64_t start, bool flip,
                  std::vector<int64_t>& indices) {
  const int64_t pad_before = source_size < roi ? (roi - source_size) / 2 : 0;
  indices.resize(static_cast<size_t>(roi));
  for (int64_t i = 0; i < roi; ++i) {
    const int64_t crop_position = flip ? roi - 1 - i : i;
    const int64_t source = start + crop_position - pad_before;
    indices[static_cast<size_t>(i)] = source >= 0 && source < source_size ? source : -1;
  }
}

// Copies one z row: out[k] = in[z_index[k]] * scale + offset, with fast paths for the common
// contiguous (no flip, no padding) row.
template <typename T>
void copy_row(const T* in, T* out, const std::vector<int64_t>& z_index, bool z_contiguous,
              float scale, float offset, bool affine) {
  const int64_t n = static_cast<int64_t>(z_index.size());
  if (z_contiguous) {
    const T* row = in + z_index[0];
    if (!affine) {
      std::memcpy(out, row, static_cast<size_t>(n) * sizeof(T));
    } else {
      for (int64_t k = 0; k < n; ++k) out[k] = static_cast<T>(row[k] * scale + offset);
    }
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    const int64_t source = z_index[static_cast<size_t>(k)];
    const T value = source >= 0 ? in[source] : T(0);
    out[k] = affine ? static_cast<T>(value * scale + offset) : value;
  }
}

template <typename T>
void crop_channels(const T* source, int64_t channels, const std::array<int64_t, 3>& source_shape,
                   const std::array<std::vector<int64_t>, 3>& index, bool z_contiguous, float scale,
                   float offset, bool affine, T* out) {
  const int64_t rx = static_cast<int64_t>(index[0].size());
  const int64_t ry = static_cast<int64_t>(index[1].size());
  const int64_t rz = static_cast<int64_t>(index[2].size());
  const int64_t source_voxels = source_shape[0] * source_shape[1] * source_shape[2];
  for (int64_t c = 0; c < channels; ++c) {
    const T* channel = source + c * source_voxels;
    for (int64_t i = 0; i < rx; ++i) {
      const int64_t sx = index[0][static_cast<size_t>(i)];
      for (int64_t j = 0; j < ry; ++j) {
        const int64_t sy = index[1][static_cast<size_t>(j)];
        T* row_out = out + ((c * rx + i) * ry + j) * rz;
        if (sx < 0 || sy < 0) {
          // Padding row: zeros, which RandShiftIntensity still shifts.
          const T fill = affine ? static_cast<T>(offset) : T(0);
          std::fill(row_out, row_out + rz, fill);
          continue;
        }
        const T* row_in = channel + (sx * source_shape[1] + sy) * source_shape[2];
        copy_row(row_in, row_out, index[2], z_contiguous, scale, offset, affine);
      }
    }
  }
}

}  // namespace

RandomTransformOptions RandomTransformOptions::from_config(const Config& config) {
  RandomTransformOptions options;
  for (int axis = 0; axis < 3; ++axis) options.roi_size[axis] = config.augment.roi_size[axis];
  options.flip_prob = config.augment.flip_prob;
  options.flip_axes = config.augment.flip_axes;
  options.normalize_crop = config.data.normalize == "crop";
  options.scale_prob = config.augment.scale_intensity_prob;
  options.scale_factor = config.augment.scale_intensity_factor;
  options.shift_prob = config.augment.shift_intensity_prob;
  options.shift_offset = config.augment.shift_intensity_offset;
  return options;
}

void normalize_nonzero_channelwise(float* values, int64_t channels, int64_t voxels_per_channel) {
  for (int64_t c = 0; c < channels; ++c) {
    float* channel = values + c * voxels_per_channel;
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t i = 0; i < voxels_per_channel; ++i) {
      if (channel[i] != 0.0f) {
        sum += channel[i];
        ++count;
      }
    }
    if (count == 0) continue;
    const double mean = sum / static_cast<double>(count);
    double squares = 0.0;
    for (int64_t i = 0; i < voxels_per_channel; ++i) {
      if (channel[i] != 0.0f) {
        const double d = channel[i] - mean;
        squares += d * d;
      }
    }
    double std_dev = std::sqrt(squares / static_cast<double>(count));
    if (std_dev == 0.0) std_dev = 1.0;
    const float mean_f = static_cast<float>(mean);
    const float std_f = static_cast<float>(std_dev);
    for (int64_t i = 0; i < voxels_per_channel; ++i) {
      if (channel[i] != 0.0f) channel[i] = (channel[i] - mean_f) / std_f;
    }
  }
}

SampleDraws draw_random_sample(const std::array<int64_t, 3>& spatial_shape,
                               const RandomTransformOptions& options, uint64_t seed,
                               uint64_t epoch, uint64_t sample_index) {
  RandomStream random(seed, epoch, sample_index);
  SampleDraws draws;
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t padded = std::max(spatial_shape[axis], options.roi_size[axis]);
    draws.crop_start[axis] = random.uniform_int(0, padded - options.roi_size[axis]);
  }
  for (int axis : options.flip_axes) draws.flipped[axis] = random.bernoulli(options.flip_prob);
  if (random.bernoulli(options.scale_prob)) {
    draws.scale = random.uniform(-options.scale_factor, options.scale_factor);
  }
  if (random.bernoulli(options.shift_prob)) {
    draws.offset = random.uniform(-options.shift_offset, options.shift_offset);
  }
  return draws;
}

SampleDraws make_random_sample(const CaseView& source, const RandomTransformOptions& options,
                               uint64_t seed, uint64_t epoch, uint64_t sample_index, Sample& out) {
  if ((source.image_float32 == nullptr) == (source.image_float16 == nullptr) ||
      (source.label_channels > 0 && source.label == nullptr)) {
    throw InternalError("case " + *source.case_id + ": a view without its image or label");
  }
  const SampleDraws draws =
      draw_random_sample(source.spatial_shape, options, seed, epoch, sample_index);
  std::array<std::vector<int64_t>, 3> index;
  bool z_contiguous = true;
  const std::array<int64_t, 3>& starts = draws.crop_start;
  for (int axis = 0; axis < 3; ++axis) {
    axis_indices(source.spatial_shape[axis], options.roi_size[axis], starts[axis],
                 draws.flipped[axis], index[axis]);
  }
  z_contiguous = !draws.flipped[2] && source.spatial_shape[2] >= options.roi_size[2];

  out.shape = options.roi_size;
  out.image_channels = source.image_channels;
  out.label_channels = source.label_channels;
  const int64_t roi_voxels = options.roi_size[0] * options.roi_size[1] * options.roi_size[2];
  out.image.resize(static_cast<size_t>(out.image_channels * roi_voxels));
  out.label.resize(static_cast<size_t>(out.label_channels * roi_voxels));

  const float scale = static_cast<float>(1.0 + draws.scale);
  const float offset = static_cast<float>(draws.offset);
  const bool intensity = draws.scale != 0.0 || draws.offset != 0.0;
  // The crop as float32, with the intensity change applied now unless the crop is normalised
  // first. A float16 source is cropped as it is stored, then widened.
  const bool affine_in_crop = intensity && !options.normalize_crop;
  if (source.image_float32 != nullptr) {
    crop_channels(source.image_float32, source.image_channels, source.spatial_shape, index,
                  z_contiguous, scale, offset, affine_in_crop, out.image.data());
  } else {
    out.image_float16.resize(out.image.size());
    crop_channels(source.image_float16, source.image_channels, source.spatial_shape, index,
                  z_contiguous, 1.0f, 0.0f, false, out.image_float16.data());
    halves_to_floats(out.image_float16.data(), out.image.data(), out.image.size());
    if (affine_in_crop) {
      for (float& value : out.image) value = value * scale + offset;
    }
  }
  if (options.normalize_crop) {
    normalize_nonzero_channelwise(out.image.data(), out.image_channels, roi_voxels);
    if (intensity) {
      for (float& value : out.image) value = value * scale + offset;
    }
  }
  if (out.label_channels > 0) {
    crop_channels(source.label, source.label_channels, source.spatial_shape, index, z_contiguous,
                  1.0f, 0.0f, false, out.label.data());
  }
  return draws;
}

}  // namespace medseg

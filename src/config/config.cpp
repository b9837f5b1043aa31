#include "config/config.h"

#include <string>

#include "util/error.h"

namespace medseg {
namespace {

std::string list_text(const std::vector<int>& values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(values[i]);
  }
  return text + "]";
}

}  // namespace

void validate_config(const Config& config) {
  const ModelConfig& model = config.model;
  if (model.strides.size() + 1 != model.channels.size()) {
    throw ClientError("model.strides " + list_text(model.strides) +
                      " must have one entry fewer "
                      "than model.channels " +
                      list_text(model.channels) + " (one stride between consecutive levels)");
  }
  // The crop must survive every down-sampling with an integer size, or the up-sampling path
  // cannot be concatenated with the skip connections.
  int total_stride = 1;
  for (int stride : model.strides) total_stride *= stride;
  for (size_t axis = 0; axis < config.augment.roi_size.size(); ++axis) {
    if (config.augment.roi_size[axis] % total_stride != 0) {
      throw ClientError("augment.roi_size " + list_text(config.augment.roi_size) +
                        ": every size must be a multiple of " + std::to_string(total_stride) +
                        " (the product of model.strides " + list_text(model.strides) + ")");
    }
  }
  // Bounds checked before anything is allocated (a batch, an epoch's sample order).
  double roi_voxels = 1.0;
  for (const int size : config.augment.roi_size) roi_voxels *= size;
  const double batch_bytes = static_cast<double>(config.train.batch_size) * roi_voxels *
                             (4.0 * model.in_channels + model.out_channels);
  constexpr double kMaxBatchBytes = 16.0 * (1 << 30);
  if (batch_bytes > kMaxBatchBytes) {
    throw ClientError("augment.roi_size " + list_text(config.augment.roi_size) +
                      " with train.batch_size " + std::to_string(config.train.batch_size) +
                      ": one batch of crops would take " +
                      std::to_string(static_cast<int64_t>(batch_bytes / (1 << 30))) +
                      " GiB; at most 16 GiB (smaller crops or batches)");
  }
  // Each weight is held 4 times in training (weights, gradients, Adam's moments).
  const double weights = estimated_unet_weights(model);
  constexpr double kMaxTrainingStateBytes = 256.0 * (1 << 30);
  if (weights * 4.0 * 4.0 > kMaxTrainingStateBytes) {
    throw ClientError("model.channels " + list_text(model.channels) + ": a network of about " +
                      std::to_string(static_cast<int64_t>(weights / 1e6)) +
                      " million weights needs over 256 GiB to train; use fewer channels");
  }
  constexpr int64_t kMaxSamplesPerEpoch = 100'000'000;
  if (config.train.steps_per_epoch * static_cast<int64_t>(config.train.batch_size) >
      kMaxSamplesPerEpoch) {
    throw ClientError("train.steps_per_epoch " + std::to_string(config.train.steps_per_epoch) +
                      " x train.batch_size " + std::to_string(config.train.batch_size) +
                      ": more than 100,000,000 samples per epoch per worker; use more epochs");
  }
}

double estimated_unet_weights(const ModelConfig& model) {
  // About 2 x sum over levels of 27 x (c_prev x c + num_res_units x c x c).
  double weights = 0.0;
  double previous = model.in_channels;
  for (const int channels : model.channels) {
    weights += 2.0 * 27.0 * (previous * channels + model.num_res_units * 1.0 * channels * channels);
    previous = channels;
  }
  return weights;
}

}  // namespace medseg

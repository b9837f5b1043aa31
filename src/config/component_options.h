// The options of medseg's components from the configuration: the network of the `model` section
// and the sliding window of validation and inference. Here rather than in model/ and infer/,
// which know nothing of the configuration.
#pragma once

#include "config/config.h"
#include "infer/sliding_window.h"
#include "model/unet.h"

namespace medseg {

inline UNetOptions unet_options_from_config(const ModelConfig& model) {
  UNetOptions options;
  options.in_channels = model.in_channels;
  options.out_channels = model.out_channels;
  options.channels.assign(model.channels.begin(), model.channels.end());
  options.strides.assign(model.strides.begin(), model.strides.end());
  options.num_res_units = model.num_res_units;
  options.dropout = model.dropout;
  return options;
}

// Windows of the training crop size (augment.roi_size), as MONAI's recipe validates.
inline SlidingWindowOptions sliding_window_options_from_config(const Config& config) {
  SlidingWindowOptions options;
  for (int axis = 0; axis < 3; ++axis) options.roi_size[axis] = config.augment.roi_size[axis];
  options.overlap = config.sliding_window.overlap;
  options.blend = config.sliding_window.blend;
  options.batch_size = config.sliding_window.batch_size;
  return options;
}

}  // namespace medseg

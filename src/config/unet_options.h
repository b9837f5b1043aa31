// The network of the `model` configuration section. Here rather than in model/, which knows
// nothing of the configuration.
#pragma once

#include "config/config.h"
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

}  // namespace medseg

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
}

}  // namespace medseg

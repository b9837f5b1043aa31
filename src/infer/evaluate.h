// The one evaluation step, shared by training's validation and by inference: a whole volume
// through the network in sliding windows, each batch of windows under the job's autocast, then
// the sigmoid. The caller sets eval mode and disables gradients.
#pragma once

#include <ATen/core/Tensor.h>

#include "infer/sliding_window.h"
#include "model/unet.h"
#include "train/compute.h"

namespace medseg {

// image float [1, C, X, Y, Z] on compute.device -> per-channel probabilities [L, X, Y, Z] there.
at::Tensor predict_probabilities(UNet& model, const at::Tensor& image,
                                 const SlidingWindowOptions& window, const Compute& compute);

}  // namespace medseg

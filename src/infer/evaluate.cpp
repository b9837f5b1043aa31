#include "infer/evaluate.h"

#include <ATen/ATen.h>

namespace medseg {

at::Tensor predict_probabilities(UNet& model, const at::Tensor& image,
                                 const SlidingWindowOptions& window, const Compute& compute) {
  const at::Tensor logits = sliding_window_inference(image, window, [&](const at::Tensor& batch) {
    const auto autocast = compute.autocast_guard();
    return model->forward(batch);
  });
  return at::sigmoid(logits[0]);
}

}  // namespace medseg

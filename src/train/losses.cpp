#include "train/losses.h"

#include <ATen/ATen.h>

#include "util/error.h"

namespace medseg {

at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& target) {
  const at::Tensor probabilities = at::sigmoid(logits.to(at::kFloat));
  const at::Tensor truth = target.to(at::kFloat);
  std::vector<int64_t> spatial_dims;
  for (int64_t d = 2; d < logits.dim(); ++d) spatial_dims.push_back(d);
  const at::Tensor intersection = (probabilities * truth).sum(spatial_dims);
  const at::Tensor denominator =
      (probabilities * probabilities).sum(spatial_dims) + (truth * truth).sum(spatial_dims);
  const at::Tensor per_channel =
      1.0 - (2.0 * intersection + kDiceSmooth) / (denominator + kDiceSmooth);
  return per_channel.mean();
}

at::Tensor dice_bce_loss(const at::Tensor& logits, const at::Tensor& target) {
  return dice_loss(logits, target) +
         at::binary_cross_entropy_with_logits(logits.to(at::kFloat), target.to(at::kFloat));
}

at::Tensor compute_loss(const std::string& name, const at::Tensor& logits,
                        const at::Tensor& target) {
  if (logits.sizes() != target.sizes()) {
    throw InternalError("loss: logits and target shapes differ");
  }
  if (name == "dice") return dice_loss(logits, target);
  if (name == "dice_bce") return dice_bce_loss(logits, target);
  throw InternalError("unknown loss '" + name + "' passed validation");
}

}  // namespace medseg

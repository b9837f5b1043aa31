#include "train/loss_scaler.h"

#include <ATen/ATen.h>

namespace medseg {

at::Tensor DynamicLossScaler::scale_loss(const at::Tensor& loss) const {
  return enabled_ ? loss * scale_ : loss;
}

bool DynamicLossScaler::unscale_and_check(const std::vector<at::Tensor>& parameters) {
  bool finite = true;
  for (const at::Tensor& parameter : parameters) {
    at::Tensor grad = parameter.grad();
    if (!grad.defined()) continue;
    if (enabled_) grad.div_(scale_);
    if (finite && !at::isfinite(grad).all().item<bool>()) finite = false;
  }
  if (!enabled_) return finite;
  if (!finite) {
    for (const at::Tensor& parameter : parameters) {
      if (parameter.grad().defined()) parameter.grad().zero_();
    }
    scale_ *= 0.5;
    good_steps_ = 0;
    return false;
  }
  if (++good_steps_ >= growth_interval_) {
    scale_ *= 2.0;
    good_steps_ = 0;
  }
  return true;
}

}  // namespace medseg

// Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's policy): the loss is
// multiplied by `scale` before backward; before the optimiser step the gradients are divided by
// it and checked. A step with an Inf/NaN gradient is skipped and the scale halved; after
// `growth_interval` good steps in a row the scale doubles.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace medseg {

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(bool enabled, double initial_scale = 65536.0,
                             int64_t growth_interval = 2000)
      : enabled_(enabled), scale_(initial_scale), growth_interval_(growth_interval) {}

  bool enabled() const { return enabled_; }
  double scale() const { return enabled_ ? scale_ : 1.0; }

  at::Tensor scale_loss(const at::Tensor& loss) const;

  // Unscales the gradients of `parameters` in place and updates the scale. Returns false when
  // the step must be skipped (non-finite gradients; they are zeroed). Without scaling, returns
  // whether all gradients are finite.
  bool unscale_and_check(const std::vector<at::Tensor>& parameters);

  // Checkpoint state.
  int64_t good_steps() const { return good_steps_; }
  void restore(double scale, int64_t good_steps) {
    scale_ = scale;
    good_steps_ = good_steps;
  }

 private:
  bool enabled_;
  double scale_;
  int64_t growth_interval_;
  int64_t good_steps_ = 0;
};

}  // namespace medseg

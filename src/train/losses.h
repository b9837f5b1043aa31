// Training losses on logits [B, C, x, y, z] against binary targets of the same shape (MONAI's
// DiceLoss / DiceCELoss with sigmoid=True, squared_pred=True, smooth_nr = smooth_dr = 1e-5,
// reduction mean over batch and channels).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace medseg {

inline constexpr double kDiceSmooth = 1e-5;

// 1 - (2 sum(p g) + s) / (sum(p^2) + sum(g^2) + s) per (batch, channel), p = sigmoid(logits),
// averaged. Computed in float32 whatever the logits' dtype.
at::Tensor dice_loss(const at::Tensor& logits, const at::Tensor& target);

// dice_loss + binary cross-entropy with logits (mean over all voxels), weights 1 and 1.
at::Tensor dice_bce_loss(const at::Tensor& logits, const at::Tensor& target);

// The loss named by train.loss ("dice" or "dice_bce").
at::Tensor compute_loss(const std::string& name, const at::Tensor& logits,
                        const at::Tensor& target);

}  // namespace medseg

// Sliding-window inference over whole volumes, MONAI's sliding_window_inference: windows of the
// ROI size every int(roi * (1 - overlap)) voxels (the last one moved back to end at the border),
// volumes smaller than the ROI padded symmetrically with zeros, overlapping predictions blended
// with a constant or gaussian (sigma = 0.125 * roi, floored at 1e-3) importance map, and windows
// evaluated `batch_size` at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace medseg {

struct SlidingWindowOptions {
  std::array<int64_t, 3> roi_size{128, 128, 64};
  double overlap = 0.25;
  std::string blend = "constant";  // constant or gaussian
  int64_t batch_size = 4;
};

// Start positions of the windows along one axis of `size` voxels (size >= roi).
std::vector<int64_t> window_starts(int64_t size, int64_t roi, double overlap);

// The blending weights of one window, [rx, ry, rz] float32.
at::Tensor importance_map(const std::array<int64_t, 3>& roi_size, const std::string& blend);

using Predictor = std::function<at::Tensor(const at::Tensor&)>;

// `input` [B, C, X, Y, Z]; `predictor` maps windows [n, C, rx, ry, rz] to [n, K, rx, ry, rz].
// Returns the blended prediction [B, K, X, Y, Z] in float32 on the input's device.
at::Tensor sliding_window_inference(const at::Tensor& input, const SlidingWindowOptions& options,
                                    const Predictor& predictor);

}  // namespace medseg

#include "infer/sliding_window.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/stop_signals.h"

namespace medseg {

std::vector<int64_t> window_starts(int64_t size, int64_t roi, double overlap) {
  int64_t interval = roi;
  if (roi != size) {
    interval = static_cast<int64_t>(static_cast<double>(roi) * (1.0 - overlap));
    if (interval <= 0) interval = 1;
  }
  // The first window count whose last window reaches the border.
  int64_t count = 1;
  while ((count - 1) * interval + roi < size) ++count;
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < count; ++i) {
    int64_t start = i * interval;
    start -= std::max<int64_t>(start + roi - size, 0);
    starts.push_back(start);
  }
  return starts;
}

at::Tensor importance_map(const std::array<int64_t, 3>& roi_size, const std::string& blend) {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  if (blend == "constant") return at::ones({roi_size[0], roi_size[1], roi_size[2]}, options);
  if (blend != "gaussian") throw InternalError("unknown blend mode '" + blend + "'");
  at::Tensor weights;
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t n = roi_size[axis];
    const double sigma = 0.125 * static_cast<double>(n);
    const at::Tensor x = at::arange(n, options) - static_cast<double>(n - 1) / 2.0;
    const at::Tensor gaussian = at::exp(x * x / (-2.0 * sigma * sigma));
    std::vector<int64_t> shape = {1, 1, 1};
    shape[axis] = n;
    weights = axis == 0 ? gaussian.view(shape) : weights * gaussian.view(shape);
  }
  const double floor = std::max(weights.min().item<double>(), 1e-3);
  return weights.clamp_min(floor);
}

at::Tensor sliding_window_inference(const at::Tensor& input, const SlidingWindowOptions& options,
                                    const Predictor& predictor) {
  if (input.dim() != 5) throw InternalError("sliding_window_inference expects [B, C, X, Y, Z]");
  const std::array<int64_t, 3>& roi = options.roi_size;
  // Pad (symmetrically, zeros) axes smaller than the ROI; F.pad order is last axis first.
  std::vector<int64_t> padding;
  std::array<int64_t, 3> padded_size{};
  for (int axis = 2; axis >= 0; --axis) {
    const int64_t size = input.size(axis + 2);
    const int64_t difference = std::max<int64_t>(roi[axis] - size, 0);
    padding.push_back(difference / 2);
    padding.push_back(difference - difference / 2);
    padded_size[axis] = std::max(size, roi[axis]);
  }
  const bool needs_padding =
      std::any_of(padding.begin(), padding.end(), [](int64_t p) { return p > 0; });
  const at::Tensor image = needs_padding ? at::constant_pad_nd(input, padding, 0.0) : input;

  std::array<std::vector<int64_t>, 3> starts;
  for (int axis = 0; axis < 3; ++axis) {
    starts[axis] = window_starts(padded_size[axis], roi[axis], options.overlap);
  }
  struct Window {
    int64_t batch, x, y, z;
  };
  std::vector<Window> windows;
  for (int64_t b = 0; b < image.size(0); ++b) {
    for (int64_t x : starts[0]) {
      for (int64_t y : starts[1]) {
        for (int64_t z : starts[2]) windows.push_back({b, x, y, z});
      }
    }
  }

  const at::Tensor weights = importance_map(roi, options.blend).to(image.device());
  at::Tensor output;
  at::Tensor counts = at::zeros({padded_size[0], padded_size[1], padded_size[2]},
                                image.options().dtype(at::kFloat));
  for (size_t first = 0; first < windows.size(); first += options.batch_size) {
    // A whole volume can take minutes on a CPU: a stop request is honoured between batches.
    if (stop_requested()) throw StopRequested("during a sliding-window prediction");
    const size_t last = std::min(windows.size(), first + static_cast<size_t>(options.batch_size));
    std::vector<at::Tensor> crops;
    for (size_t w = first; w < last; ++w) {
      const Window& window = windows[w];
      crops.push_back(image[window.batch]
                          .slice(1, window.x, window.x + roi[0])
                          .slice(2, window.y, window.y + roi[1])
                          .slice(3, window.z, window.z + roi[2]));
    }
    const at::Tensor predictions = predictor(at::stack(crops)).to(at::kFloat);
    if (!output.defined()) {
      output = at::zeros(
          {image.size(0), predictions.size(1), padded_size[0], padded_size[1], padded_size[2]},
          image.options().dtype(at::kFloat));
    }
    for (size_t w = first; w < last; ++w) {
      const Window& window = windows[w];
      output[window.batch]
          .slice(1, window.x, window.x + roi[0])
          .slice(2, window.y, window.y + roi[1])
          .slice(3, window.z, window.z + roi[2])
          .add_(predictions[static_cast<int64_t>(w - first)] * weights);
      if (window.batch == 0) {
        counts.slice(0, window.x, window.x + roi[0])
            .slice(1, window.y, window.y + roi[1])
            .slice(2, window.z, window.z + roi[2])
            .add_(weights);
      }
    }
  }
  output = output / counts;
  // Crop the padding back off.
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t before = padding[static_cast<size_t>((2 - axis) * 2)];
    output = output.slice(axis + 2, before, before + input.size(axis + 2));
  }
  return output.contiguous();
}

}  // namespace medseg

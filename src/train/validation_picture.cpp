#include "train/validation_picture.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "util/error.h"

namespace medseg {

namespace {

constexpr int kMinimumSide = 240;
constexpr int kGap = 4;  // black columns between the two panels

// Outline colours by label channel (TC, WT, ET), drawn WT, TC, ET so the smallest is on top.
constexpr std::array<std::array<uint8_t, 3>, 3> kColours = {
    {{255, 220, 0}, {0, 220, 0}, {255, 0, 0}}};
constexpr std::array<int, 3> kDrawOrder = {1, 0, 2};

struct Slice {
  int64_t width = 0;   // X
  int64_t height = 0;  // Y
  int64_t z = 0;
  int64_t depth = 0;  // Z
  // Index of (channel, x, y) of the slice in a [C, X, Y, Z] volume.
  size_t index(int64_t channel, int64_t x, int64_t y) const {
    return static_cast<size_t>(((channel * width + x) * height + y) * depth + z);
  }
};

// The first modality's slice as grey levels, windowed to its 1st-99th percentile.
std::vector<uint8_t> grey_levels(const CaseData& data, const Slice& slice) {
  std::vector<float> values;
  values.reserve(static_cast<size_t>(slice.width * slice.height));
  for (int64_t x = 0; x < slice.width; ++x) {
    for (int64_t y = 0; y < slice.height; ++y) values.push_back(data.image[slice.index(0, x, y)]);
  }
  std::vector<float> sorted = values;
  const size_t low_at = sorted.size() / 100;
  const size_t high_at = sorted.size() - 1 - sorted.size() / 100;
  std::nth_element(sorted.begin(), sorted.begin() + low_at, sorted.end());
  const float low = sorted[low_at];
  std::nth_element(sorted.begin(), sorted.begin() + high_at, sorted.end());
  const float high = sorted[high_at];
  const float range = high > low ? high - low : 1.0f;
  std::vector<uint8_t> grey(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const float level = std::isfinite(values[i]) ? (values[i] - low) / range : 0.0f;
    grey[i] = static_cast<uint8_t>(std::lround(255.0f * std::clamp(level, 0.0f, 1.0f)));
  }
  return grey;  // index x * height + y
}

// Whether (x, y) is inside `channel` of `masks` with a 4-neighbour outside (or at the border).
bool on_outline(const uint8_t* masks, const Slice& slice, int64_t channel, int64_t x, int64_t y) {
  if (masks[slice.index(channel, x, y)] == 0) return false;
  const int64_t dx[] = {1, -1, 0, 0};
  const int64_t dy[] = {0, 0, 1, -1};
  for (int k = 0; k < 4; ++k) {
    const int64_t nx = x + dx[k];
    const int64_t ny = y + dy[k];
    if (nx < 0 || ny < 0 || nx >= slice.width || ny >= slice.height) return true;
    if (masks[slice.index(channel, nx, ny)] == 0) return true;
  }
  return false;
}

void draw_panel(RgbImage& picture, int left, int scale, const Slice& slice,
                const std::vector<uint8_t>& grey, const uint8_t* masks, int64_t mask_channels) {
  for (int64_t x = 0; x < slice.width; ++x) {
    for (int64_t y = 0; y < slice.height; ++y) {
      std::array<uint8_t, 3> colour;
      colour.fill(grey[static_cast<size_t>(x * slice.height + y)]);
      for (int channel : kDrawOrder) {
        if (channel < mask_channels && on_outline(masks, slice, channel, x, y)) {
          colour = kColours[static_cast<size_t>(channel)];
        }
      }
      // Radiological convention: x (towards the patient's right) runs right to left, y
      // (anterior) runs bottom to top.
      const int column = static_cast<int>(slice.width - 1 - x) * scale;
      const int row = static_cast<int>(slice.height - 1 - y) * scale;
      for (int dy = 0; dy < scale; ++dy) {
        for (int dx = 0; dx < scale; ++dx) {
          std::copy(colour.begin(), colour.end(), picture.at(left + column + dx, row + dy));
        }
      }
    }
  }
}

// The axial slice with the most whole-tumour voxels (label channel 1, or 0 when there is one), or
// the middle slice when there are none.
int64_t tumour_slice(const CaseData& data) {
  const int64_t channel = data.label_channels > 1 ? 1 : 0;
  const int64_t depth = data.spatial_shape[2];
  const int64_t columns = data.spatial_shape[0] * data.spatial_shape[1];
  std::vector<int64_t> area(static_cast<size_t>(depth), 0);
  const uint8_t* mask = data.label.data() + channel * columns * depth;
  for (int64_t column = 0; column < columns; ++column) {
    for (int64_t z = 0; z < depth; ++z) area[static_cast<size_t>(z)] += mask[column * depth + z];
  }
  const auto largest = std::max_element(area.begin(), area.end());
  return *largest > 0 ? largest - area.begin() : depth / 2;
}

}  // namespace

RgbImage validation_picture(const CaseData& data, const uint8_t* prediction) {
  if (data.image_channels < 1 || data.label_channels < 1 || data.label.empty()) {
    throw InternalError("validation_picture: case " + data.case_id + " has no image or labels");
  }
  Slice slice;
  slice.width = data.spatial_shape[0];
  slice.height = data.spatial_shape[1];
  slice.depth = data.spatial_shape[2];
  slice.z = tumour_slice(data);
  const int64_t longest = std::max(slice.width, slice.height);
  const int scale = static_cast<int>(std::max<int64_t>(1, (kMinimumSide + longest - 1) / longest));
  const int panel_width = static_cast<int>(slice.width) * scale;
  RgbImage picture(2 * panel_width + kGap, static_cast<int>(slice.height) * scale);
  const std::vector<uint8_t> grey = grey_levels(data, slice);
  draw_panel(picture, 0, scale, slice, grey, data.label.data(), data.label_channels);
  draw_panel(picture, panel_width + kGap, scale, slice, grey, prediction, data.label_channels);
  return picture;
}

}  // namespace medseg

// 8-bit RGB pictures encoded as PNG (libpng), for TensorBoard's image dashboard.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace medseg {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // row-major, 3 bytes per pixel

  RgbImage() = default;
  RgbImage(int width, int height) : width(width), height(height), pixels(3ull * width * height) {}
  uint8_t* at(int x, int y) { return &pixels[3 * (static_cast<size_t>(y) * width + x)]; }
};

// The PNG file's bytes. InternalError if libpng fails (it only can on a broken image).
std::string encode_png(const RgbImage& image);

}  // namespace medseg

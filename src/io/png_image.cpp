#include "io/png_image.h"

#include <png.h>

#include "util/error.h"

namespace medseg {

namespace {

void append_to_string(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::string*>(png_get_io_ptr(png));
  out->append(reinterpret_cast<const char*>(data), length);
}

void flush_nothing(png_structp) {}

// libpng reports errors by longjmp unless its error function leaves another way: throw.
[[noreturn]] void throw_png_error(png_structp, png_const_charp message) {
  throw InternalError(std::string("PNG encoding failed: ") + message);
}

}  // namespace

std::string encode_png(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != 3ull * image.width * image.height) {
    throw InternalError("encode_png: the pixels do not match " + std::to_string(image.width) + "x" +
                        std::to_string(image.height));
  }
  png_structp png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, throw_png_error, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    throw InternalError("encode_png: libpng could not allocate its state");
  }
  std::string out;
  try {
    png_set_write_fn(png, &out, append_to_string, flush_nothing);
    png_set_IHDR(png, info, image.width, image.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < image.height; ++y) {
      png_write_row(png, &image.pixels[3 * static_cast<size_t>(y) * image.width]);
    }
    png_write_end(png, nullptr);
  } catch (...) {
    png_destroy_write_struct(&png, &info);
    throw;
  }
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace medseg

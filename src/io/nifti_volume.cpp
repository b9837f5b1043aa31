#include "io/nifti_volume.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <nifti2_io.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

#include "util/buffer_pool.h"
#include "util/error.h"
#include "util/file_io.h"
#include "util/memory.h"

// Only symbols that exist solely in libnifti2 are used here (nifti_*dmat44*): libniftiio exports
// many functions under the same names with other struct layouts, and both libraries are linked.

namespace medseg {
namespace {

constexpr int64_t kNifti1HeaderBytes = 348;
constexpr int64_t kNifti2HeaderBytes = 540;
// The header, then the 4-byte extension flag; the smallest legal vox_offset of a single file.
constexpr int64_t kNifti1MinVoxOffset = 352;
constexpr int64_t kNifti2MinVoxOffset = 544;
// DEFLATE cannot expand data by more than this factor (258-byte matches in ~2 bits), so a
// compressed file of n bytes cannot hold more than about n * 1032 bytes.
constexpr int64_t kMaxDeflateRatio = 1032;
// gzip header (with a file name), trailer and block overhead a compressed file may add.
constexpr int64_t kGzipSlackBytes = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Small helpers.

struct DataTypeInfo {
  int code;
  const char* name;
  int bytes;
};

constexpr DataTypeInfo kDataTypes[] = {
    {DT_UINT8, "uint8", 1},     {DT_INT8, "int8", 1},     {DT_INT16, "int16", 2},
    {DT_UINT16, "uint16", 2},   {DT_INT32, "int32", 4},   {DT_UINT32, "uint32", 4},
    {DT_INT64, "int64", 8},     {DT_UINT64, "uint64", 8}, {DT_FLOAT32, "float32", 4},
    {DT_FLOAT64, "float64", 8},
};

const DataTypeInfo* find_datatype(int code) {
  for (const DataTypeInfo& info : kDataTypes) {
    if (info.code == code) return &info;
  }
  return nullptr;
}

// Names of the NIfTI datatypes medseg does not read, for error messages.
const char* unsupported_datatype_name(int code) {
  switch (code) {
    case DT_BINARY:
      return "binary";
    case DT_COMPLEX64:
      return "complex64";
    case DT_RGB24:
      return "rgb24";
    case DT_FLOAT128:
      return "float128";
    case DT_COMPLEX128:
      return "complex128";
    case DT_COMPLEX256:
      return "complex256";
    case DT_RGBA32:
      return "rgba32";
  }
  return "not a NIfTI datatype";
}

// "71.4 MB": decimal units, three significant digits.
std::string format_bytes(double bytes) {
  static const char* const kUnits[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 6) {
    bytes /= 1000.0;
    ++unit;
  }
  char text[64];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%.0f bytes", bytes);
  } else {
    std::snprintf(text, sizeof(text),
                  bytes < 10.0    ? "%.2f %s"
                  : bytes < 100.0 ? "%.1f %s"
                                  : "%.0f %s",
                  bytes, kUnits[unit]);
  }
  return text;
}

std::string join_dims(const int64_t* dims, int count) {
  std::string text;
  for (int i = 0; i < count; ++i) {
    if (i > 0) text += "x";
    text += std::to_string(dims[i]);
  }
  return text;
}

ClientError bad_file(const std::string& path, const std::string& what) {
  return ClientError("NIfTI file " + path + ": " + what);
}

template <typename T>
T byte_swapped(T value) {
  static_assert(std::is_trivially_copyable<T>::value, "");
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  std::reverse(bytes, bytes + sizeof(T));
  std::memcpy(&value, bytes, sizeof(T));
  return value;
}

// Reads a T at byte `offset` of an unaligned buffer, swapping its bytes if `swap`.
template <typename T>
T load(const uint8_t* buffer, size_t offset, bool swap) {
  T value;
  std::memcpy(&value, buffer + offset, sizeof(T));
  return swap ? byte_swapped(value) : value;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

PlatformError out_of_memory(double bytes, const std::string& path) {
  return PlatformError("out of memory allocating " + format_bytes(bytes) + " to read NIfTI file " +
                       path);
}

// new[] without value-initialisation: buffers here are always overwritten before being read.
std::unique_ptr<uint8_t[]> allocate_bytes(int64_t count, const std::string& path) {
  try {
    std::unique_ptr<uint8_t[]> buffer(
        new uint8_t[static_cast<size_t>(std::max<int64_t>(count, 1))]);
    advise_huge_pages(buffer.get(), static_cast<size_t>(count));
    return buffer;
  } catch (const std::bad_alloc&) {
    throw out_of_memory(static_cast<double>(count), path);
  }
}

// The same from a thread's pool.
std::vector<uint8_t> take_bytes(BufferPool<uint8_t>& pool, int64_t count, const std::string& path) {
  try {
    return pool.take(static_cast<size_t>(std::max<int64_t>(count, 1)));
  } catch (const std::bad_alloc&) {
    throw out_of_memory(static_cast<double>(count), path);
  }
}

// A float vector of `count` values: from `buffers` when given (contents unspecified), else fresh,
// zero-filled, its pages hinted huge before they are touched.
std::vector<float> allocate_floats(int64_t count, const std::string& path, CaseBuffers* buffers) {
  try {
    if (buffers != nullptr) return buffers->floats.take(static_cast<size_t>(count));
    std::vector<float> values;
    values.reserve(static_cast<size_t>(count));
    advise_huge_pages(values.data(), static_cast<size_t>(count) * sizeof(float));
    values.resize(static_cast<size_t>(count));
    return values;
  } catch (const std::bad_alloc&) {
    throw out_of_memory(static_cast<double>(count) * sizeof(float), path);
  }
}

// ---------------------------------------------------------------------------------------------
// gzip decoding. Both decoders fill `out` completely from a (possibly multi-member) gzip stream and
// ignore whatever follows once it is full; they differ only in speed (libdeflate decodes whole
// buffers 2-3x faster than zlib) and zlib's better diagnosis of a bad stream.

struct InflateResult {
  enum Status { kComplete, kTruncated, kCorrupt };
  Status status = kComplete;
  int64_t produced = 0;  // bytes written to out
  std::string detail;    // zlib's message for kCorrupt
};

bool is_gzip(const uint8_t* bytes, int64_t count) {
  return count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

InflateResult inflate_gzip_zlib(const uint8_t* in, int64_t in_size, uint8_t* out, int64_t out_size,
                                bool check_trailer) {
  InflateResult result;
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  if (inflateInit2(&stream, 15 + 16) != Z_OK) throw std::bad_alloc();
  constexpr int64_t kChunk = int64_t{1} << 30;  // avail_in/avail_out are 32-bit
  int64_t in_pos = 0;
  auto feed = [&] {
    if (stream.avail_in == 0 && in_pos < in_size) {
      const int64_t chunk = std::min(kChunk, in_size - in_pos);
      stream.next_in = const_cast<Bytef*>(in + in_pos);
      stream.avail_in = static_cast<uInt>(chunk);
      in_pos += chunk;
    }
  };
  auto input_left = [&] { return stream.avail_in > 0 || in_pos < in_size; };
  while (result.produced < out_size) {
    feed();
    stream.next_out = out + result.produced;
    stream.avail_out = static_cast<uInt>(std::min(kChunk, out_size - result.produced));
    const uInt avail_before = stream.avail_out;
    const int status = inflate(&stream, Z_NO_FLUSH);
    result.produced += avail_before - stream.avail_out;
    if (status == Z_STREAM_END) {
      // A member ended; another may follow (concatenated gzip), if it starts with the magic.
      feed();
      if (result.produced < out_size && stream.avail_in >= 2 && stream.next_in[0] == 0x1f &&
          stream.next_in[1] == 0x8b) {
        inflateReset(&stream);
        continue;
      }
      break;
    }
    if (status == Z_DATA_ERROR || status == Z_NEED_DICT || status == Z_STREAM_ERROR) {
      result.status = InflateResult::kCorrupt;
      result.detail = stream.msg != nullptr ? stream.msg : "invalid compressed data";
      inflateEnd(&stream);
      return result;
    }
    if (status == Z_MEM_ERROR) {
      inflateEnd(&stream);
      throw std::bad_alloc();
    }
    if (!input_left() && stream.avail_out > 0) break;  // input exhausted: truncated
  }
  if (result.produced < out_size) {
    result.status = InflateResult::kTruncated;
  } else if (check_trailer) {
    // Output is full; inflate the rest of the member (discarded) up to its trailer, so that a CRC
    // or length mismatch, or a stream cut before its trailer, is noticed.
    uint8_t scratch[4096];
    while (true) {
      stream.next_out = scratch;
      stream.avail_out = sizeof scratch;
      feed();
      const int status = inflate(&stream, Z_NO_FLUSH);
      if (status == Z_STREAM_END) break;
      if (status == Z_OK && (input_left() || stream.avail_out < sizeof scratch)) continue;
      result.status = InflateResult::kCorrupt;
      result.detail = status == Z_DATA_ERROR && stream.msg != nullptr
                          ? stream.msg
                          : "the gzip stream ends before its trailer (CRC and length): truncated";
      break;
    }
  }
  inflateEnd(&stream);
  return result;
}

InflateResult inflate_gzip_libdeflate(const uint8_t* in, int64_t in_size, uint8_t* out,
                                      int64_t out_size) {
  std::unique_ptr<libdeflate_decompressor, void (*)(libdeflate_decompressor*)> decompressor(
      libdeflate_alloc_decompressor(), libdeflate_free_decompressor);
  if (!decompressor) throw std::bad_alloc();
  int64_t in_pos = 0;
  int64_t out_pos = 0;
  while (out_pos < out_size && in_pos < in_size) {
    size_t in_used = 0;
    size_t out_used = 0;
    const libdeflate_result status = libdeflate_gzip_decompress_ex(
        decompressor.get(), in + in_pos, static_cast<size_t>(in_size - in_pos), out + out_pos,
        static_cast<size_t>(out_size - out_pos), &in_used, &out_used);
    if (status != LIBDEFLATE_SUCCESS) {
      // Bad data (corrupt or truncated: libdeflate cannot tell which), or a member longer than the
      // space left (trailing data after the image). Rare: let zlib redo it, stream-wise.
      return inflate_gzip_zlib(in, in_size, out, out_size, /*check_trailer=*/true);
    }
    in_pos += static_cast<int64_t>(in_used);
    out_pos += static_cast<int64_t>(out_used);
    if (out_pos < out_size && !is_gzip(in + in_pos, in_size - in_pos)) break;
  }
  InflateResult result;
  result.produced = out_pos;
  if (out_pos < out_size) result.status = InflateResult::kTruncated;
  return result;
}

// Inflates the first `want` bytes of a gzip file's content from its first bytes `head`
// (enough for the NIfTI header). Returns fewer bytes only if the stream ends or breaks early.
std::vector<uint8_t> inflate_head(const uint8_t* head, int64_t head_size, int64_t want,
                                  const std::string& path) {
  std::vector<uint8_t> out(static_cast<size_t>(want));
  const InflateResult result =
      inflate_gzip_zlib(head, head_size, out.data(), want, /*check_trailer=*/false);
  if (result.status == InflateResult::kCorrupt) {
    throw bad_file(path, "corrupt gzip stream at its start (" + result.detail + ")");
  }
  out.resize(static_cast<size_t>(result.produced));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Header decoding: NIfTI-1 and NIfTI-2, either byte order, into one double/int64 form.

struct Header {
  int version = 1;
  bool swapped = false;
  int64_t dim[8] = {};
  double pixdim[8] = {};
  int datatype = 0;
  double vox_offset = 0;  // as stored (a float in NIfTI-1)
  double scl_slope = 0;
  double scl_inter = 0;
  int qform_code = 0;
  int sform_code = 0;
  double quatern[3] = {};  // b, c, d
  double qoffset[3] = {};
  double srow[3][4] = {};
  int xyzt_units = 0;
  std::string description;
};

std::string fixed_string(const uint8_t* bytes, size_t capacity) {
  size_t length = 0;
  while (length < capacity && bytes[length] != 0) ++length;
  return std::string(reinterpret_cast<const char*>(bytes), length);
}

// Decodes the header in the first `count` bytes of the file's (decompressed) content.
Header decode_header(const uint8_t* bytes, int64_t count, const std::string& path) {
  if (count < kNifti1HeaderBytes) {
    throw bad_file(path,
                   "holds only " + std::to_string(count) +
                       " bytes, fewer than a NIfTI header (348): not a NIfTI file, or truncated");
  }
  Header header;
  int32_t sizeof_hdr;
  std::memcpy(&sizeof_hdr, bytes, 4);
  if (sizeof_hdr == kNifti1HeaderBytes || byte_swapped(sizeof_hdr) == kNifti1HeaderBytes) {
    header.version = 1;
  } else if (sizeof_hdr == kNifti2HeaderBytes || byte_swapped(sizeof_hdr) == kNifti2HeaderBytes) {
    header.version = 2;
  } else {
    throw bad_file(path, "not a NIfTI file (its first 4 bytes give a header size of " +
                             std::to_string(sizeof_hdr) + "; NIfTI-1 has 348, NIfTI-2 has 540)");
  }
  header.swapped = sizeof_hdr != kNifti1HeaderBytes && sizeof_hdr != kNifti2HeaderBytes;
  const bool swap = header.swapped;

  if (header.version == 1) {
    using H = nifti_1_header;
    const char* magic = reinterpret_cast<const char*>(bytes + offsetof(H, magic));
    if (std::memcmp(magic, "ni1\0", 4) == 0) {
      throw bad_file(path,
                     "is the header of a two-file NIfTI pair (.hdr/.img), which is not "
                     "supported: convert it to a single .nii or .nii.gz file");
    }
    if (std::memcmp(magic, "n+1\0", 4) != 0) {
      throw bad_file(path, "not a NIfTI-1 file (magic is not \"n+1\"; an Analyze 7.5 file?)");
    }
    for (int i = 0; i < 8; ++i) {
      header.dim[i] = load<int16_t>(bytes, offsetof(H, dim) + 2 * i, swap);
      header.pixdim[i] = load<float>(bytes, offsetof(H, pixdim) + 4 * i, swap);
    }
    header.datatype = load<int16_t>(bytes, offsetof(H, datatype), swap);
    header.vox_offset = load<float>(bytes, offsetof(H, vox_offset), swap);
    header.scl_slope = load<float>(bytes, offsetof(H, scl_slope), swap);
    header.scl_inter = load<float>(bytes, offsetof(H, scl_inter), swap);
    header.qform_code = load<int16_t>(bytes, offsetof(H, qform_code), swap);
    header.sform_code = load<int16_t>(bytes, offsetof(H, sform_code), swap);
    header.quatern[0] = load<float>(bytes, offsetof(H, quatern_b), swap);
    header.quatern[1] = load<float>(bytes, offsetof(H, quatern_c), swap);
    header.quatern[2] = load<float>(bytes, offsetof(H, quatern_d), swap);
    header.qoffset[0] = load<float>(bytes, offsetof(H, qoffset_x), swap);
    header.qoffset[1] = load<float>(bytes, offsetof(H, qoffset_y), swap);
    header.qoffset[2] = load<float>(bytes, offsetof(H, qoffset_z), swap);
    for (int c = 0; c < 4; ++c) {
      header.srow[0][c] = load<float>(bytes, offsetof(H, srow_x) + 4 * c, swap);
      header.srow[1][c] = load<float>(bytes, offsetof(H, srow_y) + 4 * c, swap);
      header.srow[2][c] = load<float>(bytes, offsetof(H, srow_z) + 4 * c, swap);
    }
    header.xyzt_units = static_cast<uint8_t>(bytes[offsetof(H, xyzt_units)]);
    header.description = fixed_string(bytes + offsetof(H, descrip), 80);
  } else {
    using H = nifti_2_header;
    if (count < kNifti2HeaderBytes) {
      throw bad_file(path, "holds only " + std::to_string(count) +
                               " bytes, fewer than a NIfTI-2 header (540): truncated?");
    }
    const char* magic = reinterpret_cast<const char*>(bytes + offsetof(H, magic));
    if (std::memcmp(magic, "ni2\0", 4) == 0) {
      throw bad_file(path,
                     "is the header of a two-file NIfTI-2 pair (.hdr/.img), which is not "
                     "supported: convert it to a single .nii or .nii.gz file");
    }
    if (std::memcmp(magic, "n+2\0", 4) != 0) {
      throw bad_file(path, "not a NIfTI-2 file (magic is not \"n+2\")");
    }
    if (std::memcmp(magic + 4, "\r\n\032\n", 4) != 0 &&
        std::memcmp(magic + 4, "\0\0\0\0", 4) != 0) {
      throw bad_file(path,
                     "the NIfTI-2 magic's line-ending bytes are damaged (was the file "
                     "transferred in text mode?)");
    }
    for (int i = 0; i < 8; ++i) {
      header.dim[i] = load<int64_t>(bytes, offsetof(H, dim) + 8 * i, swap);
      header.pixdim[i] = load<double>(bytes, offsetof(H, pixdim) + 8 * i, swap);
    }
    header.datatype = load<int16_t>(bytes, offsetof(H, datatype), swap);
    header.vox_offset = static_cast<double>(load<int64_t>(bytes, offsetof(H, vox_offset), swap));
    header.scl_slope = load<double>(bytes, offsetof(H, scl_slope), swap);
    header.scl_inter = load<double>(bytes, offsetof(H, scl_inter), swap);
    header.qform_code = load<int32_t>(bytes, offsetof(H, qform_code), swap);
    header.sform_code = load<int32_t>(bytes, offsetof(H, sform_code), swap);
    header.quatern[0] = load<double>(bytes, offsetof(H, quatern_b), swap);
    header.quatern[1] = load<double>(bytes, offsetof(H, quatern_c), swap);
    header.quatern[2] = load<double>(bytes, offsetof(H, quatern_d), swap);
    header.qoffset[0] = load<double>(bytes, offsetof(H, qoffset_x), swap);
    header.qoffset[1] = load<double>(bytes, offsetof(H, qoffset_y), swap);
    header.qoffset[2] = load<double>(bytes, offsetof(H, qoffset_z), swap);
    for (int c = 0; c < 4; ++c) {
      header.srow[0][c] = load<double>(bytes, offsetof(H, srow_x) + 8 * c, swap);
      header.srow[1][c] = load<double>(bytes, offsetof(H, srow_y) + 8 * c, swap);
      header.srow[2][c] = load<double>(bytes, offsetof(H, srow_z) + 8 * c, swap);
    }
    header.xyzt_units = load<int32_t>(bytes, offsetof(H, xyzt_units), swap);
    header.description = fixed_string(bytes + offsetof(H, descrip), 80);
  }
  return header;
}

// The layout of the voxel data a checked header describes.
struct Layout {
  const DataTypeInfo* type = nullptr;
  std::array<int64_t, 4> dim{1, 1, 1, 1};
  int ndim = 3;
  int64_t voxels = 0;
  int64_t data_bytes = 0;   // on disk
  int64_t vox_offset = 0;   // where the data starts in the (decompressed) file
  std::string description;  // "240x240x155x4 int16 = 71.4 MB"
};

// Checks what the header says against itself and the memory bound; nothing is allocated yet.
Layout check_header(const Header& header, const NiftiReadOptions& options,
                    const std::string& path) {
  Layout layout;
  const int64_t ndim = header.dim[0];
  if (ndim < 1 || ndim > 7) {
    throw bad_file(path, "header dim[0] (the number of dimensions) is " + std::to_string(ndim) +
                             "; expected 1 to 7: corrupt header?");
  }
  const int count = static_cast<int>(ndim);
  const int64_t* dims = header.dim + 1;
  for (int i = 0; i < count; ++i) {
    if (dims[i] < 1) {
      throw bad_file(path, "header dimensions " + join_dims(dims, count) +
                               " include a size below 1; expected positive sizes");
    }
  }
  layout.type = find_datatype(header.datatype);
  if (layout.type == nullptr) {
    throw bad_file(path, "datatype " + std::to_string(header.datatype) + " (" +
                             unsupported_datatype_name(header.datatype) +
                             ") is not supported; expected an integer type of 8 to 64 bits, "
                             "float32 or float64");
  }

  // Shape: 3-D (fewer dims padded with 1), 4-D, or 5-D (x, y, z, 1, c) read as 4-D.
  for (int i = 0; i < std::min(count, 3); ++i) layout.dim[i] = dims[i];
  if (count == 4) {
    layout.ndim = 4;
    layout.dim[3] = dims[3];
  } else if (count >= 5) {
    bool vector_layout = dims[3] == 1;
    for (int i = 5; i < count; ++i) vector_layout = vector_layout && dims[i] == 1;
    if (!vector_layout) {
      throw bad_file(path, "header dimensions " + join_dims(dims, count) +
                               " are not a 3-D image or a 4-D image with modalities on the 4th "
                               "axis (5-D is accepted only as x, y, z, 1, modalities)");
    }
    layout.ndim = 4;
    layout.dim[3] = dims[4];
  }

  // Size, with overflow-safe arithmetic: the float32 output must fit options.max_bytes.
  const int64_t max_voxels = std::max<int64_t>(options.max_bytes, 0) / int64_t{sizeof(float)};
  double voxels_approx = 1.0;
  bool too_big = false;
  int64_t voxels = 1;
  for (int i = 0; i < count; ++i) {
    voxels_approx *= static_cast<double>(dims[i]);
    if (!too_big && dims[i] > max_voxels / voxels) too_big = true;
    if (!too_big) voxels *= dims[i];
  }
  layout.description = join_dims(dims, count) + " " + layout.type->name + " = " +
                       format_bytes(voxels_approx * layout.type->bytes);
  if (too_big) {
    throw bad_file(path, "header says " + layout.description + ", which as float32 needs " +
                             format_bytes(voxels_approx * sizeof(float)) + ", more than the " +
                             format_bytes(static_cast<double>(options.max_bytes)) +
                             " allowed (NiftiReadOptions::max_bytes): corrupt header?");
  }
  layout.voxels = voxels;
  layout.data_bytes = voxels * layout.type->bytes;

  // Where the data starts.
  const int64_t min_offset = header.version == 1 ? kNifti1MinVoxOffset : kNifti2MinVoxOffset;
  if (!std::isfinite(header.vox_offset) || header.vox_offset < 0 || header.vox_offset > 1e15) {
    throw bad_file(path, "header vox_offset " + std::to_string(header.vox_offset) +
                             " is not a valid byte offset: corrupt header?");
  }
  layout.vox_offset = static_cast<int64_t>(header.vox_offset);
  if (layout.vox_offset == 0) layout.vox_offset = min_offset;  // as nifticlib does
  if (layout.vox_offset < min_offset) {
    throw bad_file(path, "header vox_offset " + std::to_string(layout.vox_offset) +
                             " points into the header; expected at least " +
                             std::to_string(min_offset));
  }
  return layout;
}

// ---------------------------------------------------------------------------------------------
// Affine, exactly as nibabel computes img.affine (nibabel/nifti1.py, analyze.py, quaternions.py).

Affine affine_from_rows(const double rows[3][4]) {
  Affine affine = identity_affine();
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) affine[r][c] = rows[r][c];
  }
  return affine;
}

// Nifti1Header.get_qform: w from fillpositive(b, c, d) with nibabel's threshold (3 eps of the
// stored float type), R = quat2mat(w, b, c, d), affine = R * diag(zx, zy, qfac * zz) + qoffset.
// Where nibabel raises (1 - |bcd|^2 clearly negative) this normalises (b, c, d) and takes w = 0,
// as nifticlib does, so such a file still loads.
Affine qform_affine(const Header& header, const double zooms[3]) {
  double b = header.quatern[0];
  double c = header.quatern[1];
  double d = header.quatern[2];
  const double threshold = 3.0 * (header.version == 1 ? std::numeric_limits<float>::epsilon()
                                                      : std::numeric_limits<double>::epsilon());
  const double w2 = 1.0 - (b * b + c * c + d * d);
  double w = 0.0;
  if (std::fabs(w2) < threshold) {
    w = 0.0;
  } else if (w2 < 0.0) {
    const double norm = std::sqrt(b * b + c * c + d * d);
    b /= norm;
    c /= norm;
    d /= norm;
  } else {
    w = std::sqrt(w2);
  }
  double rotation[3][3];
  const double nq = w * w + b * b + c * c + d * d;
  if (nq < std::numeric_limits<double>::epsilon()) {
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 3; ++k) rotation[r][k] = r == k ? 1.0 : 0.0;
    }
  } else {
    const double s = 2.0 / nq;
    const double X = b * s, Y = c * s, Z = d * s;
    const double wX = w * X, wY = w * Y, wZ = w * Z;
    const double xX = b * X, xY = b * Y, xZ = b * Z;
    const double yY = c * Y, yZ = c * Z, zZ = d * Z;
    const double m[3][3] = {{1.0 - (yY + zZ), xY - wZ, xZ + wY},
                            {xY + wZ, 1.0 - (xX + zZ), yZ - wX},
                            {xZ - wY, yZ + wX, 1.0 - (xX + yY)}};
    std::memcpy(rotation, m, sizeof(m));
  }
  // nibabel's load-time check fixes any qfac other than -1 to 1.
  const double qfac = header.pixdim[0] == -1.0 ? -1.0 : 1.0;
  const double scale[3] = {zooms[0], zooms[1], zooms[2] * qfac};
  Affine affine = identity_affine();
  for (int r = 0; r < 3; ++r) {
    for (int k = 0; k < 3; ++k) affine[r][k] = rotation[r][k] * scale[k];
    affine[r][3] = header.qoffset[r];
  }
  return affine;
}

// AnalyzeHeader.get_base_affine -> volumeutils.shape_zoom_affine(shape, zooms, x_flip=True):
// diag(-zx, zy, zz) with translation -((shape - 1) / 2) * (-zx, zy, zz), i.e. the image centre at
// the world origin, x flipped (radiological storage). Shapes under 3-D are padded with 1.
Affine base_affine(const Header& header, const double zooms[3]) {
  Affine affine = identity_affine();
  for (int i = 0; i < 3; ++i) {
    const double size = i < header.dim[0] ? static_cast<double>(header.dim[i + 1]) : 1.0;
    const double zoom = (i < header.dim[0] ? zooms[i] : 1.0) * (i == 0 ? -1.0 : 1.0);
    affine[i][i] = zoom;
    affine[i][3] = -((size - 1.0) / 2.0) * zoom;
  }
  return affine;
}

bool all_finite(const Affine& affine) {
  for (const auto& row : affine) {
    for (double value : row) {
      if (!std::isfinite(value)) return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Voxel conversion.

template <typename T>
void convert_voxels(const uint8_t* raw, int64_t count, bool swap, bool scaled, double slope,
                    double inter, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    T value;
    std::memcpy(&value, raw + i * int64_t{sizeof(T)}, sizeof(T));
    if (swap) value = byte_swapped(value);
    out[i] = scaled ? static_cast<float>(static_cast<double>(value) * slope + inter)
                    : static_cast<float>(value);
  }
}

struct Scaling {
  bool swap;
  bool scaled;  // false when slope is unusable (0, non-finite) or the identity
  double slope;
  double inter;
};

// Converts `count` voxels of type T stored at byte `offset` of `buffer` into floats at the start
// of the same buffer. REQUIRES: the buffer holds max(offset + count * sizeof(T), 4 * count) bytes.
// Works in blocks through a small copy so the conversion loop itself never reads what it writes:
// forwards for types of 4 or more bytes (the floats never overtake the unread input), backwards
// for 1- and 2-byte types (the floats grow past the input), after setting aside the first voxels,
// whose floats would overwrite input not yet read.
// For float types it also checks, each block while it is in cache, that every float is finite,
// and returns whether they all were (integer types: returns false, see finite_by_type).
template <typename T>
bool convert_in_place(uint8_t* buffer, int64_t offset, int64_t count, const Scaling& scaling) {
  constexpr int64_t kBlock = 16 * 1024;
  constexpr int64_t kSize = sizeof(T);
  std::vector<uint8_t> block(static_cast<size_t>(kBlock * kSize));
  float* out = reinterpret_cast<float*>(buffer);
  uint32_t non_finite = 0;  // nonzero once a float had an all-ones exponent (NaN or Inf)
  // Plain float32 voxels (the usual .nii.gz): each block is moved into place as it is.
  const bool plain = std::is_same_v<T, float> && !scaling.swap && !scaling.scaled;
  auto convert = [&](int64_t first, int64_t n, const uint8_t* source) {
    if (plain) {
      std::memmove(out + first, source, static_cast<size_t>(n * kSize));
    } else {
      std::memcpy(block.data(), source, static_cast<size_t>(n * kSize));
      convert_voxels<T>(block.data(), n, scaling.swap, scaling.scaled, scaling.slope, scaling.inter,
                        out + first);
    }
    if constexpr (std::is_floating_point_v<T>) {
      const float* values = out + first;
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, values + i, 4);
        non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
      }
    }
  };
  if (kSize >= 4) {
    for (int64_t first = 0; first < count; first += kBlock) {
      convert(first, std::min(kBlock, count - first), buffer + offset + first * kSize);
    }
    return std::is_floating_point_v<T> && non_finite == 0;
  }
  // Voxel i's float (bytes [4i, 4i + 4)) is clear of every earlier voxel's input once
  // 4i >= offset + kSize * i.
  const int64_t head = std::min(count, (offset + (4 - kSize) - 1) / (4 - kSize));
  std::vector<uint8_t> head_input(buffer + offset, buffer + offset + head * kSize);
  for (int64_t end = count; end > head;) {
    const int64_t first = std::max(head, end - kBlock);
    convert(first, end - first, buffer + offset + first * kSize);
    end = first;
  }
  for (int64_t first = 0; first < head; first += kBlock) {
    convert(first, std::min(kBlock, head - first), head_input.data() + first * kSize);
  }
  return false;  // integer voxels
}

// Whether the converted values are finite whatever the voxels hold: an integer type, and a
// scaling whose largest result (with a factor 2 of margin) stays inside float32's range.
bool finite_by_type(const Header& header, const Layout& layout) {
  double largest = 0.0;
  switch (layout.type->code) {
    case DT_UINT8:
    case DT_INT8:
      largest = 256.0;
      break;
    case DT_INT16:
    case DT_UINT16:
      largest = 65536.0;
      break;
    case DT_INT32:
    case DT_UINT32:
      largest = 4294967296.0;
      break;
    case DT_INT64:
    case DT_UINT64:
      largest = 18446744073709551616.0;
      break;
    default:
      return false;  // float data
  }
  const bool scaled = std::isfinite(header.scl_slope) && header.scl_slope != 0.0;
  if (!scaled) return true;
  const double bound = std::fabs(header.scl_slope) * largest + std::fabs(header.scl_inter);
  return std::isfinite(bound) && 2.0 * bound < std::numeric_limits<float>::max();
}

// Converts the voxels at byte `offset` of `buffer` to floats at its start (see convert_in_place).
// Returns whether float voxels were all finite, checked block by block as they were converted
// (false when they were not converted: an unscaled .nii of float32 is already in place).
bool convert_to_float(const Header& header, const Layout& layout, uint8_t* buffer, int64_t offset) {
  Scaling scaling;
  scaling.swap = header.swapped;
  scaling.slope = header.scl_slope;
  scaling.inter = header.scl_inter;
  scaling.scaled = std::isfinite(header.scl_slope) && header.scl_slope != 0.0 &&
                   !(header.scl_slope == 1.0 && header.scl_inter == 0.0);
  const int64_t n = layout.voxels;
  switch (layout.type->code) {
    case DT_UINT8:
      return convert_in_place<uint8_t>(buffer, offset, n, scaling);
    case DT_INT8:
      return convert_in_place<int8_t>(buffer, offset, n, scaling);
    case DT_INT16:
      return convert_in_place<int16_t>(buffer, offset, n, scaling);
    case DT_UINT16:
      return convert_in_place<uint16_t>(buffer, offset, n, scaling);
    case DT_INT32:
      return convert_in_place<int32_t>(buffer, offset, n, scaling);
    case DT_UINT32:
      return convert_in_place<uint32_t>(buffer, offset, n, scaling);
    case DT_INT64:
      return convert_in_place<int64_t>(buffer, offset, n, scaling);
    case DT_UINT64:
      return convert_in_place<uint64_t>(buffer, offset, n, scaling);
    case DT_FLOAT32:
      if (!scaling.swap && !scaling.scaled && offset == 0) return false;  // already floats
      return convert_in_place<float>(buffer, offset, n, scaling);
    case DT_FLOAT64:
      return convert_in_place<double>(buffer, offset, n, scaling);
  }
  throw InternalError("nifti_volume: unhandled datatype " + std::to_string(layout.type->code));
}

// ---------------------------------------------------------------------------------------------
// Writing.

template <typename T>
T to_integer(float value) {
  if (std::isnan(value)) return 0;
  const double rounded = std::nearbyint(static_cast<double>(value));  // half to even
  if (rounded <= static_cast<double>(std::numeric_limits<T>::lowest())) {
    return std::numeric_limits<T>::lowest();
  }
  if (rounded >= static_cast<double>(std::numeric_limits<T>::max())) {
    return std::numeric_limits<T>::max();
  }
  return static_cast<T>(rounded);
}

template <typename T>
void encode_voxels(const std::vector<float>& values, uint8_t* out) {
  for (size_t i = 0; i < values.size(); ++i) {
    T value;
    if constexpr (std::is_floating_point<T>::value) {
      value = static_cast<T>(values[i]);
    } else {
      value = to_integer<T>(values[i]);
    }
    std::memcpy(out + i * sizeof(T), &value, sizeof(T));
  }
}

// Geometry both header versions store, from the affine.
struct WriteGeometry {
  double quatern[3];
  double qoffset[3];
  double qfac;
  double zooms[3];  // affine column norms
};

WriteGeometry geometry_from_affine(const Affine& affine) {
  nifti_dmat44 matrix;
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) matrix.m[r][c] = affine[r][c];
  }
  WriteGeometry geometry;
  double dx, dy, dz;
  nifti_dmat44_to_quatern(matrix, &geometry.quatern[0], &geometry.quatern[1], &geometry.quatern[2],
                          &geometry.qoffset[0], &geometry.qoffset[1], &geometry.qoffset[2], &dx,
                          &dy, &dz, &geometry.qfac);
  for (int c = 0; c < 3; ++c) {
    geometry.zooms[c] = std::sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] +
                                  affine[2][c] * affine[2][c]);
  }
  return geometry;
}

// Fills the header fields NIfTI-1 and NIfTI-2 share by name (their types differ).
template <typename H>
void fill_header(const NiftiVolume& volume, NiftiDataType type, int bytes_per_voxel, H* header) {
  using Dim = std::remove_reference_t<decltype(header->dim[0])>;
  using Real = decltype(header->quatern_b);
  const WriteGeometry geometry = geometry_from_affine(volume.affine);
  header->datatype = static_cast<int16_t>(type);
  header->bitpix = static_cast<int16_t>(8 * bytes_per_voxel);
  header->dim[0] = static_cast<Dim>(volume.ndim);
  for (int i = 0; i < 7; ++i) {
    header->dim[i + 1] = i < volume.ndim ? static_cast<Dim>(volume.dim[i]) : 1;
    header->pixdim[i + 1] = 1;
  }
  header->pixdim[0] = static_cast<Real>(geometry.qfac);
  for (int i = 0; i < 3; ++i) {
    header->pixdim[i + 1] = static_cast<Real>(geometry.zooms[i]);
  }
  header->scl_slope = 1;
  header->scl_inter = 0;
  const int qform_code = volume.header.qform_code != 0 ? volume.header.qform_code : 1;
  const int sform_code = volume.header.sform_code != 0 ? volume.header.sform_code : 1;
  header->qform_code = static_cast<decltype(header->qform_code)>(qform_code);
  header->sform_code = static_cast<decltype(header->sform_code)>(sform_code);
  header->quatern_b = static_cast<Real>(geometry.quatern[0]);
  header->quatern_c = static_cast<Real>(geometry.quatern[1]);
  header->quatern_d = static_cast<Real>(geometry.quatern[2]);
  header->qoffset_x = static_cast<Real>(geometry.qoffset[0]);
  header->qoffset_y = static_cast<Real>(geometry.qoffset[1]);
  header->qoffset_z = static_cast<Real>(geometry.qoffset[2]);
  for (int c = 0; c < 4; ++c) {
    header->srow_x[c] = static_cast<Real>(volume.affine[0][c]);
    header->srow_y[c] = static_cast<Real>(volume.affine[1][c]);
    header->srow_z[c] = static_cast<Real>(volume.affine[2][c]);
  }
  header->xyzt_units =
      static_cast<decltype(header->xyzt_units)>(NIFTI_UNITS_MM | (volume.header.time_units & 0x38));
  const size_t capacity = sizeof(header->descrip) - 1;
  std::memset(header->descrip, 0, sizeof(header->descrip));
  std::memcpy(header->descrip, volume.header.description.data(),
              std::min(volume.header.description.size(), capacity));
}

}  // namespace

Affine identity_affine() {
  Affine affine{};
  for (int i = 0; i < 4; ++i) affine[i][i] = 1.0;
  return affine;
}

namespace {

// A file's header, checked, and how its voxels are stored.
struct FileFacts {
  Header header;
  Layout layout;
  bool compressed = false;
  bool has_slope = false;  // scl_slope is usable (finite, nonzero)
  // Float32 voxels that need no conversion (native byte order, no scaling other than 1 x + 0).
  bool plain_float = false;
  bool plain_int16 = false;  // int16 voxels, the same way
  bool plain_uint8 = false;  // uint8 voxels, unscaled
};

FileFacts read_file_facts(const ReadOnlyFile& file, const NiftiReadOptions& options,
                          const std::string& path) {
  // The first bytes: enough for the header, or the start of the gzip stream holding it.
  constexpr int64_t kHeadBytes = 64 * 1024;
  std::vector<uint8_t> head(static_cast<size_t>(std::min(file.size(), kHeadBytes)));
  head.resize(static_cast<size_t>(file.read_at(0, static_cast<int64_t>(head.size()), head.data())));
  FileFacts facts;
  facts.compressed = is_gzip(head.data(), static_cast<int64_t>(head.size()));
  std::vector<uint8_t> header_bytes =
      facts.compressed
          ? inflate_head(head.data(), static_cast<int64_t>(head.size()), kNifti2HeaderBytes, path)
          : std::vector<uint8_t>(head.begin(),
                                 head.begin() + std::min<int64_t>(static_cast<int64_t>(head.size()),
                                                                  kNifti2HeaderBytes));
  facts.header =
      decode_header(header_bytes.data(), static_cast<int64_t>(header_bytes.size()), path);
  facts.layout = check_header(facts.header, options, path);
  const Header& header = facts.header;
  facts.has_slope = std::isfinite(header.scl_slope) && header.scl_slope != 0.0;
  const bool unscaled = !header.swapped &&
                        !(facts.has_slope && !(header.scl_slope == 1.0 && header.scl_inter == 0.0));
  facts.plain_float = facts.layout.type->code == DT_FLOAT32 && unscaled;
  facts.plain_int16 = facts.layout.type->code == DT_INT16 && unscaled;
  facts.plain_uint8 = facts.layout.type->code == DT_UINT8 && unscaled;
  return facts;
}

// How many voxels' room (floats, or int16) a .nii.gz's decompression writes before its voxels
// when they stay in place (NiftiReadOptions::voxels_in_place), or -1 when they would be moved or
// converted.
int64_t in_place_prefix(const FileFacts& facts) {
  if (!facts.compressed || !(facts.plain_float || facts.plain_int16)) return -1;
  if (facts.layout.vox_offset % 4 != 0) return -1;
  return facts.layout.vox_offset / facts.layout.type->bytes;
}

// The same for the bytes of a uint8 file (NiftiReadOptions::bytes_in_place), compressed or not:
// a .nii is read from its voxels on.
int64_t bytes_in_place_prefix(const FileFacts& facts) {
  if (!facts.plain_uint8) return -1;
  return facts.compressed ? facts.layout.vox_offset : 0;
}

}  // namespace

NiftiLayout read_nifti_layout(const std::string& path, const NiftiReadOptions& options) {
  const ReadOnlyFile file(path, "NIfTI file");
  const FileFacts facts = read_file_facts(file, options, path);
  NiftiLayout layout;
  layout.dim = facts.layout.dim;
  layout.ndim = facts.layout.ndim;
  layout.in_place_prefix = in_place_prefix(facts);
  layout.raw_int16 = facts.plain_int16 && layout.in_place_prefix >= 0;
  return layout;
}

NiftiVolume widen_raw(const NiftiVolume& volume, CaseBuffers* buffers) {
  if (!volume.raw_int16 && !volume.raw_uint8) {
    throw InternalError("widen_raw: the volume is neither raw int16 nor raw uint8");
  }
  NiftiVolume floats;  // the header facts, and the data widened
  floats.dim = volume.dim;
  floats.ndim = volume.ndim;
  floats.affine = volume.affine;
  floats.pixdim = volume.pixdim;
  floats.header = volume.header;
  const int64_t count = volume.voxel_count();
  floats.data = buffers != nullptr ? buffers->floats.take(static_cast<size_t>(count))
                                   : std::vector<float>(static_cast<size_t>(count));
  if (volume.raw_int16) {
    const int16_t* raw = volume.int16_voxels();
    for (int64_t i = 0; i < count; ++i) floats.data[i] = static_cast<float>(raw[i]);
  } else {
    const uint8_t* raw = volume.uint8_voxels();
    for (int64_t i = 0; i < count; ++i) floats.data[i] = static_cast<float>(raw[i]);
  }
  floats.first_voxel = 0;
  floats.raw_int16 = false;
  floats.raw_uint8 = false;
  floats.known_finite = true;
  return floats;
}

NiftiVolume read_nifti(const std::string& path, const NiftiReadOptions& options,
                       CaseBuffers* buffers, float* into, int64_t into_floats) {
  const ReadOnlyFile file(path, "NIfTI file");
  const FileFacts facts = read_file_facts(file, options, path);
  const Header& header = facts.header;
  const Layout& layout = facts.layout;
  const bool compressed = facts.compressed;
  const int64_t end_of_data = layout.vox_offset + layout.data_bytes;
  auto truncated = [&](int64_t data_held) {
    return bad_file(path, "header says " + layout.description + " but the file holds only " +
                              format_bytes(static_cast<double>(std::max<int64_t>(data_held, 0))) +
                              " of data: truncated?");
  };

  // Scaling must be decodable before any voxel is read (nibabel refuses the same files).
  if (facts.has_slope && !std::isfinite(header.scl_inter)) {
    throw bad_file(path, "header has scl_slope " + std::to_string(header.scl_slope) +
                             " but a non-finite scl_inter; expected a finite intercept");
  }

  NiftiVolume volume;
  volume.dim = layout.dim;
  volume.ndim = layout.ndim;

  // Affine (see the header comment): nibabel's load-time fixes of pixdim[1..3] first.
  double zooms[3];
  for (int i = 0; i < 3; ++i) {
    const double zoom = header.pixdim[i + 1];
    zooms[i] = zoom == 0.0 ? 1.0 : std::fabs(zoom);
    volume.pixdim[i] = zooms[i];
  }
  volume.header.nifti_version = header.version;
  volume.header.datatype = header.datatype;
  volume.header.qform_code = header.qform_code;
  volume.header.sform_code = header.sform_code;
  volume.header.qform = qform_affine(header, zooms);
  volume.header.sform = affine_from_rows(header.srow);
  volume.header.xyz_units = header.xyzt_units & 0x07;
  volume.header.time_units = header.xyzt_units & 0x38;
  volume.header.description = header.description;
  const char* affine_source;
  if (header.sform_code != 0) {
    volume.affine = volume.header.sform;
    affine_source = "sform (srow_x/y/z)";
  } else if (header.qform_code != 0) {
    volume.affine = volume.header.qform;
    affine_source = "qform (quaternion, qoffset, pixdim)";
  } else {
    volume.affine = base_affine(header, zooms);
    affine_source = "pixdim";
  }
  if (!all_finite(volume.affine)) {
    throw bad_file(path, std::string("the affine from the header's ") + affine_source +
                             " has non-finite values; expected finite numbers");
  }

  // Refuse files too small for the header's claim before anything image-sized is allocated. For
  // gzip, DEFLATE expands at most ~1032x (the exact check is the decompression below).
  if (!compressed && file.size() < end_of_data) throw truncated(file.size() - layout.vox_offset);
  if (compressed && end_of_data > file.size() * kMaxDeflateRatio + kGzipSlackBytes) {
    throw bad_file(path, "header says " + layout.description +
                             " but the compressed file has only " +
                             format_bytes(static_cast<double>(file.size())) +
                             ", too little to hold it: truncated, or a corrupt header?");
  }

  // One buffer holds the raw voxels (after the header bytes, for gzip) and then their floats:
  // the volume's own vector, sized for whichever is larger and trimmed at the end. Avoiding a
  // second image-sized buffer halves the page faults, which dominate once decoding is fast.
  const int64_t prefix = compressed ? layout.vox_offset : 0;
  // Voxels kept in place need only the decompressed file's room; others, their floats' too.
  int64_t kept_prefix = options.voxels_in_place ? in_place_prefix(facts) : -1;
  if (kept_prefix < 0 && options.bytes_in_place) kept_prefix = bytes_in_place_prefix(facts);
  const bool keep = kept_prefix >= 0;
  const int64_t buffer_bytes =
      keep ? prefix + layout.data_bytes
           : std::max(prefix + layout.data_bytes, layout.voxels * int64_t{sizeof(float)});
  const int64_t buffer_floats = (buffer_bytes + 3) / 4;
  const bool decode_into = into != nullptr && into_floats >= buffer_floats;
  if (!decode_into) volume.data = allocate_floats(buffer_floats, path, buffers);
  uint8_t* buffer = reinterpret_cast<uint8_t*>(decode_into ? into : volume.data.data());

  if (!compressed) {
    if (file.read_at(layout.vox_offset, layout.data_bytes, buffer) < layout.data_bytes) {
      throw truncated(file.size() - layout.vox_offset);  // the file shrank while being read
    }
  } else {
    // Read the compressed bytes (beyond what a valid stream for this image could need is
    // ignored), then decompress header + data in one go into the buffer sized from the header.
    const int64_t compressed_bytes =
        std::min(file.size(), end_of_data + end_of_data / 16 + kGzipSlackBytes);
    std::unique_ptr<uint8_t[]> fresh_input;
    std::vector<uint8_t> pooled_input;
    uint8_t* input = nullptr;
    if (buffers != nullptr) {
      pooled_input = take_bytes(buffers->bytes, compressed_bytes, path);
      input = pooled_input.data();
    } else {
      fresh_input = allocate_bytes(compressed_bytes, path);
      input = fresh_input.get();
    }
    const int64_t input_bytes = file.read_at(0, compressed_bytes, input);
    const InflateResult result = inflate_gzip_libdeflate(input, input_bytes, buffer, end_of_data);
    if (buffers != nullptr) buffers->bytes.give(std::move(pooled_input));
    if (result.status == InflateResult::kCorrupt) {
      throw bad_file(path, "corrupt gzip stream after " +
                               format_bytes(static_cast<double>(result.produced)) +
                               " of decompressed data (" + result.detail + ")");
    }
    if (result.status == InflateResult::kTruncated) {
      throw truncated(result.produced - layout.vox_offset);
    }
  }
  if (keep) {
    volume.first_voxel = kept_prefix;
    volume.raw_int16 = facts.plain_int16;
    volume.raw_uint8 = facts.plain_uint8;
    volume.known_finite = !facts.plain_float;  // unscaled integers; floats unchecked
    if (!decode_into) volume.data.resize(static_cast<size_t>(buffer_floats));
    return volume;
  }
  const bool checked_finite = convert_to_float(header, layout, buffer, prefix);
  volume.known_finite = checked_finite || finite_by_type(header, layout);
  if (decode_into) return volume;
  volume.data.resize(static_cast<size_t>(layout.voxels));
  // 8-byte types needed twice the floats' room; give it back (a copy, but only for them).
  if (layout.type->bytes == 8) volume.data.shrink_to_fit();
  return volume;
}

void write_nifti(const std::string& path, const NiftiVolume& volume, NiftiDataType type) {
  if (volume.ndim != 3 && volume.ndim != 4) {
    throw InternalError("write_nifti(" + path + "): ndim is " + std::to_string(volume.ndim) +
                        ", expected 3 or 4");
  }
  bool fits_nifti1 = true;
  for (int i = 0; i < 4; ++i) {
    if (volume.dim[i] < 1 || (i == 3 && volume.ndim == 3 && volume.dim[i] != 1)) {
      throw InternalError("write_nifti(" + path + "): invalid dims " +
                          join_dims(volume.dim.data(), 4) + " for ndim " +
                          std::to_string(volume.ndim));
    }
    fits_nifti1 = fits_nifti1 && volume.dim[i] <= std::numeric_limits<int16_t>::max();
  }
  if (static_cast<int64_t>(volume.data.size()) != volume.voxel_count()) {
    throw InternalError("write_nifti(" + path + "): data holds " +
                        std::to_string(volume.data.size()) + " values but dims " +
                        join_dims(volume.dim.data(), 4) + " need " +
                        std::to_string(volume.voxel_count()));
  }
  const DataTypeInfo* info = find_datatype(static_cast<int>(type));
  if (info == nullptr) {
    throw InternalError("write_nifti(" + path + "): unsupported datatype " +
                        std::to_string(static_cast<int>(type)));
  }

  // The whole file in memory: header, 4-byte empty extension flag, voxels.
  const int64_t vox_offset = fits_nifti1 ? kNifti1MinVoxOffset : kNifti2MinVoxOffset;
  const int64_t data_bytes = volume.voxel_count() * info->bytes;
  std::vector<uint8_t> content(static_cast<size_t>(vox_offset + data_bytes), 0);
  if (fits_nifti1) {
    nifti_1_header header;
    std::memset(&header, 0, sizeof(header));
    header.sizeof_hdr = kNifti1HeaderBytes;
    fill_header(volume, type, info->bytes, &header);
    header.vox_offset = static_cast<float>(vox_offset);
    std::memcpy(header.magic, "n+1\0", 4);
    std::memcpy(content.data(), &header, sizeof(header));
  } else {
    nifti_2_header header;
    std::memset(&header, 0, sizeof(header));
    header.sizeof_hdr = kNifti2HeaderBytes;
    fill_header(volume, type, info->bytes, &header);
    header.vox_offset = vox_offset;
    std::memcpy(header.magic, "n+2\0\r\n\032\n", 8);
    std::memcpy(content.data(), &header, sizeof(header));
  }
  uint8_t* data = content.data() + vox_offset;
  switch (type) {
    case NiftiDataType::kUint8:
      encode_voxels<uint8_t>(volume.data, data);
      break;
    case NiftiDataType::kInt16:
      encode_voxels<int16_t>(volume.data, data);
      break;
    case NiftiDataType::kInt32:
      encode_voxels<int32_t>(volume.data, data);
      break;
    case NiftiDataType::kFloat32:
      encode_voxels<float>(volume.data, data);
      break;
    case NiftiDataType::kFloat64:
      encode_voxels<double>(volume.data, data);
      break;
  }

  if (!ends_with(path, ".gz")) {
    write_file_atomically(path, content.data(), content.size());
    return;
  }
  // Level 1: fast, and still small for label maps and smooth images.
  std::unique_ptr<libdeflate_compressor, void (*)(libdeflate_compressor*)> compressor(
      libdeflate_alloc_compressor(1), libdeflate_free_compressor);
  if (!compressor) throw PlatformError("out of memory compressing NIfTI file " + path);
  std::vector<uint8_t> gzip(libdeflate_gzip_compress_bound(compressor.get(), content.size()));
  const size_t gzip_bytes = libdeflate_gzip_compress(compressor.get(), content.data(),
                                                     content.size(), gzip.data(), gzip.size());
  if (gzip_bytes == 0) throw InternalError("write_nifti(" + path + "): gzip bound too small");
  write_file_atomically(path, gzip.data(), gzip_bytes);
}

}  // namespace medseg

#include "io/medseg_record.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define MEDSEG_HAVE_F16C_PATH 1
#endif

#include "util/error.h"
#include "util/file_io.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "medseg records are little-endian and read in place; add byte swapping first");

namespace medseg {
namespace {

constexpr char kMagic[8] = {'M', 'E', 'D', 'S', 'E', 'G', 'R', 'C'};
constexpr char kEndMagic[4] = {'M', 'E', 'N', 'D'};
constexpr uint32_t kLabelDTypeUint8 = 0;
constexpr size_t kHeaderCrcOffset = 396;
// Header sanity bounds, far above any real volume, so overflow-free arithmetic is easy to argue.
constexpr int64_t kMaxDimension = int64_t{1} << 20;
constexpr int64_t kMaxChannels = 1024;
// RecordIO's magic as it appears in a byte stream, for a hint when Pipe mode framing is wrong.
constexpr uint8_t kRecordIOMagicBytes[4] = {0x0a, 0x23, 0xd7, 0xce};
#ifdef MADV_POPULATE_READ
constexpr int kMadvisePopulateRead = MADV_POPULATE_READ;
#else
constexpr int kMadvisePopulateRead = 22;  // Linux 5.14; older kernels answer EINVAL
#endif

uint64_t round_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

template <typename T>
void put(uint8_t* base, size_t offset, T value) {
  std::memcpy(base + offset, &value, sizeof(T));
}

template <typename T>
T get(const uint8_t* base, size_t offset) {
  T value;
  std::memcpy(&value, base + offset, sizeof(T));
  return value;
}

uint32_t crc32_of(uint32_t crc, const void* data, size_t size) {
  return libdeflate_crc32(crc, data, size);
}

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

// "<name>: record <k> at byte offset <n>"
std::string where(const std::string& name, int64_t record_index, uint64_t offset) {
  return name + ": record " + std::to_string(record_index) + " at byte offset " +
         std::to_string(offset);
}

// The sizes every record layout is derived from.
struct Layout {
  uint64_t header_bytes, image_offset, image_bytes, label_offset, label_bytes, record_bytes;
};

// Computes the layout, or returns false when the sizes overflow 64 bits.
bool compute_layout(uint64_t case_id_bytes, const std::array<int64_t, 3>& shape,
                    int64_t image_channels, int64_t label_channels, ImageDType dtype,
                    Layout* layout) {
  // Each factor is bounded by kMaxDimension / kMaxChannels (checked by callers), so the products
  // stay below 2^70 only in theory; use checked multiplication anyway.
  uint64_t voxels = 1;
  for (int64_t extent : shape) {
    if (__builtin_mul_overflow(voxels, static_cast<uint64_t>(extent), &voxels)) return false;
  }
  const uint64_t element = dtype == ImageDType::kFloat16 ? 2 : 4;
  uint64_t image_bytes = 0;
  uint64_t label_bytes = 0;
  if (__builtin_mul_overflow(voxels, static_cast<uint64_t>(image_channels) * element,
                             &image_bytes) ||
      __builtin_mul_overflow(voxels, static_cast<uint64_t>(label_channels), &label_bytes)) {
    return false;
  }
  if (image_bytes > (uint64_t{1} << 60) || label_bytes > (uint64_t{1} << 60)) return false;
  layout->header_bytes = round_up(kRecordFixedHeaderBytes + case_id_bytes, kRecordAlignment);
  layout->image_offset = layout->header_bytes;
  layout->image_bytes = image_bytes;
  layout->label_offset = round_up(layout->image_offset + image_bytes, kRecordAlignment);
  layout->label_bytes = label_bytes;
  layout->record_bytes =
      round_up(layout->label_offset + label_bytes + kRecordTrailerBytes, kRecordAlignment);
  return true;
}

// Checks the first kRecordFixedHeaderBytes of a record (magic, version, case id length) and
// returns header_bytes, so the caller knows how much header to read. `prefix` holds at least
// kRecordFixedHeaderBytes bytes.
uint64_t check_prefix(const uint8_t* prefix, const std::string& context) {
  if (std::memcmp(prefix, kMagic, sizeof(kMagic)) != 0) {
    std::string hint = "; this is not a medseg record (or the data before it is corrupt)";
    if (std::memcmp(prefix, kRecordIOMagicBytes, 4) == 0) {
      hint = "; the data is RecordIO-wrapped: set the channel's RecordWrapperType to RecordIO";
    }
    throw ClientError(context + ": bad magic (expected \"MEDSEGRC\")" + hint);
  }
  const uint32_t version = get<uint32_t>(prefix, 8);
  if (version != kRecordVersion) {
    throw ClientError(context + ": unsupported record version " + std::to_string(version) +
                      " (this medseg reads version " + std::to_string(kRecordVersion) +
                      "); re-create the records with this medseg's preprocess");
  }
  const uint32_t case_id_bytes = get<uint32_t>(prefix, 24);
  if (case_id_bytes == 0 || case_id_bytes > kMaxCaseIdBytes) {
    throw ClientError(context + ": corrupt header (case id length " +
                      std::to_string(case_id_bytes) + ", expected 1.." +
                      std::to_string(kMaxCaseIdBytes) + ")");
  }
  const uint64_t header_bytes = get<uint32_t>(prefix, 12);
  if (header_bytes != round_up(kRecordFixedHeaderBytes + case_id_bytes, kRecordAlignment)) {
    throw ClientError(context + ": corrupt header (header size " + std::to_string(header_bytes) +
                      " does not match the case id length " + std::to_string(case_id_bytes) + ")");
  }
  return header_bytes;
}

// Decodes and validates a whole header region (`header_bytes` as returned by check_prefix).
RecordHeader decode_header(const uint8_t* data, const std::string& context) {
  const uint64_t header_bytes = check_prefix(data, context);
  const uint32_t case_id_bytes = get<uint32_t>(data, 24);
  uint32_t crc = crc32_of(0, data, kHeaderCrcOffset);
  crc = crc32_of(crc, data + kRecordFixedHeaderBytes, case_id_bytes);
  const uint32_t stored_crc = get<uint32_t>(data, kHeaderCrcOffset);
  if (crc != stored_crc) {
    throw ClientError(context + ": header checksum mismatch (stored " + hex32(stored_crc) +
                      ", computed " + hex32(crc) + "): the record is corrupt");
  }

  RecordHeader header;
  header.case_id.assign(reinterpret_cast<const char*>(data + kRecordFixedHeaderBytes),
                        case_id_bytes);
  if (const std::string problem = case_id_problem(header.case_id); !problem.empty()) {
    throw ClientError(context + ": invalid case id '" + printable_case_id(header.case_id) +
                      "': " + problem);
  }
  const std::string context_with_id = context + " (case '" + header.case_id + "')";
  auto corrupt = [&](const std::string& what) {
    return ClientError(context_with_id + ": invalid header: " + what);
  };
  const uint32_t dtype = get<uint32_t>(data, 28);
  if (dtype != static_cast<uint32_t>(ImageDType::kFloat16) &&
      dtype != static_cast<uint32_t>(ImageDType::kFloat32)) {
    throw corrupt("unknown image dtype code " + std::to_string(dtype) +
                  " (1 = float16, 2 = float32)");
  }
  header.image_dtype = static_cast<ImageDType>(dtype);
  if (get<uint32_t>(data, 32) != kLabelDTypeUint8) {
    throw corrupt("unknown label dtype code " + std::to_string(get<uint32_t>(data, 32)));
  }
  for (int axis = 0; axis < 3; ++axis) {
    header.spatial_shape[axis] = get<int64_t>(data, 40 + 8 * axis);
    header.original.spatial_shape[axis] = get<int64_t>(data, 240 + 8 * axis);
    if (header.spatial_shape[axis] < 1 || header.spatial_shape[axis] > kMaxDimension) {
      throw corrupt("spatial shape axis " + std::to_string(axis) + " is " +
                    std::to_string(header.spatial_shape[axis]));
    }
  }
  header.image_channels = get<int64_t>(data, 64);
  header.label_channels = get<int64_t>(data, 72);
  if (header.image_channels < 1 || header.image_channels > kMaxChannels) {
    throw corrupt("image channel count " + std::to_string(header.image_channels));
  }
  if (header.label_channels < 0 || header.label_channels > kMaxChannels) {
    throw corrupt("label channel count " + std::to_string(header.label_channels));
  }
  for (int row = 0; row < 4; ++row) {
    for (int column = 0; column < 4; ++column) {
      header.affine[row][column] = get<double>(data, 112 + 8 * (4 * row + column));
      header.original.affine[row][column] = get<double>(data, 264 + 8 * (4 * row + column));
    }
  }
  Layout layout{};
  if (!compute_layout(case_id_bytes, header.spatial_shape, header.image_channels,
                      header.label_channels, header.image_dtype, &layout)) {
    throw corrupt("payload sizes overflow");
  }
  header.header_bytes = header_bytes;
  header.record_bytes = get<uint64_t>(data, 16);
  header.image_offset = get<uint64_t>(data, 80);
  header.image_bytes = get<uint64_t>(data, 88);
  header.label_offset = get<uint64_t>(data, 96);
  header.label_bytes = get<uint64_t>(data, 104);
  if (header.record_bytes != layout.record_bytes || header.image_offset != layout.image_offset ||
      header.image_bytes != layout.image_bytes || header.label_offset != layout.label_offset ||
      header.label_bytes != layout.label_bytes) {
    throw corrupt("stored sizes (record " + std::to_string(header.record_bytes) +
                  " bytes) disagree "
                  "with the shape and channels (record " +
                  std::to_string(layout.record_bytes) + " bytes)");
  }
  return header;
}

// Checks the trailer at the end of a complete record.
void check_trailer(const uint8_t* trailer, const RecordHeader& header, const std::string& context) {
  if (std::memcmp(trailer + 12, kEndMagic, sizeof(kEndMagic)) != 0 ||
      get<uint64_t>(trailer, 0) != header.record_bytes) {
    throw ClientError(context + " (case '" + header.case_id +
                      "'): bad end marker: the record is truncated or corrupt");
  }
}

void check_payload_crc(uint32_t computed, const uint8_t* trailer, const RecordHeader& header,
                       const std::string& context) {
  const uint32_t stored = get<uint32_t>(trailer, 8);
  if (computed != stored) {
    throw ClientError(context + " (case '" + header.case_id +
                      "'): payload checksum mismatch (stored " + hex32(stored) + ", computed " +
                      hex32(computed) + "): the data is corrupt; re-create or re-upload it");
  }
}

// Labels are 0/1 masks: a CRC-valid record with other values was not written by medseg.
void check_label_values(const uint8_t* label, uint64_t bytes, const RecordHeader& header,
                        const std::string& context) {
  for (uint64_t i = 0; i < bytes; ++i) {
    if (label[i] > 1) {
      throw ClientError(context + " (case '" + header.case_id + "'): label value " +
                        std::to_string(label[i]) + " at voxel " + std::to_string(i) +
                        "; expected 0 or 1 ([TC, WT, ET] masks)");
    }
  }
}

// The length of the UTF-8 sequence `text` starts at `at`, 0 when it is not valid UTF-8.
size_t utf8_sequence_length(const std::string& text, size_t at) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t first = byte(at);
  size_t length = 0;
  uint32_t code = 0;
  if (first < 0x80) return 1;
  if ((first & 0xE0) == 0xC0) {
    length = 2;
    code = first & 0x1F;
  } else if ((first & 0xF0) == 0xE0) {
    length = 3;
    code = first & 0x0F;
  } else if ((first & 0xF8) == 0xF0) {
    length = 4;
    code = first & 0x07;
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(at + i) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(at + i) & 0x3F);
  }
  // Overlong forms, surrogates and code points beyond Unicode are not UTF-8.
  static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code < kSmallest[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

}  // namespace

std::string case_id_problem(const std::string& case_id) {
  if (case_id.empty() || case_id.size() > kMaxCaseIdBytes) {
    return "it must be 1.." + std::to_string(kMaxCaseIdBytes) + " bytes long (it has " +
           std::to_string(case_id.size()) + ")";
  }
  if (case_id == "." || case_id == "..") return "'.' and '..' are not case names";
  for (size_t at = 0; at < case_id.size();) {
    const auto c = static_cast<uint8_t>(case_id[at]);
    if (c < 0x20 || c == 0x7F) return "it contains a control character at byte " + std::to_string(at);
    if (c == '/' || c == '\\') return "it contains a path separator at byte " + std::to_string(at);
    const size_t length = utf8_sequence_length(case_id, at);
    if (length == 0) return "it is not valid UTF-8 at byte " + std::to_string(at);
    at += length;
  }
  return "";
}

std::string printable_case_id(const std::string& case_id) {
  std::string out;
  for (const char ch : case_id) {
    const auto c = static_cast<uint8_t>(ch);
    if (c >= 0x20 && c < 0x7F) {
      out += ch;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
    }
    if (out.size() >= 80) return out.substr(0, 77) + "...";
  }
  return out;
}

namespace {

void check_case(const CaseData& case_data) {
  const std::string context = "record for case '" + printable_case_id(case_data.case_id) + "'";
  if (const std::string problem = case_id_problem(case_data.case_id); !problem.empty()) {
    throw ClientError(context + ": invalid case id: " + problem);
  }
  for (int64_t extent : case_data.spatial_shape) {
    if (extent < 1 || extent > kMaxDimension) {
      throw ClientError(context + ": spatial shape extent " + std::to_string(extent) +
                        " outside 1.." + std::to_string(kMaxDimension));
    }
  }
  if (case_data.image_channels < 1 || case_data.image_channels > kMaxChannels ||
      case_data.label_channels < 0 || case_data.label_channels > kMaxChannels) {
    throw ClientError(context + ": channel counts " + std::to_string(case_data.image_channels) +
                      " (image) / " + std::to_string(case_data.label_channels) +
                      " (label) out of range");
  }
  const int64_t voxels = case_data.voxels_per_channel();
  if (static_cast<int64_t>(case_data.image.size()) != case_data.image_channels * voxels ||
      static_cast<int64_t>(case_data.label.size()) != case_data.label_channels * voxels) {
    throw ClientError(context + ": image/label buffers (" + std::to_string(case_data.image.size()) +
                      " / " + std::to_string(case_data.label.size()) +
                      " values) do not match shape and channel counts");
  }
  for (uint8_t value : case_data.label) {
    if (value > 1) {
      throw ClientError(context + ": label value " + std::to_string(value) +
                        " (label channels hold 0 or 1)");
    }
  }
}

#ifdef MEDSEG_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) void halves_to_floats_f16c(const uint16_t* halves,
                                                               float* floats, size_t count) {
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(halves + i));
    const __m128i high = _mm_loadu_si128(reinterpret_cast<const __m128i*>(halves + i + 8));
    _mm256_storeu_ps(floats + i, _mm256_cvtph_ps(low));
    _mm256_storeu_ps(floats + i + 8, _mm256_cvtph_ps(high));
  }
  for (; i < count; ++i) floats[i] = half_to_float(halves[i]);
}

bool cpu_has_f16c() {
  static const bool has = [] {
    __builtin_cpu_init();
    // F16C is CPUID leaf 1, ECX bit 29 (asked directly: clang's __builtin_cpu_supports does not
    // know "f16c"); AVX through the builtin, which also checks that the OS saves AVX state.
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    return __builtin_cpu_supports("avx") && (ecx & (1u << 29)) != 0;
  }();
  return has;
}
#endif

// Reads from a mapped payload into caller buffers.
void decode_payload(const RecordHeader& header, const uint8_t* record, float* image_out,
                    uint8_t* label_out) {
  const size_t values = static_cast<size_t>(header.image_values());
  if (header.image_dtype == ImageDType::kFloat32) {
    std::memcpy(image_out, record + header.image_offset, values * sizeof(float));
  } else {
    halves_to_floats(reinterpret_cast<const uint16_t*>(record + header.image_offset), image_out,
                     values);
  }
  if (label_out != nullptr && header.label_bytes > 0) {
    std::memcpy(label_out, record + header.label_offset, header.label_bytes);
  }
}

// Sets `case_data`'s fields from `header` and sizes its buffers (reusing their memory).
void shape_case_from_header(const RecordHeader& header, CaseData& case_data) {
  case_data.case_id = header.case_id;
  case_data.spatial_shape = header.spatial_shape;
  case_data.image_channels = header.image_channels;
  case_data.label_channels = header.label_channels;
  case_data.affine = header.affine;
  case_data.original = header.original;
  case_data.image.resize(static_cast<size_t>(header.image_values()));
  case_data.label.resize(static_cast<size_t>(header.label_bytes));
}

}  // namespace

const char* image_dtype_name(ImageDType dtype) {
  return dtype == ImageDType::kFloat16 ? "float16" : "float32";
}

ImageDType parse_image_dtype(const std::string& text, const std::string& what) {
  if (text == "float16" || text == "fp16" || text == "half") return ImageDType::kFloat16;
  if (text == "float32" || text == "fp32" || text == "float") return ImageDType::kFloat32;
  throw ClientError(what + ": unknown image dtype '" + text + "' (expected float16 or float32)");
}

uint16_t float_to_half(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t sign = (bits >> 16) & 0x8000u;
  bits &= 0x7fffffffu;
  uint16_t result;
  if (bits >= 0x47800000u) {  // |value| >= 65536, inf or NaN: rounds to inf in every case
    result = bits > 0x7f800000u ? 0x7e00u : 0x7c00u;  // NaN -> quiet NaN
  } else if (bits < 0x38800000u) {  // |value| < 2^-14: a float16 subnormal or zero
    // Adding 0.5 aligns the value's bits so that the FPU's own round-to-nearest-even rounds at
    // float16's subnormal spacing (2^-24); the low mantissa bits are then the result.
    float magnitude;
    std::memcpy(&magnitude, &bits, sizeof(magnitude));
    magnitude += 0.5f;
    uint32_t rounded;
    std::memcpy(&rounded, &magnitude, sizeof(rounded));
    result = static_cast<uint16_t>(rounded - 0x3f000000u);
  } else {
    // Rebias the exponent, then add half an ulp minus one plus the lowest kept bit: the carry
    // rounds to nearest, ties to even, and may carry into the exponent (up to inf at 65520).
    const uint32_t odd = (bits >> 13) & 1u;
    bits += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
    result = static_cast<uint16_t>(bits >> 13);
  }
  return static_cast<uint16_t>(result | sign);
}

float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else {
    // Zero or subnormal: mantissa * 2^-24, exact in float32.
    float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    uint32_t magnitude_bits;
    std::memcpy(&magnitude_bits, &magnitude, sizeof(magnitude_bits));
    bits = sign | magnitude_bits;
  }
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

void halves_to_floats(const uint16_t* halves, float* floats, size_t count) {
#ifdef MEDSEG_HAVE_F16C_PATH
  if (cpu_has_f16c()) {
    halves_to_floats_f16c(halves, floats, count);
    return;
  }
#endif
  for (size_t i = 0; i < count; ++i) floats[i] = half_to_float(halves[i]);
}

std::vector<uint8_t> encode_record(const CaseData& case_data, ImageDType image_dtype) {
  std::vector<uint8_t> record;
  encode_record(case_data, image_dtype, record);
  return record;
}

void encode_record(const CaseData& case_data, ImageDType image_dtype,
                   std::vector<uint8_t>& record) {
  check_case(case_data);
  Layout layout{};
  compute_layout(case_data.case_id.size(), case_data.spatial_shape, case_data.image_channels,
                 case_data.label_channels, image_dtype, &layout);
  record.assign(layout.record_bytes, 0);
  uint8_t* data = record.data();

  std::memcpy(data, kMagic, sizeof(kMagic));
  put<uint32_t>(data, 8, kRecordVersion);
  put<uint32_t>(data, 12, static_cast<uint32_t>(layout.header_bytes));
  put<uint64_t>(data, 16, layout.record_bytes);
  put<uint32_t>(data, 24, static_cast<uint32_t>(case_data.case_id.size()));
  put<uint32_t>(data, 28, static_cast<uint32_t>(image_dtype));
  put<uint32_t>(data, 32, kLabelDTypeUint8);
  for (int axis = 0; axis < 3; ++axis) {
    put<int64_t>(data, 40 + 8 * axis, case_data.spatial_shape[axis]);
    put<int64_t>(data, 240 + 8 * axis, case_data.original.spatial_shape[axis]);
  }
  put<int64_t>(data, 64, case_data.image_channels);
  put<int64_t>(data, 72, case_data.label_channels);
  put<uint64_t>(data, 80, layout.image_offset);
  put<uint64_t>(data, 88, layout.image_bytes);
  put<uint64_t>(data, 96, layout.label_offset);
  put<uint64_t>(data, 104, layout.label_bytes);
  for (int row = 0; row < 4; ++row) {
    for (int column = 0; column < 4; ++column) {
      put<double>(data, 112 + 8 * (4 * row + column), case_data.affine[row][column]);
      put<double>(data, 264 + 8 * (4 * row + column), case_data.original.affine[row][column]);
    }
  }
  std::memcpy(data + kRecordFixedHeaderBytes, case_data.case_id.data(), case_data.case_id.size());
  uint32_t header_crc = crc32_of(0, data, kHeaderCrcOffset);
  header_crc = crc32_of(header_crc, case_data.case_id.data(), case_data.case_id.size());
  put<uint32_t>(data, kHeaderCrcOffset, header_crc);

  if (image_dtype == ImageDType::kFloat32) {
    std::memcpy(data + layout.image_offset, case_data.image.data(), layout.image_bytes);
  } else {
    uint8_t* out = data + layout.image_offset;
    for (size_t i = 0; i < case_data.image.size(); ++i) {
      const float value = case_data.image[i];
      const uint16_t half = float_to_half(value);
      if ((half & 0x7fffu) == 0x7c00u && std::isfinite(value)) {
        throw ClientError("record for case '" + case_data.case_id + "': image value " +
                          std::to_string(value) + " at index " + std::to_string(i) +
                          " exceeds float16's range (+-65504); store the image as float32 or "
                          "normalise the intensities first");
      }
      put<uint16_t>(out, 2 * i, half);
    }
  }
  if (layout.label_bytes > 0) {
    std::memcpy(data + layout.label_offset, case_data.label.data(), layout.label_bytes);
  }

  uint8_t* trailer = data + layout.record_bytes - kRecordTrailerBytes;
  put<uint64_t>(trailer, 0, layout.record_bytes);
  put<uint32_t>(trailer, 8,
                crc32_of(0, data + layout.header_bytes,
                         layout.record_bytes - kRecordTrailerBytes - layout.header_bytes));
  std::memcpy(trailer + 12, kEndMagic, sizeof(kEndMagic));
}

// ---------------------------------------------------------------------------------------------
// RecordWriter

RecordWriter::RecordWriter(const std::string& path, RecordWriterOptions options)
    : path_(path), options_(options), file_(std::make_unique<AtomicFile>(path)) {}

RecordWriter::~RecordWriter() = default;

void RecordWriter::append(const CaseData& case_data) {
  if (!file_) throw InternalError("RecordWriter::append after finish for " + path_);
  encode_record(case_data, options_.image_dtype, record_);
  file_->write(record_.data(), record_.size());
  ++records_written_;
  bytes_written_ += record_.size();
}

void RecordWriter::finish() {
  if (!file_) throw InternalError("RecordWriter::finish called twice for " + path_);
  file_->commit();
  file_.reset();
}

void write_record_file(const std::string& path, const std::vector<CaseData>& cases,
                       RecordWriterOptions options) {
  RecordWriter writer(path, options);
  for (const CaseData& case_data : cases) writer.append(case_data);
  writer.finish();
}

// ---------------------------------------------------------------------------------------------
// MappedRecordReader

MappedRecordReader::MappedRecordReader(const std::string& path, RecordReadOptions options)
    : options_(options) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) {
    throw ClientError(path + ": no such record file or folder");
  }
  if (fs::is_directory(status)) {
    for (fs::recursive_directory_iterator it(path, error), end; !error && it != end;
         it.increment(error)) {
      if (it->is_regular_file(error) && it->path().filename().string().front() != '.' &&
          it->path().extension() == kShardFileSuffix) {
        file_paths_.push_back(it->path().string());
      }
    }
    if (error) throw PlatformError("cannot list " + path + ": " + error.message());
    std::sort(file_paths_.begin(), file_paths_.end());
    if (file_paths_.empty()) {
      throw ClientError(path + ": no record shards (*" + std::string(kShardFileSuffix) +
                        " files) in this folder");
    }
  } else {
    file_paths_.push_back(path);
  }
  try {
    for (const std::string& file : file_paths_) map_and_index(file);
  } catch (...) {
    for (const MappedFile& file : files_) {
      if (file.size > 0) ::munmap(const_cast<uint8_t*>(file.data), file.size);
    }
    throw;
  }
  verified_ = std::make_unique<std::atomic<bool>[]>(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) verified_[i] = false;
}

MappedRecordReader::~MappedRecordReader() {
  for (const MappedFile& file : files_) {
    if (file.size > 0) ::munmap(const_cast<uint8_t*>(file.data), file.size);
  }
}

void MappedRecordReader::map_and_index(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw ClientError(path + ": no such record file");
    throw_system_error("cannot open " + path);
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    throw_system_error("cannot stat " + path);
  }
  MappedFile file;
  file.path = path;
  file.size = static_cast<size_t>(info.st_size);
  if (file.size == 0) {
    ::close(fd);
    throw ClientError(path + ": the record file is empty");
  }
  void* mapping = ::mmap(nullptr, file.size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) throw_system_error("cannot map " + path);
  file.data = static_cast<const uint8_t*>(mapping);
  files_.push_back(file);
  const size_t file_index = files_.size() - 1;

  uint64_t offset = 0;
  size_t index_in_file = 0;
  while (offset < file.size) {
    const std::string context = where(path, static_cast<int64_t>(index_in_file), offset);
    const uint64_t remaining = file.size - offset;
    if (remaining < kRecordFixedHeaderBytes) {
      throw ClientError(context + ": truncated record (only " + std::to_string(remaining) +
                        " bytes left in the file)");
    }
    const uint8_t* record = file.data + offset;
    const uint64_t header_bytes = check_prefix(record, context);
    if (header_bytes > remaining) {
      throw ClientError(context + ": truncated record (the header needs " +
                        std::to_string(header_bytes) + " bytes, " + std::to_string(remaining) +
                        " left in the file)");
    }
    Entry entry;
    entry.header = decode_header(record, context);
    if (entry.header.record_bytes > remaining) {
      throw ClientError(context + " (case '" + entry.header.case_id +
                        "'): truncated record (it needs " +
                        std::to_string(entry.header.record_bytes) + " bytes, " +
                        std::to_string(remaining) + " left in the file)");
    }
    check_trailer(record + entry.header.record_bytes - kRecordTrailerBytes, entry.header, context);
    entry.file = file_index;
    entry.offset = offset;
    entry.index_in_file = index_in_file;
    offset += entry.header.record_bytes;
    ++index_in_file;
    entries_.push_back(std::move(entry));
  }
}

const MappedRecordReader::Entry& MappedRecordReader::entry(size_t index) const {
  if (index >= entries_.size()) {
    throw InternalError("record index " + std::to_string(index) + " out of range (" +
                        std::to_string(entries_.size()) + " records)");
  }
  return entries_[index];
}

const RecordHeader& MappedRecordReader::header(size_t index) const { return entry(index).header; }

std::string MappedRecordReader::describe(size_t index) const {
  const Entry& e = entry(index);
  return files_[e.file].path + ": record " + std::to_string(e.index_in_file) + " (case '" +
         e.header.case_id + "') at byte offset " + std::to_string(e.offset);
}

void MappedRecordReader::prefault(const Entry& e) const {
  // One madvise maps the record's pages (read ahead from disk if needed) instead of one page
  // fault per 4 KiB during the copy; an optimisation only, so failures (old kernels) are ignored.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(files_[e.file].data + e.offset);
  const uintptr_t aligned = start / page * page;
  ::madvise(reinterpret_cast<void*>(aligned), start - aligned + e.header.record_bytes,
            kMadvisePopulateRead);
}

void MappedRecordReader::verify_payload(size_t index) const {
  if (!options_.verify_payload_checksum || verified_[index].load(std::memory_order_acquire)) {
    return;
  }
  const Entry& e = entry(index);
  const uint8_t* record = files_[e.file].data + e.offset;
  const uint64_t payload_bytes =
      e.header.record_bytes - kRecordTrailerBytes - e.header.header_bytes;
  const uint32_t crc = crc32_of(0, record + e.header.header_bytes, payload_bytes);
  const std::string context =
      where(files_[e.file].path, static_cast<int64_t>(e.index_in_file), e.offset);
  check_payload_crc(crc, record + e.header.record_bytes - kRecordTrailerBytes, e.header, context);
  check_label_values(record + e.header.label_offset, e.header.label_bytes, e.header, context);
  verified_[index].store(true, std::memory_order_release);
}

RecordView MappedRecordReader::view(size_t index) const {
  const Entry& e = entry(index);
  prefault(e);
  verify_payload(index);
  const uint8_t* record = files_[e.file].data + e.offset;
  RecordView view;
  view.header = &e.header;
  if (e.header.image_dtype == ImageDType::kFloat32) {
    view.image_float32 = reinterpret_cast<const float*>(record + e.header.image_offset);
  } else {
    view.image_float16 = reinterpret_cast<const uint16_t*>(record + e.header.image_offset);
  }
  if (e.header.label_bytes > 0) view.label = record + e.header.label_offset;
  return view;
}

void MappedRecordReader::read_into(size_t index, float* out, uint8_t* label_out) const {
  const Entry& e = entry(index);
  prefault(e);
  verify_payload(index);
  decode_payload(e.header, files_[e.file].data + e.offset, out, label_out);
}

CaseData MappedRecordReader::read(size_t index) const {
  CaseData case_data;
  shape_case_from_header(entry(index).header, case_data);
  read_into(index, case_data.image.data(), case_data.label.data());
  return case_data;
}

// ---------------------------------------------------------------------------------------------
// RecordStreamReader

RecordStreamReader::RecordStreamReader(ByteSource& source, RecordReadOptions options)
    : source_(source), options_(options) {}

void RecordStreamReader::read_exactly(void* buffer, size_t size, uint64_t record_offset,
                                      uint64_t record_bytes) {
  const size_t got = read_fully(source_, buffer, size);
  offset_ += got;
  if (got < size) {
    throw ClientError(where(source_.name(), records_read_, record_offset) +
                      ": truncated record (the stream ended after " +
                      std::to_string(offset_ - record_offset) + " of " +
                      (record_bytes > 0 ? std::to_string(record_bytes)
                                        : "at least " + std::to_string(kRecordFixedHeaderBytes)) +
                      " bytes)");
  }
}

bool RecordStreamReader::next(CaseData* out) {
  const uint64_t record_offset = offset_;
  const std::string context = where(source_.name(), records_read_, record_offset);
  header_buffer_.resize(kRecordFixedHeaderBytes);
  // Distinguish a clean end (no byte of a new record) from a truncated one.
  const size_t first = source_.read_some(header_buffer_.data(), kRecordFixedHeaderBytes);
  if (first == 0) return false;
  offset_ += first;
  read_exactly(header_buffer_.data() + first, kRecordFixedHeaderBytes - first, record_offset, 0);
  const uint64_t header_bytes = check_prefix(header_buffer_.data(), context);
  header_buffer_.resize(header_bytes);
  read_exactly(header_buffer_.data() + kRecordFixedHeaderBytes,
               header_bytes - kRecordFixedHeaderBytes, record_offset, 0);
  const RecordHeader header = decode_header(header_buffer_.data(), context);
  if (header.record_bytes > options_.max_record_bytes) {
    throw ClientError(context + " (case '" + header.case_id + "'): the record is " +
                      std::to_string(header.record_bytes) + " bytes, more than the limit of " +
                      std::to_string(options_.max_record_bytes) +
                      " bytes for streamed records: corrupt data, or raise the limit");
  }

  // Fill *out in place so that its buffers are reused from record to record (fresh memory costs
  // a page fault per 4 KiB, more than the copy itself).
  CaseData& case_data = *out;
  shape_case_from_header(header, case_data);
  const size_t values = static_cast<size_t>(header.image_values());
  uint32_t crc = 0;
  // Image, straight into the float buffer when stored as float32.
  if (header.image_dtype == ImageDType::kFloat32) {
    read_exactly(case_data.image.data(), header.image_bytes, record_offset, header.record_bytes);
    crc = crc32_of(crc, case_data.image.data(), header.image_bytes);
  } else {
    half_buffer_.resize(values);
    read_exactly(half_buffer_.data(), header.image_bytes, record_offset, header.record_bytes);
    crc = crc32_of(crc, half_buffer_.data(), header.image_bytes);
    halves_to_floats(half_buffer_.data(), case_data.image.data(), values);
  }
  uint8_t padding[kRecordAlignment + kRecordTrailerBytes];
  const uint64_t image_padding = header.label_offset - header.image_offset - header.image_bytes;
  read_exactly(padding, image_padding, record_offset, header.record_bytes);
  crc = crc32_of(crc, padding, image_padding);
  read_exactly(case_data.label.data(), header.label_bytes, record_offset, header.record_bytes);
  crc = crc32_of(crc, case_data.label.data(), header.label_bytes);
  const uint64_t tail = header.record_bytes - header.label_offset - header.label_bytes;
  read_exactly(padding, tail, record_offset, header.record_bytes);
  const uint64_t label_padding = tail - kRecordTrailerBytes;
  crc = crc32_of(crc, padding, label_padding);
  const uint8_t* trailer = padding + label_padding;
  check_trailer(trailer, header, context);
  if (options_.verify_payload_checksum) {
    check_payload_crc(crc, trailer, header, context);
    check_label_values(case_data.label.data(), header.label_bytes, header, context);
  }

  ++records_read_;
  return true;
}

}  // namespace medseg

#include "data/label_scheme.h"

#include <cmath>
#include <map>
#include <sstream>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/error.h"

namespace medseg {
namespace {

// Membership of each label value 0..4 in TC, WT, ET; a value a scheme does not allow has none and
// allowed = false.
struct ValueMapping {
  bool allowed;
  uint8_t tc, wt, et;
};

constexpr int kMaxLabelValue = 4;

const ValueMapping* mapping_for(LabelScheme scheme) {
  static const ValueMapping kMsd[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 0, 1, 0}, {true, 1, 1, 0}, {true, 1, 1, 1}, {false, 0, 0, 0}};
  static const ValueMapping kBrats[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 1, 1, 0}, {true, 0, 1, 0}, {false, 0, 0, 0}, {true, 1, 1, 1}};
  static const ValueMapping kMonaiTutorial[kMaxLabelValue + 1] = {
      {true, 0, 0, 0}, {true, 0, 1, 0}, {true, 1, 1, 1}, {true, 1, 1, 0}, {false, 0, 0, 0}};
  switch (scheme) {
    case LabelScheme::kMsd:
      return kMsd;
    case LabelScheme::kBrats:
      return kBrats;
    case LabelScheme::kMonaiTutorial:
      return kMonaiTutorial;
  }
  throw InternalError("unknown LabelScheme value " + std::to_string(static_cast<int>(scheme)));
}

std::string allowed_values_text(LabelScheme scheme) {
  const ValueMapping* mapping = mapping_for(scheme);
  std::string text;
  for (int value = 0; value <= kMaxLabelValue; ++value) {
    if (!mapping[value].allowed) continue;
    if (!text.empty()) text += ", ";
    text += std::to_string(value);
  }
  return text;
}

// The index of label value `v` in `mapping`, or -1 when the scheme does not allow it (an integer
// test without a float -> int conversion of out-of-range values; NaN fails v >= 0).
inline int allowed_index(float v, const ValueMapping* mapping) {
  if (!(v >= 0.0f && v <= static_cast<float>(kMaxLabelValue))) return -1;
  const int index = static_cast<int>(v);
  return static_cast<float>(index) == v && mapping[index].allowed ? index : -1;
}

// Collects the offending values (a second pass, only taken when the fast pass found one) so the
// message can list each with its voxel count.
template <typename T>
[[noreturn]] void throw_bad_values(const T* values, int64_t count, LabelScheme scheme,
                                   const std::string& case_id) {
  const ValueMapping* mapping = mapping_for(scheme);
  std::map<std::string, int64_t> bad;  // printed value -> voxels
  int64_t nan_count = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float v = static_cast<float>(values[i]);
    if (std::isnan(v)) {
      ++nan_count;
      continue;
    }
    if (allowed_index(v, mapping) >= 0) continue;
    std::ostringstream printed;
    printed << v;
    ++bad[printed.str()];
  }
  std::ostringstream message;
  message << "case '" << case_id << "': label ";
  bool first = true;
  int listed = 0;
  for (const auto& [value, voxels] : bad) {
    if (listed++ == 8) {
      message << ", ... (" << bad.size() << " distinct values)";
      break;
    }
    message << (first ? "" : ", ") << "value " << value << " at " << voxels << " voxels";
    first = false;
  }
  if (nan_count > 0) message << (first ? "" : ", ") << "NaN at " << nan_count << " voxels";
  message << "; the " << label_scheme_name(scheme) << " scheme allows "
          << allowed_values_text(scheme)
          << " (choose the label scheme that matches the dataset, or fix the label file)";
  throw ClientError(message.str());
}

}  // namespace

LabelScheme parse_label_scheme(const std::string& name) {
  if (name == "msd") return LabelScheme::kMsd;
  if (name == "brats") return LabelScheme::kBrats;
  if (name == "monai_tutorial") return LabelScheme::kMonaiTutorial;
  throw ClientError("unknown label scheme '" + name +
                    "'; expected one of msd, brats, monai_tutorial");
}

const char* label_scheme_name(LabelScheme scheme) {
  switch (scheme) {
    case LabelScheme::kMsd:
      return "msd";
    case LabelScheme::kBrats:
      return "brats";
    case LabelScheme::kMonaiTutorial:
      return "monai_tutorial";
  }
  return "unknown";
}

void labels_to_channels(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* channels) {
  const ValueMapping* mapping = mapping_for(scheme);
  uint8_t* tc = channels;
  uint8_t* wt = channels + count;
  uint8_t* et = channels + 2 * count;
  for (int64_t i = 0; i < count; ++i) {
    const int index = allowed_index(values[i], mapping);
    if (index < 0) throw_bad_values(values, count, scheme, case_id);
    const ValueMapping& m = mapping[index];
    tc[i] = m.tc;
    wt[i] = m.wt;
    et[i] = m.et;
  }
}

namespace {

// check_label_values' loop: writes each value's allowed index (0 for a refused value) and returns
// whether every value was allowed. No early exit.
bool label_bytes_portable(const float* values, int64_t count, const ValueMapping* mapping,
                          uint8_t* bytes) {
  bool all_allowed = true;
  for (int64_t i = 0; i < count; ++i) {
    const int index = allowed_index(values[i], mapping);
    all_allowed &= index >= 0;
    bytes[i] = static_cast<uint8_t>(index < 0 ? 0 : index);
  }
  return all_allowed;
}

// Whether the scheme allows integer label value `value`.
bool allowed_value(int value, const ValueMapping* mapping) {
  return value >= 0 && value <= kMaxLabelValue && mapping[value].allowed;
}

// Whether every byte is a value the scheme allows (a byte is its own index). No early exit.
bool bytes_allowed_portable(const uint8_t* values, int64_t count, const ValueMapping* mapping) {
  uint8_t refused[256];
  for (int value = 0; value < 256; ++value) refused[value] = allowed_value(value, mapping) ? 0 : 1;
  uint8_t any_refused = 0;
  for (int64_t i = 0; i < count; ++i) any_refused |= refused[values[i]];
  return any_refused == 0;
}

#if defined(__x86_64__)

// The allowed indices of 8 values as 8 int32 lanes (0 where refused); `refused` collects the
// lanes whose value the scheme does not allow. A value is allowed when truncating it to an
// integer gives it back exactly (NaN and out-of-range values do not) and that integer's bit is
// set in `allowed_bits` (a variable shift by a negative or large count gives 0).
__attribute__((target("avx2"), always_inline)) inline __m256i allowed_lanes(const float* values,
                                                                            __m256i allowed_bits,
                                                                            __m256i* refused) {
  const __m256 v = _mm256_loadu_ps(values);
  const __m256i index = _mm256_cvttps_epi32(v);
  const __m256i exact =
      _mm256_castps_si256(_mm256_cmp_ps(_mm256_cvtepi32_ps(index), v, _CMP_EQ_OQ));
  const __m256i bit =
      _mm256_and_si256(_mm256_srlv_epi32(allowed_bits, index), _mm256_set1_epi32(1));
  const __m256i ok = _mm256_and_si256(exact, _mm256_cmpeq_epi32(bit, _mm256_set1_epi32(1)));
  *refused = _mm256_or_si256(*refused, _mm256_andnot_si256(ok, _mm256_set1_epi32(-1)));
  return _mm256_and_si256(index, ok);
}

// label_bytes_portable, 32 values per step.
__attribute__((target("avx2"))) bool label_bytes_avx2(const float* values, int64_t count,
                                                      const ValueMapping* mapping, uint8_t* bytes) {
  int bits = 0;
  for (int value = 0; value <= kMaxLabelValue; ++value) bits |= mapping[value].allowed << value;
  const __m256i allowed_bits = _mm256_set1_epi32(bits);
  __m256i refused = _mm256_setzero_si256();
  const int64_t whole = count - count % 32;
  for (int64_t i = 0; i < whole; i += 32) {
    const __m256i a = allowed_lanes(values + i, allowed_bits, &refused);
    const __m256i b = allowed_lanes(values + i + 8, allowed_bits, &refused);
    const __m256i c = allowed_lanes(values + i + 16, allowed_bits, &refused);
    const __m256i d = allowed_lanes(values + i + 24, allowed_bits, &refused);
    // Packing works within 128-bit halves: the bytes come out as a0-3 b0-3 c0-3 d0-3 a4-7 ...;
    // one permutation of 32-bit groups puts them back in order.
    const __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(
        reinterpret_cast<__m256i*>(bytes + i),
        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  const bool tail_allowed =
      label_bytes_portable(values + whole, count - whole, mapping, bytes + whole);
  return tail_allowed && _mm256_testz_si256(refused, refused);
}

// A 16-entry byte table in both halves of a register, for pshufb.
__attribute__((target("avx2"), always_inline)) inline __m256i broadcast_table(
    const uint8_t* table) {
  return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)));
}

// bytes_allowed_portable, 32 bytes per step: a byte below 16 looks up whether it is refused in a
// 16-entry table (pshufb); one above 15 is refused.
__attribute__((target("avx2"))) bool bytes_allowed_avx2(const uint8_t* values, int64_t count,
                                                        const ValueMapping* mapping) {
  alignas(16) uint8_t table[16];
  for (int value = 0; value < 16; ++value) table[value] = allowed_value(value, mapping) ? 0 : 0xFF;
  const __m256i refused_below_16 = broadcast_table(table);
  const __m256i fifteen = _mm256_set1_epi8(15);
  __m256i refused = _mm256_setzero_si256();
  const int64_t whole = count - count % 32;
  for (int64_t i = 0; i < whole; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(values + i));
    const __m256i below_16 = _mm256_cmpeq_epi8(_mm256_min_epu8(v, fifteen), v);
    const __m256i looked_up = _mm256_shuffle_epi8(refused_below_16, v);
    refused = _mm256_or_si256(
        refused, _mm256_or_si256(looked_up, _mm256_andnot_si256(below_16, _mm256_set1_epi8(-1))));
  }
  return bytes_allowed_portable(values + whole, count - whole, mapping) &&
         _mm256_testz_si256(refused, refused);
}

// label_bytes_to_channels' loop, 32 bytes per step: each channel's byte is looked up in a
// 16-entry table (pshufb; bytes above kMaxLabelValue map to 0, as in the loop). Returns how
// many bytes it did (a multiple of 32).
__attribute__((target("avx2"))) int64_t label_bytes_to_channels_avx2(const uint8_t* bytes,
                                                                     int64_t count,
                                                                     const ValueMapping* mapping,
                                                                     uint8_t* tc, uint8_t* wt,
                                                                     uint8_t* et) {
  alignas(16) uint8_t tables[3][16] = {};
  for (int value = 0; value <= kMaxLabelValue; ++value) {
    tables[0][value] = mapping[value].tc;
    tables[1][value] = mapping[value].wt;
    tables[2][value] = mapping[value].et;
  }
  const __m256i tc_of = broadcast_table(tables[0]), wt_of = broadcast_table(tables[1]),
                et_of = broadcast_table(tables[2]);
  const __m256i fifteen = _mm256_set1_epi8(15);
  const int64_t whole = count - count % 32;
  for (int64_t i = 0; i < whole; i += 32) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes + i));
    // A byte above 15 would index the table by its low bits: make it index 15 (0 everywhere).
    v = _mm256_min_epu8(v, fifteen);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tc + i), _mm256_shuffle_epi8(tc_of, v));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(wt + i), _mm256_shuffle_epi8(wt_of, v));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(et + i), _mm256_shuffle_epi8(et_of, v));
  }
  return whole;
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");

#endif

}  // namespace

void check_label_values(const float* values, int64_t count, LabelScheme scheme,
                        const std::string& case_id, uint8_t* bytes) {
  const ValueMapping* mapping = mapping_for(scheme);
#if defined(__x86_64__)
  const bool all_allowed = kHaveAvx2 ? label_bytes_avx2(values, count, mapping, bytes)
                                     : label_bytes_portable(values, count, mapping, bytes);
#else
  const bool all_allowed = label_bytes_portable(values, count, mapping, bytes);
#endif
  if (!all_allowed) throw_bad_values(values, count, scheme, case_id);
}

void check_label_bytes(const uint8_t* values, int64_t count, LabelScheme scheme,
                       const std::string& case_id) {
  const ValueMapping* mapping = mapping_for(scheme);
#if defined(__x86_64__)
  const bool all_allowed = kHaveAvx2 ? bytes_allowed_avx2(values, count, mapping)
                                     : bytes_allowed_portable(values, count, mapping);
#else
  const bool all_allowed = bytes_allowed_portable(values, count, mapping);
#endif
  if (!all_allowed) throw_bad_values(values, count, scheme, case_id);
}

void label_bytes_to_channels(const uint8_t* bytes, int64_t count, LabelScheme scheme,
                             uint8_t* channels) {
  const ValueMapping* mapping = mapping_for(scheme);
  uint8_t* tc = channels;
  uint8_t* wt = channels + count;
  uint8_t* et = channels + 2 * count;
  int64_t i = 0;
#if defined(__x86_64__)
  if (kHaveAvx2) i = label_bytes_to_channels_avx2(bytes, count, mapping, tc, wt, et);
#endif
  for (; i < count; ++i) {
    const ValueMapping& m = mapping[bytes[i] <= kMaxLabelValue ? bytes[i] : 0];
    tc[i] = m.tc;
    wt[i] = m.wt;
    et[i] = m.et;
  }
}

}  // namespace medseg

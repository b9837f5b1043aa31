#include "data/resample_rows.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace medseg {
namespace {

constexpr int64_t kGroup = 4;      // voxels per AVX2 vector of doubles
constexpr int64_t kSpan = 8;       // floats one unaligned AVX2 load holds
constexpr int64_t kWideGroup = 8;  // voxels per AVX-512 vector of doubles
constexpr int64_t kWideSpan = 16;  // floats one unaligned AVX-512 load holds

// The eight corner weights of voxel x, each formed as trilinear() forms it: (wz * wy) * wx.
struct CornerWeights {
  double y0z0, y0z1, y1z0, y1z1;  // wz * wy of each input row
};

CornerWeights row_weights(const RowCorners& c) {
  return {c.wz0 * c.wy0, c.wz1 * c.wy0, c.wz0 * c.wy1, c.wz1 * c.wy1};
}

// One voxel, in the order of trilinear(): the x0 corners of rows (y0 z0), (y0 z1), (y1 z0),
// (y1 z1), then their x1 corners.
template <typename T>
inline float voxel(const T* src, const RowCorners& c, const CornerWeights& w, const RowTaps& taps,
                   int64_t x) {
  const int64_t a = taps.x0[x], b = taps.x1[x];
  const double wa = taps.w0[x], wb = taps.w1[x];
  double out = 0.0;
  out += static_cast<double>(src[c.y0z0 + a]) * (w.y0z0 * wa);
  out += static_cast<double>(src[c.y0z1 + a]) * (w.y0z1 * wa);
  out += static_cast<double>(src[c.y1z0 + a]) * (w.y1z0 * wa);
  out += static_cast<double>(src[c.y1z1 + a]) * (w.y1z1 * wa);
  out += static_cast<double>(src[c.y0z0 + b]) * (w.y0z0 * wb);
  out += static_cast<double>(src[c.y0z1 + b]) * (w.y0z1 * wb);
  out += static_cast<double>(src[c.y1z0 + b]) * (w.y1z0 * wb);
  out += static_cast<double>(src[c.y1z1 + b]) * (w.y1z1 * wb);
  return static_cast<float>(out);
}

// Voxels [begin, end) of every channel, one at a time.
template <typename T>
void voxels_one_by_one(const T* src, int64_t src_channel_stride, int64_t channels,
                       const RowCorners& corners, const CornerWeights& w, const RowTaps& taps,
                       int64_t begin, int64_t end, float* dst, int64_t dst_channel_stride) {
  for (int64_t c = 0; c < channels; ++c) {
    const T* channel = src + c * src_channel_stride;
    float* out = dst + c * dst_channel_stride;
    for (int64_t x = begin; x < end; ++x) out[x] = voxel(channel, corners, w, taps, x);
  }
}

#if defined(__x86_64__)

// Eight consecutive voxels of a row, as floats or as int16 widened to int32.
__attribute__((target("avx2"), always_inline)) inline __m256 load8(const float* p) {
  return _mm256_loadu_ps(p);
}
__attribute__((target("avx2"), always_inline)) inline __m256i load8(const int16_t* p) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The four values of `v` at lanes `pick`, widened to doubles (exactly, from float or int32).
__attribute__((target("avx2"), always_inline)) inline __m256d picked(__m256 v, __m256i pick) {
  return _mm256_cvtps_pd(_mm256_castps256_ps128(_mm256_permutevar8x32_ps(v, pick)));
}
__attribute__((target("avx2"), always_inline)) inline __m256d picked(__m256i v, __m256i pick) {
  return _mm256_cvtepi32_pd(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, pick)));
}

// The AVX2 form of voxel(): the same multiplications and additions in the same
// order per voxel (AVX2 without FMA: nothing is fused), four voxels per instruction.
template <typename T>
__attribute__((target("avx2"))) void avx2_rows(const T* src, int64_t src_channel_stride,
                                               int64_t channels, const RowCorners& corners,
                                               const RowTaps& taps, float* dst,
                                               int64_t dst_channel_stride) {
  const CornerWeights w = row_weights(corners);
  const int64_t count = static_cast<int64_t>(taps.x0.size());
  const __m256d y0z0 = _mm256_set1_pd(w.y0z0), y0z1 = _mm256_set1_pd(w.y0z1),
                y1z0 = _mm256_set1_pd(w.y1z0), y1z1 = _mm256_set1_pd(w.y1z1);
  for (int64_t x = 0; x < count; x += kGroup) {
    const int64_t g = x / kGroup;
    if (x + kGroup > count || !taps.avx2.fits[g]) {
      voxels_one_by_one(src, src_channel_stride, channels, corners, w, taps, x,
                        std::min(count, x + kGroup), dst, dst_channel_stride);
      continue;
    }
    const __m256i pick0 = _mm256_castsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(taps.avx2.pick0.data() + x)));
    const __m256i pick1 = _mm256_castsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(taps.avx2.pick1.data() + x)));
    const __m256d wa = _mm256_loadu_pd(taps.w0.data() + x),
                  wb = _mm256_loadu_pd(taps.w1.data() + x);
    const __m256d a00 = _mm256_mul_pd(y0z0, wa), a01 = _mm256_mul_pd(y0z1, wa),
                  a10 = _mm256_mul_pd(y1z0, wa), a11 = _mm256_mul_pd(y1z1, wa);
    const __m256d b00 = _mm256_mul_pd(y0z0, wb), b01 = _mm256_mul_pd(y0z1, wb),
                  b10 = _mm256_mul_pd(y1z0, wb), b11 = _mm256_mul_pd(y1z1, wb);
    const int64_t base = taps.avx2.base[g];
    for (int64_t c = 0; c < channels; ++c) {
      const T* channel = src + c * src_channel_stride + base;
      const auto r00 = load8(channel + corners.y0z0);
      const auto r01 = load8(channel + corners.y0z1);
      const auto r10 = load8(channel + corners.y1z0);
      const auto r11 = load8(channel + corners.y1z1);
      __m256d out = _mm256_setzero_pd();
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r00, pick0), a00));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r01, pick0), a01));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r10, pick0), a10));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r11, pick0), a11));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r00, pick1), b00));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r01, pick1), b01));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r10, pick1), b10));
      out = _mm256_add_pd(out, _mm256_mul_pd(picked(r11, pick1), b11));
      _mm_storeu_ps(dst + c * dst_channel_stride + x, _mm256_cvtpd_ps(out));
    }
  }
}

// GCC 12's AVX-512 intrinsics start their unused result lanes from a self-initialised variable,
// which -Wmaybe-uninitialized reports (GCC bug 105593, fixed in 12.3).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Sixteen consecutive voxels of a row, as floats or as int16 widened to int32.
__attribute__((target("avx512f"), always_inline)) inline __m512 load16(const float* p) {
  return _mm512_loadu_ps(p);
}
__attribute__((target("avx512f"), always_inline)) inline __m512i load16(const int16_t* p) {
  return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The eight values of `v` at lanes `pick` (the low half of the index vector), widened to doubles.
__attribute__((target("avx512f"), always_inline)) inline __m512d picked_wide(__m512 v,
                                                                             __m512i pick) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(_mm512_permutexvar_ps(pick, v)));
}
__attribute__((target("avx512f"), always_inline)) inline __m512d picked_wide(__m512i v,
                                                                             __m512i pick) {
  return _mm512_cvtepi32_pd(_mm512_castsi512_si256(_mm512_permutexvar_epi32(pick, v)));
}

// avx2_rows with eight voxels per instruction. The build compiles this file without contracting
// multiplications and additions into FMAs (CMakeLists.txt), so each stays rounded on its own.
template <typename T>
__attribute__((target("avx512f"))) void avx512_rows(const T* src, int64_t src_channel_stride,
                                                    int64_t channels, const RowCorners& corners,
                                                    const RowTaps& taps, float* dst,
                                                    int64_t dst_channel_stride) {
  const CornerWeights w = row_weights(corners);
  const int64_t count = static_cast<int64_t>(taps.x0.size());
  const __m512d y0z0 = _mm512_set1_pd(w.y0z0), y0z1 = _mm512_set1_pd(w.y0z1),
                y1z0 = _mm512_set1_pd(w.y1z0), y1z1 = _mm512_set1_pd(w.y1z1);
  for (int64_t x = 0; x < count; x += kWideGroup) {
    const int64_t g = x / kWideGroup;
    if (x + kWideGroup > count || !taps.avx512.fits[g]) {
      voxels_one_by_one(src, src_channel_stride, channels, corners, w, taps, x,
                        std::min(count, x + kWideGroup), dst, dst_channel_stride);
      continue;
    }
    const __m512i pick0 = _mm512_castsi256_si512(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps.avx512.pick0.data() + x)));
    const __m512i pick1 = _mm512_castsi256_si512(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps.avx512.pick1.data() + x)));
    const __m512d wa = _mm512_loadu_pd(taps.w0.data() + x),
                  wb = _mm512_loadu_pd(taps.w1.data() + x);
    const __m512d a00 = _mm512_mul_pd(y0z0, wa), a01 = _mm512_mul_pd(y0z1, wa),
                  a10 = _mm512_mul_pd(y1z0, wa), a11 = _mm512_mul_pd(y1z1, wa);
    const __m512d b00 = _mm512_mul_pd(y0z0, wb), b01 = _mm512_mul_pd(y0z1, wb),
                  b10 = _mm512_mul_pd(y1z0, wb), b11 = _mm512_mul_pd(y1z1, wb);
    const int64_t base = taps.avx512.base[g];
    for (int64_t c = 0; c < channels; ++c) {
      const T* channel = src + c * src_channel_stride + base;
      const auto r00 = load16(channel + corners.y0z0);
      const auto r01 = load16(channel + corners.y0z1);
      const auto r10 = load16(channel + corners.y1z0);
      const auto r11 = load16(channel + corners.y1z1);
      __m512d out = _mm512_setzero_pd();
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r00, pick0), a00));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r01, pick0), a01));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r10, pick0), a10));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r11, pick0), a11));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r00, pick1), b00));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r01, pick1), b01));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r10, pick1), b10));
      out = _mm512_add_pd(out, _mm512_mul_pd(picked_wide(r11, pick1), b11));
      _mm256_storeu_ps(dst + c * dst_channel_stride + x, _mm512_cvtpd_ps(out));
    }
  }
}

#pragma GCC diagnostic pop

#endif

// The groups of `width` voxels one load of `span` floats serves.
VectorGroups vector_groups(const int64_t* x0, const int64_t* x1, int64_t count, int64_t row_length,
                           int64_t width, int64_t span) {
  VectorGroups groups;
  const int64_t group_count = (count + width - 1) / width;
  groups.fits.assign(static_cast<size_t>(group_count), 0);
  groups.base.assign(static_cast<size_t>(group_count), 0);
  groups.pick0.assign(static_cast<size_t>(group_count * width), 0);
  groups.pick1.assign(static_cast<size_t>(group_count * width), 0);
  for (int64_t g = 0; g * width + width <= count; ++g) {
    const int64_t first = g * width;
    int64_t low = x0[first], high = x0[first];
    for (int64_t v = first; v < first + width; ++v) {
      low = std::min({low, x0[v], x1[v]});
      high = std::max({high, x0[v], x1[v]});
    }
    // The floats start at the group's lowest tap, or end at the row's end when they would run
    // past it (the row's last group).
    const int64_t base = std::min(low, row_length - span);
    if (low < 0 || base < 0 || high - base >= span) continue;
    groups.fits[g] = 1;
    groups.base[g] = static_cast<int32_t>(base);
    for (int64_t v = first; v < first + width; ++v) {
      groups.pick0[v] = static_cast<int32_t>(x0[v] - base);
      groups.pick1[v] = static_cast<int32_t>(x1[v] - base);
    }
  }
  return groups;
}

}  // namespace

bool cpu_runs(RowKernel kernel) {
  switch (kernel) {
    case RowKernel::kPortable:
      return true;
#if defined(__x86_64__)
    case RowKernel::kAvx2:
      return __builtin_cpu_supports("avx2");
    case RowKernel::kAvx512:
      return __builtin_cpu_supports("avx512f");
#endif
    default:
      return false;
  }
}

RowKernel best_row_kernel() {
  static const RowKernel best = cpu_runs(RowKernel::kAvx512) ? RowKernel::kAvx512
                                : cpu_runs(RowKernel::kAvx2) ? RowKernel::kAvx2
                                                             : RowKernel::kPortable;
  return best;
}

RowTaps make_row_taps(const int64_t* x0, const int64_t* x1, const double* w0, const double* w1,
                      int64_t count, int64_t row_length) {
  RowTaps taps;
  taps.x0.assign(x0, x0 + count);
  taps.x1.assign(x1, x1 + count);
  taps.w0.assign(w0, w0 + count);
  taps.w1.assign(w1, w1 + count);
  taps.avx2 = vector_groups(x0, x1, count, row_length, kGroup, kSpan);
  taps.avx512 = vector_groups(x0, x1, count, row_length, kWideGroup, kWideSpan);
  return taps;
}

namespace {

// A prefetch no optimisation removes. GCC's interprocedural analysis counts __builtin_prefetch
// as no side effect: it found a helper made only of them "const" and deleted the calls to it
// (checked: the public functions compiled to a bare `ret`). An asm volatile statement stays.
inline void prefetch_line(const char* address) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*address));
#else
  __builtin_prefetch(address);
#endif
}

void prefetch_rows_of(const char* src, int64_t channel_bytes, int64_t channels,
                      const RowCorners& corners, int64_t element_bytes, int64_t row_length) {
  constexpr int64_t kLine = 64;  // bytes per cache line
  const int64_t row_bytes = row_length * element_bytes;
  for (int64_t c = 0; c < channels; ++c) {
    for (const int64_t row : {corners.y0z0, corners.y0z1, corners.y1z0, corners.y1z1}) {
      const char* first = src + c * channel_bytes + row * element_bytes;
      for (int64_t b = 0; b < row_bytes; b += kLine) prefetch_line(first + b);
      prefetch_line(first + row_bytes - 1);  // the last line, when the row is not aligned
    }
  }
}

template <typename T>
void rows_with(const T* src, int64_t src_channel_stride, int64_t channels,
               const RowCorners& corners, const RowTaps& taps, float* dst,
               int64_t dst_channel_stride, RowKernel kernel) {
#if defined(__x86_64__)
  if (kernel == RowKernel::kAvx512) {
    avx512_rows(src, src_channel_stride, channels, corners, taps, dst, dst_channel_stride);
    return;
  }
  if (kernel == RowKernel::kAvx2) {
    avx2_rows(src, src_channel_stride, channels, corners, taps, dst, dst_channel_stride);
    return;
  }
#endif
  voxels_one_by_one(src, src_channel_stride, channels, corners, row_weights(corners), taps, 0,
                    static_cast<int64_t>(taps.x0.size()), dst, dst_channel_stride);
}

}  // namespace

void prefetch_rows(const float* src, int64_t src_channel_stride, int64_t channels,
                   const RowCorners& corners, int64_t row_length) {
  prefetch_rows_of(reinterpret_cast<const char*>(src), src_channel_stride * 4, channels, corners, 4,
                   row_length);
}

void prefetch_rows(const int16_t* src, int64_t src_channel_stride, int64_t channels,
                   const RowCorners& corners, int64_t row_length) {
  prefetch_rows_of(reinterpret_cast<const char*>(src), src_channel_stride * 2, channels, corners, 2,
                   row_length);
}

void trilinear_rows(const float* src, int64_t src_channel_stride, int64_t channels,
                    const RowCorners& corners, const RowTaps& taps, float* dst,
                    int64_t dst_channel_stride, RowKernel kernel) {
  rows_with(src, src_channel_stride, channels, corners, taps, dst, dst_channel_stride, kernel);
}

void trilinear_rows(const int16_t* src, int64_t src_channel_stride, int64_t channels,
                    const RowCorners& corners, const RowTaps& taps, float* dst,
                    int64_t dst_channel_stride, RowKernel kernel) {
  rows_with(src, src_channel_stride, channels, corners, taps, dst, dst_channel_stride, kernel);
}

}  // namespace medseg

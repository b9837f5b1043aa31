#include "data/reorient_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace medseg {
namespace {

#if defined(__x86_64__)

constexpr int64_t kBlock = 8;  // floats per AVX2 register

// Transposes the 8x8 block in r[0..7] (r[k] = row k) in place: afterwards r[m] holds element m
// of every row.
__attribute__((target("avx2"), always_inline)) inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// One 8x8 block: elements j0 = t0 .. t0 + 7 (ascending addresses from `row0`, or descending when
// x is flipped) of the eight rows row0 + k * row_step, stored as eight runs along z at
// dst + m * dst_plane.
__attribute__((target("avx2"), always_inline)) inline void transpose_block(const float* row0,
                                                                           int64_t row_step,
                                                                           bool flipped, float* dst,
                                                                           int64_t dst_plane) {
  const __m256i reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  __m256 r[kBlock];
  for (int64_t k = 0; k < kBlock; ++k) {
    const float* row = row0 + k * row_step;
    r[k] = flipped ? _mm256_permutevar8x32_ps(_mm256_loadu_ps(row - (kBlock - 1)), reverse)
                   : _mm256_loadu_ps(row);
  }
  transpose8(r);
  for (int64_t m = 0; m < kBlock; ++m) _mm256_storeu_ps(dst + m * dst_plane, r[m]);
}

// The same for bytes, in 64-bit halves of SSE registers: the eight runs of 8 bytes along x are
// interleaved (bytes, then pairs, then quads) into eight runs along z.
__attribute__((target("avx2"), always_inline)) inline void transpose_block(
    const uint8_t* row0, int64_t row_step, bool flipped, uint8_t* dst, int64_t dst_plane) {
  const __m128i reverse = _mm_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  __m128i r[kBlock];
  for (int64_t k = 0; k < kBlock; ++k) {
    const uint8_t* row = row0 + k * row_step;
    r[k] = flipped
               ? _mm_shuffle_epi8(
                     _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row - (kBlock - 1))), reverse)
               : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row));
  }
  const __m128i a0 = _mm_unpacklo_epi8(r[0], r[1]), a1 = _mm_unpacklo_epi8(r[2], r[3]);
  const __m128i a2 = _mm_unpacklo_epi8(r[4], r[5]), a3 = _mm_unpacklo_epi8(r[6], r[7]);
  const __m128i b0 = _mm_unpacklo_epi16(a0, a1), b1 = _mm_unpackhi_epi16(a0, a1);
  const __m128i b2 = _mm_unpacklo_epi16(a2, a3), b3 = _mm_unpackhi_epi16(a2, a3);
  // Two runs along z per register: those of j0 = t0 + 2m and t0 + 2m + 1.
  const __m128i runs[4] = {_mm_unpacklo_epi32(b0, b2), _mm_unpackhi_epi32(b0, b2),
                           _mm_unpacklo_epi32(b1, b3), _mm_unpackhi_epi32(b1, b3)};
  for (int64_t m = 0; m < kBlock / 2; ++m) {
    uint8_t* out = dst + 2 * m * dst_plane;
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), runs[m]);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + dst_plane),
                     _mm_unpackhi_epi64(runs[m], runs[m]));
  }
}

// transpose_x_rows_to_z_runs in 8x8 blocks, element by element at the x and z edges.
template <typename T>
__attribute__((target("avx2"))) void avx2_transpose(const T* src, const std::array<int64_t, 3>& n,
                                                    const std::array<int64_t, 3>& step, T* dst,
                                                    int64_t dst_row, int64_t dst_plane) {
  const bool flipped = step[0] < 0;
  const int64_t whole0 = n[0] - n[0] % kBlock, whole2 = n[2] - n[2] % kBlock;
  for (int64_t j1 = 0; j1 < n[1]; ++j1) {
    const T* plane = src + j1 * step[1];
    for (int64_t t2 = 0; t2 < whole2; t2 += kBlock) {
      for (int64_t t0 = 0; t0 < whole0; t0 += kBlock) {
        transpose_block(plane + t2 * step[2] + (flipped ? -t0 : t0), step[2], flipped,
                        dst + t0 * dst_plane + j1 * dst_row + t2, dst_plane);
      }
      for (int64_t j0 = whole0; j0 < n[0]; ++j0) {  // the x edge
        for (int64_t j2 = t2; j2 < t2 + kBlock; ++j2) {
          dst[j0 * dst_plane + j1 * dst_row + j2] = plane[j0 * step[0] + j2 * step[2]];
        }
      }
    }
    for (int64_t j0 = 0; j0 < n[0]; ++j0) {  // the z edge
      for (int64_t j2 = whole2; j2 < n[2]; ++j2) {
        dst[j0 * dst_plane + j1 * dst_row + j2] = plane[j0 * step[0] + j2 * step[2]];
      }
    }
  }
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");

#endif

// transpose_x_rows_to_z_runs for floats or bytes: its defaults, and whether it runs here.
template <typename T>
bool blocked_transpose([[maybe_unused]] const T* src,
                       [[maybe_unused]] const std::array<int64_t, 3>& n,
                       [[maybe_unused]] const std::array<int64_t, 3>& step, [[maybe_unused]] T* dst,
                       [[maybe_unused]] int64_t dst_row, [[maybe_unused]] int64_t dst_plane) {
#if defined(__x86_64__)
  if (kHaveAvx2 && (step[0] == 1 || step[0] == -1)) {
    const int64_t row = dst_row > 0 ? dst_row : n[2];
    avx2_transpose(src, n, step, dst, row, dst_plane > 0 ? dst_plane : n[1] * row);
    return true;
  }
#endif
  return false;
}

}  // namespace

bool have_blocked_transpose() {
#if defined(__x86_64__)
  return kHaveAvx2;
#else
  return false;
#endif
}

bool transpose_x_rows_to_z_runs(const float* src, const std::array<int64_t, 3>& n,
                                const std::array<int64_t, 3>& step, float* dst, int64_t dst_row,
                                int64_t dst_plane) {
  return blocked_transpose(src, n, step, dst, dst_row, dst_plane);
}

bool transpose_x_rows_to_z_runs(const uint8_t* src, const std::array<int64_t, 3>& n,
                                const std::array<int64_t, 3>& step, uint8_t* dst, int64_t dst_row,
                                int64_t dst_plane) {
  return blocked_transpose(src, n, step, dst, dst_row, dst_plane);
}

}  // namespace medseg

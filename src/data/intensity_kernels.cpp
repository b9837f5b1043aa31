#include "data/intensity_kernels.h"

#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace medseg {
namespace {

constexpr int kLanes = 8;  // independent partial sums: no chain of dependent additions

double add_lanes(const double (&lanes)[kLanes]) {
  double total = 0.0;
  for (int k = 0; k < kLanes; ++k) total += lanes[k];
  return total;
}

}  // namespace

int64_t first_non_finite_portable(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(v[i])) return i;
  }
  return -1;
}

bool all_zero_portable(const float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] != 0.0f) return false;
  }
  return true;
}

NonzeroSum nonzero_sum_portable(const float* v, int64_t n) {
  double sums[kLanes] = {};
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    sums[i % kLanes] += v[i] != 0.0f ? static_cast<double>(v[i]) : 0.0;
    count += v[i] != 0.0f;
  }
  return {add_lanes(sums), count};
}

double nonzero_squared_deviations_portable(const float* v, int64_t n, double mean) {
  double squares[kLanes] = {};
  for (int64_t i = 0; i < n; ++i) {
    const double d = v[i] != 0.0f ? static_cast<double>(v[i]) - mean : 0.0;
    squares[i % kLanes] += d * d;
  }
  return add_lanes(squares);
}

void normalize_nonzero_portable(float* v, int64_t n, float mean, float std_dev) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] != 0.0f ? (v[i] - mean) / std_dev : v[i];
}

#if defined(__x86_64__)
namespace {

// Lanes 0-3 and 4-7 of 8 floats, widened, with the zeros (and only them) as 0.0.
struct WideNonzero {
  __m256d low, high;
};

__attribute__((target("avx2"), always_inline)) inline WideNonzero widen_nonzero(__m256 x) {
  const __m256 nonzero = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ);
  const __m256 kept = _mm256_and_ps(x, nonzero);
  return {_mm256_cvtps_pd(_mm256_castps256_ps128(kept)),
          _mm256_cvtps_pd(_mm256_extractf128_ps(kept, 1))};
}

// 32 values per step: a value is NaN or infinite when its exponent bits are all ones. The block
// that holds one is searched again one value at a time.
__attribute__((target("avx2"))) int64_t avx2_first_non_finite(const float* v, int64_t n) {
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  constexpr int64_t kBlock = 32;
  const int64_t whole = n - n % kBlock;
  for (int64_t i = 0; i < whole; i += kBlock) {
    __m256i all_ones = _mm256_setzero_si256();
    for (int64_t k = 0; k < kBlock; k += kLanes) {
      const __m256i bits = _mm256_and_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + i + k)), exponent);
      all_ones = _mm256_or_si256(all_ones, _mm256_cmpeq_epi32(bits, exponent));
    }
    if (!_mm256_testz_si256(all_ones, all_ones))
      return i + first_non_finite_portable(v + i, kBlock);
  }
  const int64_t in_tail = first_non_finite_portable(v + whole, n - whole);
  return in_tail < 0 ? -1 : whole + in_tail;
}

// 32 values per step; NaN is not zero (an unordered comparison).
__attribute__((target("avx2"))) bool avx2_all_zero(const float* v, int64_t n) {
  constexpr int64_t kBlock = 32;
  const int64_t whole = n - n % kBlock;
  for (int64_t i = 0; i < whole; i += kBlock) {
    __m256 nonzero = _mm256_setzero_ps();
    for (int64_t k = 0; k < kBlock; k += kLanes) {
      nonzero = _mm256_or_ps(
          nonzero, _mm256_cmp_ps(_mm256_loadu_ps(v + i + k), _mm256_setzero_ps(), _CMP_NEQ_UQ));
    }
    if (_mm256_movemask_ps(nonzero) != 0) return false;
  }
  return all_zero_portable(v + whole, n - whole);
}

__attribute__((target("avx2"))) NonzeroSum avx2_nonzero_sum(const float* v, int64_t n) {
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  int64_t count = 0;
  const int64_t whole = n - n % kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const WideNonzero w = widen_nonzero(x);
    low = _mm256_add_pd(low, w.low);
    high = _mm256_add_pd(high, w.high);
    count += __builtin_popcount(static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ))));
  }
  double sums[kLanes];
  _mm256_storeu_pd(sums, low);
  _mm256_storeu_pd(sums + 4, high);
  for (int64_t i = whole; i < n; ++i) {
    sums[i % kLanes] += v[i] != 0.0f ? static_cast<double>(v[i]) : 0.0;
    count += v[i] != 0.0f;
  }
  return {add_lanes(sums), count};
}

__attribute__((target("avx2"))) double avx2_squared_deviations(const float* v, int64_t n,
                                                               double mean) {
  __m256d low = _mm256_setzero_pd(), high = _mm256_setzero_pd();
  const __m256d m = _mm256_set1_pd(mean);
  const int64_t whole = n - n % kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m256 nonzero = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    // d = x - mean where x is nonzero, else 0: the mask is widened with the values.
    const __m256d mask_low = _mm256_castsi256_pd(
        _mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_castps256_ps128(nonzero))));
    const __m256d mask_high = _mm256_castsi256_pd(
        _mm256_cvtepi32_epi64(_mm_castps_si128(_mm256_extractf128_ps(nonzero, 1))));
    const __m256d d_low =
        _mm256_and_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), m), mask_low);
    const __m256d d_high =
        _mm256_and_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), m), mask_high);
    low = _mm256_add_pd(low, _mm256_mul_pd(d_low, d_low));
    high = _mm256_add_pd(high, _mm256_mul_pd(d_high, d_high));
  }
  double squares[kLanes];
  _mm256_storeu_pd(squares, low);
  _mm256_storeu_pd(squares + 4, high);
  for (int64_t i = whole; i < n; ++i) {
    const double d = v[i] != 0.0f ? static_cast<double>(v[i]) - mean : 0.0;
    squares[i % kLanes] += d * d;
  }
  return add_lanes(squares);
}

__attribute__((target("avx2"))) void avx2_normalize(float* v, int64_t n, float mean,
                                                    float std_dev) {
  const __m256 m = _mm256_set1_ps(mean), s = _mm256_set1_ps(std_dev);
  const int64_t whole = n - n % kLanes;
  for (int64_t i = 0; i < whole; i += kLanes) {
    const __m256 x = _mm256_loadu_ps(v + i);
    const __m256 nonzero = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NEQ_UQ);
    const __m256 scaled = _mm256_div_ps(_mm256_sub_ps(x, m), s);
    _mm256_storeu_ps(v + i, _mm256_blendv_ps(x, scaled, nonzero));
  }
  normalize_nonzero_portable(v + whole, n - whole, mean, std_dev);
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");

}  // namespace
#endif

int64_t first_non_finite(const float* v, int64_t n) {
#if defined(__x86_64__)
  if (kHaveAvx2) return avx2_first_non_finite(v, n);
#endif
  return first_non_finite_portable(v, n);
}

bool all_zero(const float* v, int64_t n) {
#if defined(__x86_64__)
  if (kHaveAvx2) return avx2_all_zero(v, n);
#endif
  return all_zero_portable(v, n);
}

NonzeroSum nonzero_sum(const float* v, int64_t n) {
#if defined(__x86_64__)
  if (kHaveAvx2) return avx2_nonzero_sum(v, n);
#endif
  return nonzero_sum_portable(v, n);
}

double nonzero_squared_deviations(const float* v, int64_t n, double mean) {
#if defined(__x86_64__)
  if (kHaveAvx2) return avx2_squared_deviations(v, n, mean);
#endif
  return nonzero_squared_deviations_portable(v, n, mean);
}

void normalize_nonzero(float* v, int64_t n, float mean, float std_dev) {
#if defined(__x86_64__)
  if (kHaveAvx2) {
    avx2_normalize(v, n, mean, std_dev);
    return;
  }
#endif
  normalize_nonzero_portable(v, n, mean, std_dev);
}

}  // namespace medseg

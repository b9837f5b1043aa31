// NormalizeIntensity's loops: the AVX2 path equals the portable one bit for bit, and both give
// the mean, the deviations and the normalised voxels of the nonzero voxels.
#include "data/intensity_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace medseg {
namespace {

// `n` intensities, about a third of them zero (-0.0 among them), the rest spread over a wide
// range so that float64 sums round.
std::vector<float> intensities(int64_t n, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(-3000.0f, 9000.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t kind = random() % 6;
    v[i] = kind == 0 ? 0.0f : kind == 1 ? -0.0f : value(random) * (kind == 2 ? 1e-3f : 1.0f);
  }
  return v;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(IntensityKernelsTest, VectorAndPortableSumsAreTheSameBits) {
  for (const int64_t n : {0, 1, 7, 8, 9, 63, 1000, 100003}) {
    const std::vector<float> v = intensities(n, static_cast<uint32_t>(n) + 1);
    const NonzeroSum fast = nonzero_sum(v.data(), n);
    const NonzeroSum portable = nonzero_sum_portable(v.data(), n);
    EXPECT_TRUE(same_bits(fast.sum, portable.sum))
        << n << ": " << fast.sum << " vs " << portable.sum;
    EXPECT_EQ(fast.count, portable.count) << n;
    const double mean = n > 0 ? portable.sum / static_cast<double>(portable.count) : 0.0;
    EXPECT_TRUE(same_bits(nonzero_squared_deviations(v.data(), n, mean),
                          nonzero_squared_deviations_portable(v.data(), n, mean)))
        << n;
  }
}

TEST(IntensityKernelsTest, SumsCountAndDeviationsAreThoseOfTheNonzeroVoxels) {
  const std::vector<float> v = intensities(10007, 7);
  double sum = 0.0, squares = 0.0;
  int64_t count = 0;
  for (const float x : v) {
    if (x == 0.0f) continue;
    sum += x;
    ++count;
  }
  const double mean = sum / static_cast<double>(count);
  for (const float x : v) {
    if (x != 0.0f) squares += (x - mean) * (x - mean);
  }
  const NonzeroSum got = nonzero_sum(v.data(), static_cast<int64_t>(v.size()));
  EXPECT_EQ(got.count, count);
  EXPECT_NEAR(got.sum, sum, 1e-9 * std::fabs(sum));
  EXPECT_NEAR(nonzero_squared_deviations(v.data(), static_cast<int64_t>(v.size()), mean), squares,
              1e-9 * squares);
}

TEST(IntensityKernelsTest, NormalisesTheNonzeroVoxelsAndKeepsTheZeros) {
  for (const int64_t n : {5, 8, 29, 4099}) {
    std::vector<float> fast = intensities(n, 99);
    std::vector<float> portable = fast;
    const std::vector<float> before = fast;
    normalize_nonzero(fast.data(), n, 812.5f, 1303.25f);
    normalize_nonzero_portable(portable.data(), n, 812.5f, 1303.25f);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(&fast[i], &portable[i], 4), 0) << i << " of " << n;
      if (before[i] == 0.0f) {
        EXPECT_EQ(std::signbit(fast[i]), std::signbit(before[i])) << i;  // -0.0 stays -0.0
        EXPECT_EQ(fast[i], 0.0f) << i;
      } else {
        EXPECT_FLOAT_EQ(fast[i], (before[i] - 812.5f) / 1303.25f) << i;
      }
    }
  }
}

TEST(IntensityKernelsTest, FindsTheFirstNonFiniteValueAndAnyNonzeroValueWhereverItSits) {
  for (const int64_t n : {1, 31, 32, 33, 1000}) {
    std::vector<float> v(static_cast<size_t>(n), 0.0f);
    v[0] = -0.0f;
    EXPECT_TRUE(all_zero(v.data(), n)) << n;
    EXPECT_EQ(first_non_finite(v.data(), n), -1) << n;
    for (const int64_t at : {int64_t{0}, n / 3, n - 1}) {
      for (const float odd : {1e-45f, -3.0f, std::nanf(""), INFINITY, -INFINITY}) {
        std::vector<float> w = v;
        w[static_cast<size_t>(at)] = odd;
        EXPECT_FALSE(all_zero(w.data(), n)) << odd << " at " << at << " of " << n;
        EXPECT_EQ(all_zero(w.data(), n), all_zero_portable(w.data(), n));
        const int64_t expected = std::isfinite(odd) ? -1 : at;
        EXPECT_EQ(first_non_finite(w.data(), n), expected) << odd << " at " << at << " of " << n;
        w[static_cast<size_t>(n - 1)] = std::nanf("");  // a later one does not hide the first
        EXPECT_EQ(first_non_finite(w.data(), n), std::isfinite(odd) ? n - 1 : at);
      }
    }
  }
}

}  // namespace
}  // namespace medseg

// The trilinear row kernels: the AVX2 and AVX-512 paths equal the portable one bit for bit, and
// they interpolate.
#include "data/resample_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

namespace medseg {
namespace {

// A volume of `channels` x nz x ny x nx floats (x fastest) and the taps of `count` output
// voxels at x = origin + step * i, clamped as grid_sample's border.
struct RowCase {
  int64_t nx = 0, ny = 0, nz = 0, channels = 0;
  std::vector<float> volume;
  RowTaps taps;
  RowCorners corners{};
};

RowCase make_row_case(int64_t nx, int64_t count, double origin, double step, uint32_t seed) {
  RowCase s;
  s.nx = nx;
  s.ny = 5;
  s.nz = 4;
  s.channels = 3;
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> value(-1000.0f, 1000.0f);
  s.volume.resize(static_cast<size_t>(s.channels * s.nz * s.ny * s.nx));
  for (float& v : s.volume) v = value(random);
  std::vector<int64_t> x0, x1;
  std::vector<double> w0, w1;
  for (int64_t i = 0; i < count; ++i) {
    const double coord = std::min(static_cast<double>(nx - 1), std::max(0.0, origin + step * i));
    const double floor_coord = std::floor(coord);
    x0.push_back(static_cast<int64_t>(floor_coord));
    x1.push_back(std::min<int64_t>(x0.back() + 1, nx - 1));
    w0.push_back(floor_coord + 1.0 - coord);
    w1.push_back(coord - floor_coord);
  }
  s.taps = make_row_taps(x0.data(), x1.data(), w0.data(), w1.data(), count, nx);
  const int64_t sy = nx, sz = nx * s.ny;
  s.corners = {
      1 * sy + 2 * sz, 1 * sy + 3 * sz, 2 * sy + 2 * sz, 2 * sy + 3 * sz, 0.3, 0.7, 0.55, 0.45};
  return s;
}

std::vector<float> run(const RowCase& s, RowKernel kernel) {
  const int64_t count = static_cast<int64_t>(s.taps.x0.size());
  std::vector<float> out(static_cast<size_t>(s.channels * count), -1.0f);
  const int64_t channel = s.nx * s.ny * s.nz;
  trilinear_rows(s.volume.data(), channel, s.channels, s.corners, s.taps, out.data(), count,
                 kernel);
  return out;
}

int64_t fitting_groups(const VectorGroups& groups) {
  return std::count(groups.fits.begin(), groups.fits.end(), 1);
}

TEST(ResampleRowsTest, EveryPathGivesTheSameBitsForDownUpAndOddSampling) {
  struct Geometry {
    int64_t nx, count;
    double origin, step;
  } geometries[] = {
      {240, 160, 0.25, 1.5},  // 1 mm -> 1.5 mm, the BraTS case
      {155, 78, 0.5, 2.0},    // 1 mm -> 2 mm
      {64, 150, -3.0, 0.43},  // upsampling, clamped at both ends
      {100, 27, 1.0, 3.7},    // taps too far apart for one load: portable groups
      {9, 13, 0.0, 0.66},     // a row shorter than the 8 floats one load reads
      {240, 161, 0.1, 1.49},  // a tail of one voxel
      {20, 40, 0.2, 0.45},    // a row shorter than the 16 floats one AVX-512 load reads
  };
  std::vector<RowKernel> kernels;
  for (const RowKernel kernel : {RowKernel::kAvx2, RowKernel::kAvx512}) {
    if (cpu_runs(kernel)) kernels.push_back(kernel);
  }
  if (kernels.size() < 2) {
    std::fprintf(stderr, "NOTE: this CPU runs %zu of the 2 vector kernels; only those are tested\n",
                 kernels.size());
  }
  uint32_t seed = 1;
  for (const Geometry& g : geometries) {
    const RowCase s = make_row_case(g.nx, g.count, g.origin, g.step, seed++);
    const int64_t narrow = fitting_groups(s.taps.avx2), wide = fitting_groups(s.taps.avx512);
    if (g.step <= 2.0 && g.nx >= 16) EXPECT_GT(narrow, 0) << "step " << g.step;
    if (g.step <= 2.0 && g.nx >= 24) EXPECT_GT(wide, 0) << "step " << g.step;
    if (g.step > 3.0 || g.nx < 8) EXPECT_EQ(narrow, 0) << "step " << g.step;
    if (g.step > 3.0 || g.nx < 16) EXPECT_EQ(wide, 0) << "step " << g.step;
    // 1.5 mm: every group, the last one too (its load ends at the row's end).
    if (g.step == 1.5) {
      EXPECT_EQ(narrow, g.count / 4);
      EXPECT_EQ(wide, g.count / 8);
    }
    const std::vector<float> portable = run(s, RowKernel::kPortable);
    for (const RowKernel kernel : kernels) {
      const std::vector<float> fast = run(s, kernel);
      ASSERT_EQ(fast.size(), portable.size());
      EXPECT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * sizeof(float)), 0)
          << "kernel " << static_cast<int>(kernel) << ", nx " << g.nx << ", " << g.count
          << " voxels, step " << g.step;
    }
  }
}

// An int16 image is resampled from its int16 voxels as it would be from the same values as floats,
// bit for bit, by every kernel.
TEST(ResampleRowsTest, Int16VoxelsGiveTheBitsOfTheSameValuesAsFloats) {
  for (const auto& [nx, count, origin, step] :
       {std::tuple<int64_t, int64_t, double, double>{240, 160, 0.25, 1.5},
        {155, 78, 0.5, 2.0},
        {64, 150, -3.0, 0.43},
        {20, 40, 0.2, 0.45},
        {9, 13, 0.0, 0.66}}) {
    RowCase s = make_row_case(nx, count, origin, step, 5);
    std::vector<int16_t> raw(s.volume.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      raw[i] = static_cast<int16_t>(static_cast<int64_t>(i * 7919) % 65536 - 32768);
      s.volume[i] = static_cast<float>(raw[i]);
    }
    const int64_t channel = s.nx * s.ny * s.nz;
    for (const RowKernel kernel : {RowKernel::kPortable, RowKernel::kAvx2, RowKernel::kAvx512}) {
      if (!cpu_runs(kernel)) continue;
      const std::vector<float> from_floats = run(s, kernel);
      std::vector<float> from_int16(from_floats.size(), -1.0f);
      trilinear_rows(raw.data(), channel, s.channels, s.corners, s.taps, from_int16.data(), count,
                     kernel);
      EXPECT_EQ(std::memcmp(from_int16.data(), from_floats.data(), from_floats.size() * 4), 0)
          << "kernel " << static_cast<int>(kernel) << ", nx " << nx << ", step " << step;
    }
  }
}

TEST(ResampleRowsTest, InterpolatesTheEightCornersWithTheirWeights) {
  const RowCase s = make_row_case(50, 33, 0.2, 1.3, 7);
  const std::vector<float> out = run(s, best_row_kernel());
  const int64_t count = static_cast<int64_t>(s.taps.x0.size());
  const int64_t channel = s.nx * s.ny * s.nz;
  const RowCorners& c = s.corners;
  for (int64_t ch = 0; ch < s.channels; ++ch) {
    const float* v = s.volume.data() + ch * channel;
    for (int64_t x = 0; x < count; ++x) {
      const int64_t a = s.taps.x0[x], b = s.taps.x1[x];
      const double wa = s.taps.w0[x], wb = s.taps.w1[x];
      const double expected = c.wy0 * (c.wz0 * (wa * v[c.y0z0 + a] + wb * v[c.y0z0 + b]) +
                                       c.wz1 * (wa * v[c.y0z1 + a] + wb * v[c.y0z1 + b])) +
                              c.wy1 * (c.wz0 * (wa * v[c.y1z0 + a] + wb * v[c.y1z0 + b]) +
                                       c.wz1 * (wa * v[c.y1z1 + a] + wb * v[c.y1z1 + b]));
      EXPECT_NEAR(out[ch * count + x], expected, 1e-3) << "channel " << ch << ", x " << x;
    }
  }
}

}  // namespace
}  // namespace medseg

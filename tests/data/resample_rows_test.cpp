// The trilinear row kernels: the AVX2 path equals the portable one bit for bit, and both
// interpolate.
#include "data/resample_rows.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
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

std::vector<float> run(const RowCase& s, bool portable) {
  const int64_t count = static_cast<int64_t>(s.taps.x0.size());
  std::vector<float> out(static_cast<size_t>(s.channels * count), -1.0f);
  const int64_t channel = s.nx * s.ny * s.nz;
  if (portable) {
    trilinear_rows_portable(s.volume.data(), channel, s.channels, s.corners, s.taps, out.data(),
                            count);
  } else {
    trilinear_rows(s.volume.data(), channel, s.channels, s.corners, s.taps, out.data(), count);
  }
  return out;
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
  };
  uint32_t seed = 1;
  for (const Geometry& g : geometries) {
    const RowCase s = make_row_case(g.nx, g.count, g.origin, g.step, seed++);
    const auto vector_groups =
        std::count(s.taps.vector_group.begin(), s.taps.vector_group.end(), 1);
    if (g.step <= 2.0 && g.nx >= 16) EXPECT_GT(vector_groups, 0) << "step " << g.step;
    if (g.step > 3.0 || g.nx < 8) EXPECT_EQ(vector_groups, 0) << "step " << g.step;
    // 1.5 mm: every group, the last one too (its load ends at the row's end).
    if (g.step == 1.5) EXPECT_EQ(vector_groups, g.count / 4);
    const std::vector<float> fast = run(s, false), portable = run(s, true);
    ASSERT_EQ(fast.size(), portable.size());
    EXPECT_EQ(std::memcmp(fast.data(), portable.data(), fast.size() * sizeof(float)), 0)
        << "nx " << g.nx << ", " << g.count << " voxels, step " << g.step;
  }
}

TEST(ResampleRowsTest, InterpolatesTheEightCornersWithTheirWeights) {
  const RowCase s = make_row_case(50, 33, 0.2, 1.3, 7);
  const std::vector<float> out = run(s, false);
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

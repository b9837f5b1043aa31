// Orientation's blocked transpose equals the element-by-element one, for every flip and for
// sizes that are not multiples of its block.
#include "data/reorient_kernels.h"

#include <gtest/gtest.h>

#include <array>
#include <type_traits>
#include <vector>

namespace medseg {
namespace {

// T: float (images) or uint8_t (labels). Returns false when the CPU has no blocked transpose.
template <typename T>
bool equals_the_elementwise_transpose_for_every_flip_and_edge() {
  // Input in NIfTI order: x fastest, then y, then z.
  const std::array<int64_t, 3> in{21, 6, 13};
  std::vector<T> volume(static_cast<size_t>(in[0] * in[1] * in[2]));
  for (size_t i = 0; i < volume.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      volume[i] = static_cast<float>(i) * 0.5f - 7.0f;
    } else {
      volume[i] = static_cast<T>(i * 7 % 251);
    }
  }
  const std::array<int64_t, 3> stride{1, in[0], in[0] * in[1]};
  int checked = 0;
  for (int flips = 0; flips < 8; ++flips) {
    for (bool swap_yz : {false, true}) {
      // Output axes (x, y, z) or (x, z, y), each maybe flipped.
      const std::array<int, 3> source_axis{0, swap_yz ? 2 : 1, swap_yz ? 1 : 2};
      std::array<int64_t, 3> n{}, step{};
      int64_t origin = 0;
      for (int a = 0; a < 3; ++a) {
        const int axis = source_axis[a];
        n[a] = in[axis];
        const bool flip = (flips >> a) & 1;
        step[a] = flip ? -stride[axis] : stride[axis];
        if (flip) origin += (in[axis] - 1) * stride[axis];
      }
      std::vector<T> expected(volume.size()), actual(volume.size(), static_cast<T>(255));
      for (int64_t j0 = 0; j0 < n[0]; ++j0) {
        for (int64_t j1 = 0; j1 < n[1]; ++j1) {
          for (int64_t j2 = 0; j2 < n[2]; ++j2) {
            expected[(j0 * n[1] + j1) * n[2] + j2] =
                volume[origin + j0 * step[0] + j1 * step[1] + j2 * step[2]];
          }
        }
      }
      if (!transpose_x_rows_to_z_runs(volume.data() + origin, n, step, actual.data())) {
        return false;
      }
      EXPECT_EQ(actual, expected) << "flips " << flips << (swap_yz ? ", y and z swapped" : "");
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16);
  // A step along x other than +-1 is not this kernel's case.
  std::vector<T> out(volume.size());
  EXPECT_FALSE(transpose_x_rows_to_z_runs(volume.data(), {in[1], in[0], in[2]},
                                          {in[0], 1, in[0] * in[1]}, out.data()));
  return true;
}

TEST(ReorientKernelsTest, EqualsTheElementwiseTransposeForEveryFlipAndEdge) {
  if (!equals_the_elementwise_transpose_for_every_flip_and_edge<float>()) {
    GTEST_SKIP() << "this CPU has no AVX2: the blocked transpose is not used here";
  }
}

TEST(ReorientKernelsTest, BytesEqualTheElementwiseTransposeForEveryFlipAndEdge) {
  if (!equals_the_elementwise_transpose_for_every_flip_and_edge<uint8_t>()) {
    GTEST_SKIP() << "this CPU has no AVX2: the blocked transpose is not used here";
  }
}

// A slab of z-planes written into its place in a larger volume: the runs along z are dst_row
// long, and nothing outside the slab's runs is touched.
TEST(ReorientKernelsTest, ASlabLandsInItsPlaceOfALargerVolume) {
  const std::array<int64_t, 3> in{19, 5, 11};  // the slab: 11 planes
  const int64_t row = 30, first = 7;           // the volume's z length; the slab starts at z = 7
  std::vector<float> slab(static_cast<size_t>(in[0] * in[1] * in[2]));
  for (size_t i = 0; i < slab.size(); ++i) slab[i] = static_cast<float>(i) + 0.25f;
  std::vector<float> volume(static_cast<size_t>(in[0] * in[1] * row), -1.0f);
  if (!transpose_x_rows_to_z_runs(slab.data(), in, {1, in[0], in[0] * in[1]}, volume.data() + first,
                                  row)) {
    GTEST_SKIP() << "this CPU has no AVX2: the blocked transpose is not used here";
  }
  EXPECT_TRUE(have_blocked_transpose());
  for (int64_t x = 0; x < in[0]; ++x) {
    for (int64_t y = 0; y < in[1]; ++y) {
      for (int64_t z = 0; z < row; ++z) {
        const float expected =
            z >= first && z < first + in[2] ? slab[((z - first) * in[1] + y) * in[0] + x] : -1.0f;
        ASSERT_EQ(volume[(x * in[1] + y) * row + z], expected) << x << " " << y << " " << z;
      }
    }
  }
}

// A slab of y-rows (all of z) written into its place: each x's runs are dst_plane apart, and
// nothing outside the slab's rows is touched.
TEST(ReorientKernelsTest, ARowSlabLandsInItsPlaceOfALargerVolume) {
  const std::array<int64_t, 3> in{19, 3, 13};  // the slab: 3 rows along y of 13 planes
  const int64_t rows = 10, first = 4;          // the volume's y length; the slab starts at y = 4
  std::vector<float> slab(static_cast<size_t>(in[0] * in[1] * in[2]));
  for (size_t i = 0; i < slab.size(); ++i) slab[i] = static_cast<float>(i) + 0.5f;
  std::vector<float> volume(static_cast<size_t>(in[0] * rows * in[2]), -1.0f);
  if (!transpose_x_rows_to_z_runs(slab.data(), in, {1, in[0], in[0] * in[1]},
                                  volume.data() + first * in[2], in[2], rows * in[2])) {
    GTEST_SKIP() << "this CPU has no AVX2: the blocked transpose is not used here";
  }
  for (int64_t x = 0; x < in[0]; ++x) {
    for (int64_t y = 0; y < rows; ++y) {
      for (int64_t z = 0; z < in[2]; ++z) {
        const float expected =
            y >= first && y < first + in[1] ? slab[(z * in[1] + y - first) * in[0] + x] : -1.0f;
        ASSERT_EQ(volume[(x * rows + y) * in[2] + z], expected) << x << " " << y << " " << z;
      }
    }
  }
}

}  // namespace
}  // namespace medseg

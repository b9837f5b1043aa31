#include "data/random_transforms.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <thread>

namespace medseg {
namespace {

// A case whose voxel values encode their position: image(c, x, y, z) = 1 + c*1e6 + x*1e4 +
// y*1e2 + z, so a crop's content tells exactly where it came from.
CaseData position_coded_case(std::array<int64_t, 3> shape, int64_t channels = 2) {
  CaseData data;
  data.case_id = "coded";
  data.spatial_shape = shape;
  data.image_channels = channels;
  data.label_channels = 1;
  const int64_t voxels = shape[0] * shape[1] * shape[2];
  data.image.resize(static_cast<size_t>(channels * voxels));
  data.label.resize(static_cast<size_t>(voxels));
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t x = 0; x < shape[0]; ++x) {
      for (int64_t y = 0; y < shape[1]; ++y) {
        for (int64_t z = 0; z < shape[2]; ++z) {
          const int64_t index = ((c * shape[0] + x) * shape[1] + y) * shape[2] + z;
          data.image[index] = static_cast<float>(1 + c * 1000000 + x * 10000 + y * 100 + z);
          if (c == 0) data.label[index] = static_cast<uint8_t>((x + y + z) % 2);
        }
      }
    }
  }
  return data;
}

RandomTransformOptions no_intensity(std::array<int64_t, 3> roi) {
  RandomTransformOptions options;
  options.roi_size = roi;
  options.scale_prob = 0.0;
  options.shift_prob = 0.0;
  return options;
}

TEST(RandomTransformsTest, CropIsTheRegionAtTheDrawnStartWithFlips) {
  const CaseData data = position_coded_case({20, 18, 16});
  RandomTransformOptions options = no_intensity({8, 6, 4});
  options.flip_axes = {0, 1, 2};
  Sample sample;
  int flips_seen = 0;
  for (uint64_t index = 0; index < 40; ++index) {
    const SampleDraws draws = make_random_sample(data, options, 3, 1, index, sample);
    for (int axis = 0; axis < 3; ++axis) {
      ASSERT_GE(draws.crop_start[axis], 0);
      ASSERT_LE(draws.crop_start[axis], data.spatial_shape[axis] - options.roi_size[axis]);
      flips_seen += draws.flipped[axis];
    }
    for (int64_t c = 0; c < 2; ++c) {
      for (int64_t i = 0; i < 8; ++i) {
        for (int64_t j = 0; j < 6; ++j) {
          for (int64_t k = 0; k < 4; ++k) {
            const int64_t x = draws.crop_start[0] + (draws.flipped[0] ? 7 - i : i);
            const int64_t y = draws.crop_start[1] + (draws.flipped[1] ? 5 - j : j);
            const int64_t z = draws.crop_start[2] + (draws.flipped[2] ? 3 - k : k);
            const float expected = static_cast<float>(1 + c * 1000000 + x * 10000 + y * 100 + z);
            ASSERT_EQ(sample.image[((c * 8 + i) * 6 + j) * 4 + k], expected);
            if (c == 0) {
              ASSERT_EQ(sample.label[(i * 6 + j) * 4 + k], (x + y + z) % 2);
            }
          }
        }
      }
    }
  }
  // 40 samples x 3 axes at probability 0.5: far from never and from always.
  EXPECT_GT(flips_seen, 30);
  EXPECT_LT(flips_seen, 90);
}

TEST(RandomTransformsTest, StartsCoverTheWholeRangeUniformly) {
  const CaseData data = position_coded_case({12, 6, 5}, 1);
  const RandomTransformOptions options = no_intensity({4, 6, 5});
  Sample sample;
  std::vector<int> counts(9, 0);
  for (uint64_t index = 0; index < 900; ++index) {
    ++counts[make_random_sample(data, options, 0, 0, index, sample).crop_start[0]];
  }
  for (int start = 0; start <= 8; ++start) {
    EXPECT_GT(counts[start], 60) << start;  // 100 expected per start
    EXPECT_LT(counts[start], 140) << start;
  }
}

TEST(RandomTransformsTest, SameKeySameSampleWhateverTheThread) {
  const CaseData data = position_coded_case({20, 18, 16});
  RandomTransformOptions options;
  options.roi_size = {8, 8, 8};
  Sample here;
  make_random_sample(data, options, 11, 4, 17, here);
  Sample there;
  std::thread([&] { make_random_sample(data, options, 11, 4, 17, there); }).join();
  EXPECT_EQ(here.image, there.image);
  Sample other_epoch;
  make_random_sample(data, options, 11, 5, 17, other_epoch);
  EXPECT_NE(here.image, other_epoch.image);
}

TEST(RandomTransformsTest, ScaleThenShiftEveryVoxelIncludingZeros) {
  CaseData data = position_coded_case({8, 8, 8}, 1);
  data.image[0] = 0.0f;  // a background voxel
  RandomTransformOptions options;
  options.roi_size = {8, 8, 8};
  options.flip_axes = {};
  options.scale_prob = 1.0;
  options.shift_prob = 1.0;
  Sample sample;
  const SampleDraws draws = make_random_sample(data, options, 1, 2, 3, sample);
  ASSERT_NE(draws.scale, 0.0);
  ASSERT_NE(draws.offset, 0.0);
  EXPECT_LE(std::fabs(draws.scale), 0.1);
  EXPECT_LE(std::fabs(draws.offset), 0.1);
  for (size_t i = 0; i < sample.image.size(); ++i) {
    const float expected = static_cast<float>(data.image[i] * (1.0 + draws.scale) + draws.offset);
    ASSERT_NEAR(sample.image[i], expected, std::fabs(expected) * 1e-6f + 1e-6f);
  }
  EXPECT_NEAR(sample.image[0], draws.offset, 1e-7);  // zeros are shifted too
}

TEST(RandomTransformsTest, SmallerVolumeIsPaddedWithZerosToTheRoi) {
  const CaseData data = position_coded_case({5, 8, 8}, 1);
  RandomTransformOptions options = no_intensity({8, 8, 8});
  options.flip_axes = {};
  Sample sample;
  const SampleDraws draws = make_random_sample(data, options, 0, 0, 0, sample);
  ASSERT_EQ(sample.shape, (std::array<int64_t, 3>{8, 8, 8}));
  EXPECT_EQ(draws.crop_start[0], 0);
  // Padding (8 - 5) = 3: one plane before, two after.
  for (int64_t i = 0; i < 8; ++i) {
    const float value = sample.image[(i * 8 + 2) * 8 + 3];
    if (i == 0 || i >= 6) {
      EXPECT_EQ(value, 0.0f) << i;
    } else {
      EXPECT_EQ(value, static_cast<float>(1 + (i - 1) * 10000 + 2 * 100 + 3)) << i;
    }
  }
}

TEST(RandomTransformsTest, NormalizeOnCropUsesTheCropStatistics) {
  const CaseData data = position_coded_case({16, 16, 16}, 2);
  RandomTransformOptions options = no_intensity({8, 8, 8});
  options.normalize_crop = true;
  Sample sample;
  make_random_sample(data, options, 0, 0, 0, sample);
  for (int64_t c = 0; c < 2; ++c) {
    double sum = 0, squares = 0;
    for (int64_t i = 0; i < 512; ++i) sum += sample.image[c * 512 + i];
    for (int64_t i = 0; i < 512; ++i) {
      squares += std::pow(sample.image[c * 512 + i] - sum / 512, 2);
    }
    EXPECT_NEAR(sum / 512, 0.0, 1e-4);
    EXPECT_NEAR(std::sqrt(squares / 512), 1.0, 1e-4);  // population std
  }
}

TEST(NormalizeNonzeroTest, ZerosStayZeroAndConstantChannelsBecomeZero) {
  // channel 0: {0, 2, 4, 6} -> mean 4, population std sqrt(8/3); channel 1 constant 5.
  std::vector<float> values = {0, 2, 4, 6, 5, 5, 0, 5};
  normalize_nonzero_channelwise(values.data(), 2, 4);
  const double std_dev = std::sqrt(8.0 / 3.0);
  EXPECT_EQ(values[0], 0.0f);
  EXPECT_NEAR(values[1], -2 / std_dev, 1e-6);
  EXPECT_NEAR(values[2], 0.0, 1e-6);
  EXPECT_NEAR(values[3], 2 / std_dev, 1e-6);
  EXPECT_EQ(values[4], 0.0f);  // (5 - 5) / 1
  EXPECT_EQ(values[6], 0.0f);
}

}  // namespace
}  // namespace medseg

#include "train/device_batches.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "data/batch_loader.h"
#include "data/training_set.h"
#include "io/medseg_record.h"
#include "test_support.h"
#include "util/error.h"
#include "util/random.h"

namespace medseg {
namespace {

// Cases of two shapes (one smaller than the crop on y, so it is padded), with values that have
// zeros among them (NormalizeIntensity's nonzero mask) and stay within float16's range.
std::vector<CaseData> varied_cases(int count) {
  std::vector<CaseData> cases(static_cast<size_t>(count));
  for (int n = 0; n < count; ++n) {
    CaseData& data = cases[static_cast<size_t>(n)];
    data.case_id = "case" + std::to_string(n);
    data.spatial_shape = n % 2 == 0 ? std::array<int64_t, 3>{14, 10, 9}
                                    : std::array<int64_t, 3>{12, 13, 8};
    data.image_channels = 2;
    data.label_channels = 3;
    const int64_t voxels = data.voxels_per_channel();
    RandomStream random(7, static_cast<uint64_t>(n), 0);
    data.image.resize(static_cast<size_t>(2 * voxels));
    for (float& value : data.image) {
      value = random.bernoulli(0.2) ? 0.0f : static_cast<float>(random.uniform(-3.0, 5.0));
    }
    data.label.resize(static_cast<size_t>(3 * voxels));
    for (uint8_t& value : data.label) value = random.bernoulli(0.3) ? 1 : 0;
  }
  return cases;
}

BatchLoaderOptions loader_options() {
  BatchLoaderOptions options;
  options.transforms.roi_size = {8, 12, 8};
  options.transforms.flip_axes = {0, 1, 2};
  options.batch_size = 3;
  options.seed = 11;
  options.num_workers = 2;
  options.prefetch_batches = 2;
  return options;
}

std::vector<DeviceBatch> whole_epoch(DeviceBatches& source, uint64_t epoch, int64_t steps,
                                     int64_t first_step = 0) {
  source.start_epoch(epoch, steps, first_step);
  std::vector<DeviceBatch> batches;
  DeviceBatch batch;
  while (source.next(batch)) {
    // Host batches view buffers that the next call reuses: keep copies.
    batch.image = batch.image.to(at::kCPU).clone();
    batch.label = batch.label.to(at::kCPU).clone();
    batches.push_back(batch);
  }
  return batches;
}

// The device cache's batches are the loader's: same crops, flips, padding and intensity changes,
// for float32 and float16 images, for every rank, and from a resume point. Exact, except that
// NormalizeIntensity on the crop may differ in the statistics' last float bit.
TEST(DeviceCacheTest, GivesTheLoadersBatches) {
  for (const ImageDType dtype : {ImageDType::kFloat32, ImageDType::kFloat16}) {
    SCOPED_TRACE(image_dtype_name(dtype));
    testing::TempDir dir;
    write_record_file(dir.file("cases.medrec"), varied_cases(5), RecordWriterOptions{dtype});
    auto reader = std::make_shared<const MappedRecordReader>(dir.file("cases.medrec"));
    const TrainingSet cases(reader, {0, 1, 2, 3, 4});
    for (const bool normalize_crop : {false, true}) {
      for (const int rank : {0, 1}) {
        SCOPED_TRACE(::testing::Message()
                     << "normalize_crop " << normalize_crop << " rank " << rank);
        BatchLoaderOptions options = loader_options();
        options.transforms.normalize_crop = normalize_crop;
        options.rank = rank;
        options.world_size = 2;
        BatchLoader loader(&cases, options);
        const std::unique_ptr<DeviceBatches> host = make_host_batches(loader, at::kCPU);
        const std::unique_ptr<DeviceBatches> cache =
            make_device_cache(cases, options, at::kCPU);
        for (const int64_t first_step : {0, 3}) {
          const std::vector<DeviceBatch> a = whole_epoch(*host, 2, 5, first_step);
          const std::vector<DeviceBatch> b = whole_epoch(*cache, 2, 5, first_step);
          ASSERT_EQ(a.size(), static_cast<size_t>(5 - first_step));
          ASSERT_EQ(b.size(), a.size());
          for (size_t i = 0; i < a.size(); ++i) {
            EXPECT_EQ(b[i].step, a[i].step);
            EXPECT_EQ(b[i].batch_size, 3);
            ASSERT_EQ(b[i].image.sizes(), (std::vector<int64_t>{3, 2, 8, 12, 8}));
            EXPECT_TRUE(at::equal(b[i].label, a[i].label)) << "step " << a[i].step;
            if (normalize_crop) {
              EXPECT_TRUE(at::allclose(b[i].image, a[i].image, 1e-6, 1e-6)) << a[i].step;
            } else {
              EXPECT_TRUE(at::equal(b[i].image, a[i].image)) << "step " << a[i].step;
            }
          }
        }
      }
    }
  }
}

TEST(DeviceCacheTest, HoldsEveryCasePaddedToTheCrop) {
  const TrainingSet cases(varied_cases(4));
  const std::array<int64_t, 3> roi = {8, 12, 8};
  // 14x12x9 and 12x13x8 after padding y to 12: 2 float32 channels + 3 label bytes per voxel.
  const int64_t expected = 2 * (14 * 12 * 9 + 12 * 13 * 8) * (2 * 4 + 3);
  EXPECT_EQ(device_cache_bytes(cases, roi), expected);
  const std::unique_ptr<DeviceBatches> cache =
      make_device_cache(cases, loader_options(), at::kCPU);
  EXPECT_EQ(cache->device_bytes(), expected);
}

TEST(DeviceCacheTest, CasesWithOtherChannelCountsAreAClientErrorNamingTheCase) {
  std::vector<CaseData> cases = varied_cases(3);
  cases[2].image_channels = 1;
  cases[2].image.resize(static_cast<size_t>(cases[2].voxels_per_channel()));
  const TrainingSet set(std::move(cases));
  EXPECT_THROW(
      {
        try {
          make_device_cache(set, loader_options(), at::kCPU);
        } catch (const ClientError& error) {
          EXPECT_NE(std::string(error.what()).find("case2 has 1 image"), std::string::npos)
              << error.what();
          throw;
        }
      },
      ClientError);
}

TEST(DeviceCacheTest, NormalizationMatchesTheHostsOnEachChannel) {
  std::vector<CaseData> cases = varied_cases(1);
  std::vector<float> host = cases[0].image;
  // A channel of zeros stays zeros; a constant channel gets std 1.
  std::fill(host.begin(), host.begin() + cases[0].voxels_per_channel(), 0.0f);
  const at::Tensor tensor =
      at::from_blob(host.data(), {2, cases[0].voxels_per_channel()}, at::kFloat).clone();
  normalize_nonzero_channelwise(host.data(), 2, cases[0].voxels_per_channel());
  const at::Tensor expected = at::from_blob(host.data(), {2, cases[0].voxels_per_channel()});
  const at::Tensor result = normalize_nonzero_channelwise(tensor);
  EXPECT_TRUE(at::allclose(result, expected, 1e-6, 1e-6));
  EXPECT_TRUE(at::equal(result[0], at::zeros_like(result[0])));
}

// On a GPU the cache and the pinned, side-stream host copies give the CPU's batches.
TEST(GpuDeviceBatchesTest, CacheAndHostCopiesOnTheGpuGiveTheCpuBatches) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const TrainingSet cases(varied_cases(5));
  const BatchLoaderOptions options = loader_options();
  BatchLoader loader(&cases, options);
  const std::unique_ptr<DeviceBatches> on_cpu =
      make_device_cache(cases, options, at::kCPU);
  const std::unique_ptr<DeviceBatches> on_gpu =
      make_device_cache(cases, options, at::Device(at::kCUDA, 0));
  const std::unique_ptr<DeviceBatches> copied =
      make_host_batches(loader, at::Device(at::kCUDA, 0));
  const std::vector<DeviceBatch> a = whole_epoch(*on_cpu, 1, 6);
  const std::vector<DeviceBatch> b = whole_epoch(*on_gpu, 1, 6);
  const std::vector<DeviceBatch> c = whole_epoch(*copied, 1, 6);
  ASSERT_EQ(b.size(), a.size());
  ASSERT_EQ(c.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(b[i].image, a[i].image)) << i;
    EXPECT_TRUE(at::equal(b[i].label, a[i].label)) << i;
    EXPECT_TRUE(at::equal(c[i].image, a[i].image)) << i;
    EXPECT_TRUE(at::equal(c[i].label, a[i].label)) << i;
  }
}

}  // namespace
}  // namespace medseg

#include "data/batch_loader.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "io/medseg_record.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

std::vector<CaseData> numbered_cases(int count) {
  std::vector<CaseData> cases(static_cast<size_t>(count));
  for (int n = 0; n < count; ++n) {
    CaseData& data = cases[static_cast<size_t>(n)];
    data.case_id = "case" + std::to_string(n);
    data.spatial_shape = {12, 10, 8};
    data.image_channels = 2;
    data.label_channels = 3;
    data.image.resize(2 * 960);
    for (size_t i = 0; i < data.image.size(); ++i) data.image[i] = n * 10000.0f + i;
    data.label.assign(3 * 960, static_cast<uint8_t>(n % 2));
  }
  return cases;
}

BatchLoaderOptions small_options(int workers) {
  BatchLoaderOptions options;
  options.transforms.roi_size = {8, 8, 8};
  options.batch_size = 2;
  options.seed = 42;
  options.num_workers = workers;
  options.prefetch_batches = 3;
  return options;
}

std::vector<Batch> whole_epoch(BatchLoader& loader, uint64_t epoch, int64_t steps,
                               int64_t first_step = 0) {
  loader.start_epoch(epoch, steps, first_step);
  std::vector<Batch> batches;
  Batch batch;
  while (loader.next(batch)) batches.push_back(batch);
  return batches;
}

TEST(EpochOrderTest, EachEpochIsAPermutationAndEpochsDiffer) {
  const std::vector<int64_t> first = epoch_case_order(10, 10, 1, 0);
  const std::vector<int64_t> second = epoch_case_order(10, 10, 1, 1);
  EXPECT_EQ(std::set<int64_t>(first.begin(), first.end()).size(), 10u);
  EXPECT_NE(first, second);
  // Longer epochs continue with fresh permutations: every case appears 3 times in 30 samples.
  const std::vector<int64_t> longer = epoch_case_order(10, 30, 1, 0);
  for (int64_t n = 0; n < 10; ++n) EXPECT_EQ(std::count(longer.begin(), longer.end(), n), 3);
  EXPECT_EQ(std::vector<int64_t>(longer.begin(), longer.begin() + 10), first);
}

TEST(BatchLoaderTest, SameBatchesWhateverTheWorkerCount) {
  const TrainingSet cases(numbered_cases(5));
  BatchLoader one(&cases, small_options(1));
  BatchLoader three(&cases, small_options(3));
  const std::vector<Batch> a = whole_epoch(one, 2, 7);
  const std::vector<Batch> b = whole_epoch(three, 2, 7);
  ASSERT_EQ(a.size(), 7u);
  ASSERT_EQ(b.size(), 7u);
  for (size_t step = 0; step < a.size(); ++step) {
    EXPECT_EQ(a[step].step, static_cast<int64_t>(step));
    EXPECT_EQ(a[step].image, b[step].image) << step;
    EXPECT_EQ(a[step].label, b[step].label) << step;
  }
  EXPECT_GT(one.buffer_bytes(), 0);
}

TEST(BatchLoaderTest, ResumingMidEpochReplaysTheRemainingSteps) {
  const TrainingSet cases(numbered_cases(4));
  BatchLoader loader(&cases, small_options(2));
  const std::vector<Batch> full = whole_epoch(loader, 1, 6);
  const std::vector<Batch> resumed = whole_epoch(loader, 1, 6, /*first_step=*/4);
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0].image, full[4].image);
  EXPECT_EQ(resumed[1].image, full[5].image);
}

TEST(BatchLoaderTest, RanksSplitTheGlobalBatch) {
  // Two ranks with batch 1 see, together, exactly the samples one rank with batch 2 sees.
  const TrainingSet cases(numbered_cases(6));
  BatchLoaderOptions single = small_options(2);
  single.batch_size = 2;
  BatchLoader whole(&cases, single);
  const std::vector<Batch> reference = whole_epoch(whole, 0, 3);
  for (int rank = 0; rank < 2; ++rank) {
    BatchLoaderOptions options = small_options(2);
    options.batch_size = 1;
    options.rank = rank;
    options.world_size = 2;
    BatchLoader loader(&cases, options);
    const std::vector<Batch> shard = whole_epoch(loader, 0, 3);
    ASSERT_EQ(shard.size(), 3u);
    const size_t sample_floats = shard[0].image.size();
    for (size_t step = 0; step < 3; ++step) {
      const std::vector<float> expected(reference[step].image.begin() + rank * sample_floats,
                                        reference[step].image.begin() + (rank + 1) * sample_floats);
      EXPECT_EQ(shard[step].image, expected) << "rank " << rank << " step " << step;
    }
  }
}

TEST(BatchLoaderTest, WorkerErrorsReachTheConsumer) {
  std::vector<CaseData> cases = numbered_cases(2);
  cases[1].image_channels = 1;  // one channel of 1920 voxels, unlike case0's two of 960
  cases[1].spatial_shape = {24, 10, 8};
  cases[1].label.resize(3 * 1920);
  const TrainingSet set(cases);
  BatchLoaderOptions options = small_options(2);
  options.batch_size = 2;
  BatchLoader loader(&set, options);
  // One step, so that exactly one worker meets the mismatch: the second case of that batch is the
  // one named.
  loader.start_epoch(0, 1);
  const std::string second_case =
      "case" + std::to_string(epoch_case_order(2, 2, options.seed, 0)[1]);
  Batch batch;
  // The worker's own error, with its type and message, not a generic failure.
  try {
    while (loader.next(batch)) {
    }
    ADD_FAILURE() << "the mismatched case went unnoticed";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find("unlike the other cases of its batch"),
              std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("case " + second_case + " has"), std::string::npos)
        << error.what();
  }
}

// Mapped record shards give the very batches their decoded cases give, float16 ones included
// (widened crop by crop instead of whole).
TEST(BatchLoaderTest, MappedRecordsGiveTheBatchesOfDecodedCases) {
  for (const ImageDType dtype : {ImageDType::kFloat32, ImageDType::kFloat16}) {
    SCOPED_TRACE(image_dtype_name(dtype));
    testing::TempDir dir;
    std::vector<CaseData> cases = numbered_cases(5);
    for (CaseData& data : cases) {
      for (float& value : data.image) value = value / 7000.0f - 0.3f;  // within float16's range
    }
    write_record_file(dir.file("cases.medrec"), cases, RecordWriterOptions{dtype});
    auto reader = std::make_shared<const MappedRecordReader>(dir.file("cases.medrec"));
    std::vector<CaseData> decoded;
    for (size_t i = 0; i < reader->size(); ++i) decoded.push_back(reader->read(i));
    const TrainingSet mapped(reader, {0, 1, 2, 3, 4});
    const TrainingSet in_memory(decoded);
    EXPECT_EQ(in_memory.private_bytes(), 5 * (2 * 960 * 4 + 3 * 960));
    EXPECT_EQ(mapped.private_bytes(), 0);
    EXPECT_EQ(mapped.mapped_bytes(),
              5 * (2 * 960 * (dtype == ImageDType::kFloat16 ? 2 : 4) + 3 * 960));
    BatchLoaderOptions options = small_options(2);
    options.transforms.roi_size = {8, 12, 8};  // padded on y
    options.transforms.flip_axes = {0, 1, 2};
    options.transforms.scale_prob = 1.0;
    options.transforms.shift_prob = 1.0;
    for (const bool normalize_crop : {false, true}) {
      options.transforms.normalize_crop = normalize_crop;
      BatchLoader from_map(&mapped, options);
      BatchLoader from_memory(&in_memory, options);
      const std::vector<Batch> a = whole_epoch(from_map, 3, 6);
      const std::vector<Batch> b = whole_epoch(from_memory, 3, 6);
      for (size_t step = 0; step < a.size(); ++step) {
        EXPECT_EQ(a[step].image, b[step].image) << step;
        EXPECT_EQ(a[step].label, b[step].label) << step;
      }
    }
  }
}

}  // namespace
}  // namespace medseg

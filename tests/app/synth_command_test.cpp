#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/synthetic_cases.h"
#include "io/nifti_volume.h"
#include "test_support.h"

namespace medseg {
namespace {

TEST(SynthTest, SameSeedSameCaseOtherSeedOtherCase) {
  const SyntheticCase a = make_synthetic_case({32, 32, 24}, 7, 0);
  const SyntheticCase b = make_synthetic_case({32, 32, 24}, 7, 0);
  const SyntheticCase c = make_synthetic_case({32, 32, 24}, 8, 0);
  const SyntheticCase d = make_synthetic_case({32, 32, 24}, 7, 1);
  EXPECT_EQ(a.image.data, b.image.data);
  EXPECT_EQ(a.label.data, b.label.data);
  EXPECT_NE(a.image.data, c.image.data);
  EXPECT_NE(a.label.data, d.label.data);
}

TEST(SynthTest, CasesHaveEveryCompartmentAndModalitiesTellThemApart) {
  const std::array<int, 3> shape = {48, 48, 32};
  const SyntheticCase generated = make_synthetic_case(shape, 0, 3);
  const int64_t voxels = 48 * 48 * 32;
  ASSERT_EQ(generated.image.dim, (std::array<int64_t, 4>{48, 48, 32, 4}));
  // Mean intensity of each label per modality.
  double sum[4][4] = {};
  int64_t count[4] = {};
  int64_t zeros = 0;
  for (int64_t i = 0; i < voxels; ++i) {
    const int label = static_cast<int>(generated.label.data[i]);
    ASSERT_GE(label, 0);
    ASSERT_LE(label, 3);
    if (generated.image.data[i] == 0.0f) {
      ++zeros;
      EXPECT_EQ(label, 0) << "tumour outside the brain at voxel " << i;
      continue;
    }
    ++count[label];
    for (int m = 0; m < 4; ++m) sum[label][m] += generated.image.data[i + voxels * m];
  }
  EXPECT_GT(zeros, voxels / 5) << "the volume should be skull-stripped (zeros outside the brain)";
  for (int label = 0; label < 4; ++label) ASSERT_GT(count[label], 20) << "label " << label;
  auto mean = [&](int label, int modality) { return sum[label][modality] / count[label]; };
  // Edema is brightest on FLAIR, the enhancing rim on T1gd, the core on T2.
  EXPECT_GT(mean(1, 0), 1.2 * mean(0, 0));
  EXPECT_GT(mean(3, 2), 1.5 * mean(0, 2));
  EXPECT_GT(mean(2, 3), 1.2 * mean(1, 3));
  EXPECT_LT(mean(2, 1), 0.8 * mean(0, 1));
}

TEST(SynthTest, CommandWritesADecathlonLayout) {
  testing::TempDir dir;
  const testing::CommandResult result = testing::run_medseg(
      {"synth", "--out", dir.path(), "--cases", "3", "--shape", "24", "20", "16", "--seed", "5"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json dataset =
      nlohmann::json::parse(testing::read_text(dir.file("dataset.json")));
  ASSERT_EQ(dataset["training"].size(), 3u);
  EXPECT_EQ(dataset["numTraining"], 3);
  EXPECT_EQ(dataset["modality"]["0"], "FLAIR");
  for (const auto& entry : dataset["training"]) {
    const NiftiVolume image = read_nifti(dir.file(entry["image"].get<std::string>()));
    const NiftiVolume label = read_nifti(dir.file(entry["label"].get<std::string>()));
    EXPECT_EQ(image.ndim, 4);
    EXPECT_EQ(image.dim, (std::array<int64_t, 4>{24, 20, 16, 4}));
    EXPECT_EQ(label.dim, (std::array<int64_t, 4>{24, 20, 16, 1}));
    EXPECT_EQ(label.header.datatype, static_cast<int>(NiftiDataType::kUint8));
  }
  // Deterministic: the same command writes the same first case.
  const SyntheticCase expected = make_synthetic_case({24, 20, 16}, 5, 0);
  EXPECT_EQ(read_nifti(dir.file("imagesTr/BRATS_001.nii.gz")).data, expected.image.data);
}

TEST(SynthTest, RejectsAbsurdShapes) {
  testing::TempDir dir;
  const testing::CommandResult result =
      testing::run_medseg({"synth", "--out", dir.path(), "--shape", "4", "20", "16"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("--shape 4"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace medseg

#include "data/case_discovery.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "test_support.h"
#include "util/buffer_pool.h"
#include "util/error.h"

namespace medseg {
namespace {

NiftiVolume small_volume(float value, int64_t nt = 1) {
  NiftiVolume volume;
  volume.ndim = nt > 1 ? 4 : 3;
  volume.dim = {6, 5, 4, nt};
  volume.data.assign(static_cast<size_t>(volume.voxel_count()), value);
  return volume;
}

void write_brats_case(const std::string& root, const std::string& id, bool with_t1ce = true) {
  for (const char* modality : {"flair", "t1", "t1ce", "t2", "seg"}) {
    if (!with_t1ce && std::string(modality) == "t1ce") continue;
    std::filesystem::create_directories(root + "/" + id);
    write_nifti(root + "/" + id + "/" + id + "_" + modality + ".nii.gz",
                small_volume(std::string(modality) == "seg" ? 1.0f : 7.0f),
                NiftiDataType::kFloat32);
  }
}

TEST(CaseDiscoveryTest, DecathlonEntriesResolveRelativeToTheFolder) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("imagesTr"));
  std::filesystem::create_directories(dir.file("labelsTr"));
  write_nifti(dir.file("imagesTr/BRATS_001.nii.gz"), small_volume(1, 4), NiftiDataType::kFloat32);
  write_nifti(dir.file("labelsTr/BRATS_001.nii.gz"), small_volume(0), NiftiDataType::kUint8);
  testing::write_text(dir.file("dataset.json"),
                      R"({"training": [{"image": "./imagesTr/BRATS_001.nii.gz",
                                        "label": "./labelsTr/BRATS_001.nii.gz"}]})");
  const DatasetIndex index = discover_dataset(dir.path(), "auto", true);
  EXPECT_EQ(index.layout, DatasetLayout::kDecathlon);
  ASSERT_EQ(index.cases.size(), 1u);
  EXPECT_EQ(index.cases[0].case_id, "BRATS_001");
  EXPECT_EQ(index.cases[0].label_file, dir.file("labelsTr/BRATS_001.nii.gz"));
}

TEST(CaseDiscoveryTest, DecathlonEntryNamingAMissingFileIsNamed) {
  testing::TempDir dir;
  testing::write_text(dir.file("dataset.json"),
                      R"({"training": [{"image": "./imagesTr/BRATS_009.nii.gz",
                                        "label": "./labelsTr/BRATS_009.nii.gz"}]})");
  const std::string message =
      testing::client_error_message([&] { discover_dataset(dir.path(), "auto", true); });
  EXPECT_NE(message.find("training[0].image = './imagesTr/BRATS_009.nii.gz': file not found"),
            std::string::npos)
      << message;
}

TEST(CaseDiscoveryTest, DecathlonEntryWithoutLabelIsAnErrorForTraining) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.file("imagesTr"));
  write_nifti(dir.file("imagesTr/a.nii.gz"), small_volume(1, 4), NiftiDataType::kFloat32);
  testing::write_text(dir.file("dataset.json"),
                      R"({"training": [{"image": "imagesTr/a.nii.gz"}]})");
  EXPECT_NE(testing::client_error_message([&] {
              discover_dataset(dir.path(), "decathlon", true);
            }).find("training[0] has no \"label\" entry"),
            std::string::npos);
  EXPECT_EQ(discover_dataset(dir.path(), "decathlon", false).cases[0].label_file, "");
}

TEST(CaseDiscoveryTest, BratsFoldersStackModalitiesInTask01Order) {
  testing::TempDir dir;
  write_brats_case(dir.file("BraTS2021_Training_Data"), "BraTS2021_00002");
  write_brats_case(dir.file("BraTS2021_Training_Data"), "BraTS2021_00000");
  const DatasetIndex index = discover_dataset(dir.path(), "auto", true);
  EXPECT_EQ(index.layout, DatasetLayout::kBrats);
  ASSERT_EQ(index.cases.size(), 2u);
  EXPECT_EQ(index.cases[0].case_id, "BraTS2021_00000");
  ASSERT_EQ(index.cases[0].image_files.size(), 4u);
  EXPECT_NE(index.cases[0].image_files[2].find("_t1ce.nii.gz"), std::string::npos);
  const NiftiVolume image = load_case_image(index.cases[0], {});
  EXPECT_EQ(image.dim, (std::array<int64_t, 4>{6, 5, 4, 4}));
}

// The modalities are decoded into their places in the stack; each keeps its values, whatever
// its file's type (an 8-byte type needs more room than its place and is copied in), with or
// without the thread's buffer pool, and a pooled stack from an earlier case leaves no trace.
TEST(CaseDiscoveryTest, BratsModalitiesOfEveryTypeLandInTheirPlaceOfTheStack) {
  testing::TempDir dir;
  const std::string folder = dir.file("BraTS_00001");
  std::filesystem::create_directories(folder);
  const std::vector<std::pair<const char*, NiftiDataType>> files = {
      {"flair", NiftiDataType::kInt16},
      {"t1", NiftiDataType::kFloat32},
      {"t1ce", NiftiDataType::kUint8},
      {"t2", NiftiDataType::kFloat64}};
  for (size_t m = 0; m < files.size(); ++m) {
    NiftiVolume volume = small_volume(0.0f);
    for (size_t i = 0; i < volume.data.size(); ++i) {
      volume.data[i] = static_cast<float>((i * (m + 3)) % 200);
    }
    write_nifti(folder + "/BraTS_00001_" + files[m].first + (m == 1 ? ".nii" : ".nii.gz"), volume,
                files[m].second);
  }
  write_nifti(folder + "/BraTS_00001_seg.nii.gz", small_volume(1.0f), NiftiDataType::kUint8);
  const DatasetIndex index = discover_dataset(dir.path(), "brats", true);
  CaseBuffers buffers;
  buffers.floats.give(std::vector<float>(10000, -1.0f));  // a larger stack of an earlier case
  NiftiReadOptions in_place;  // asked for, but not every modality is plain float32
  in_place.voxels_in_place = true;
  for (const NiftiReadOptions& options : {NiftiReadOptions{}, in_place}) {
    for (CaseBuffers* pool : {static_cast<CaseBuffers*>(nullptr), &buffers}) {
      const NiftiVolume image = load_case_image(index.cases[0], options, pool);
      ASSERT_EQ(image.dim, (std::array<int64_t, 4>{6, 5, 4, 4}));
      ASSERT_EQ(image.first_voxel, 0);
      ASSERT_EQ(image.data.size(), 6u * 5 * 4 * 4);
      for (size_t m = 0; m < 4; ++m) {
        for (size_t i = 0; i < 120; ++i) {
          ASSERT_EQ(image.data[m * 120 + i], static_cast<float>((i * (m + 3)) % 200))
              << "modality " << m << ", voxel " << i;
        }
      }
      // int16, float32, uint8, float64: only integer stacks are finite without a check.
      EXPECT_FALSE(image.known_finite);
    }
  }
}

// A plain float32 .nii.gz written with `extra` bytes between its header and its voxels (where
// NIfTI extensions go), so that its voxels start later.
void write_with_gap(const std::string& path, const NiftiVolume& volume, int extra) {
  const std::string plain = path + ".tmp.nii";
  write_nifti(plain, volume, NiftiDataType::kFloat32);
  std::string bytes = testing::read_text(plain);
  std::filesystem::remove(plain);
  float vox_offset = 0.0f;
  std::memcpy(&vox_offset, bytes.data() + 108, 4);
  ASSERT_EQ(vox_offset, 352.0f);
  vox_offset += static_cast<float>(extra);
  std::memcpy(bytes.data() + 108, &vox_offset, 4);
  bytes.insert(352, std::string(static_cast<size_t>(extra), '\0'));
  gzFile file = gzopen(path.c_str(), "wb1");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

// Plain float32 .nii.gz modalities stay where they are decompressed, each file's header landing
// at the end of the previous modality's place: every modality keeps its values, whatever its
// header's length, and the stack equals the one read the usual way.
TEST(CaseDiscoveryTest, PlainFloatModalitiesAreDecodedInPlaceWithHeadersOfAnyLength) {
  testing::TempDir dir;
  const std::string folder = dir.file("BraTS_00002");
  std::filesystem::create_directories(folder);
  const char* modalities[] = {"flair", "t1", "t1ce", "t2"};
  const int gaps[] = {0, 48, 0, 16};  // bytes between header and voxels
  for (size_t m = 0; m < 4; ++m) {
    NiftiVolume volume = small_volume(0.0f);
    for (size_t i = 0; i < volume.data.size(); ++i) {
      volume.data[i] = static_cast<float>(i) * 0.25f + static_cast<float>(1000 * (m + 1));
    }
    write_with_gap(folder + "/BraTS_00002_" + modalities[m] + ".nii.gz", volume, gaps[m]);
  }
  write_nifti(folder + "/BraTS_00002_seg.nii.gz", small_volume(1.0f), NiftiDataType::kUint8);
  const DatasetIndex index = discover_dataset(dir.path(), "brats", true);
  const NiftiVolume usual = load_case_image(index.cases[0], {});
  ASSERT_EQ(usual.first_voxel, 0);
  NiftiReadOptions in_place;
  in_place.voxels_in_place = true;
  CaseBuffers buffers;
  buffers.floats.give(std::vector<float>(50000, -1.0f));  // a larger stack of an earlier case
  for (CaseBuffers* pool : {static_cast<CaseBuffers*>(nullptr), &buffers}) {
    NiftiVolume kept = load_case_image(index.cases[0], in_place, pool);
    ASSERT_EQ(kept.dim, (std::array<int64_t, 4>{6, 5, 4, 4}));
    EXPECT_EQ(kept.first_voxel, (352 + 48) / 4);  // room for the longest header
    ASSERT_EQ(kept.data.size() - kept.first_voxel, usual.data.size());
    for (size_t m = 0; m < 4; ++m) {
      for (size_t i = 0; i < 120; ++i) {
        ASSERT_EQ(kept.voxels()[m * 120 + i],
                  static_cast<float>(i) * 0.25f + static_cast<float>(1000 * (m + 1)))
            << "modality " << m << ", voxel " << i;
      }
    }
    EXPECT_FALSE(kept.known_finite);  // not checked: preprocess_case checks what it computes
    EXPECT_EQ(kept.affine, usual.affine);
    if (pool != nullptr) pool->floats.give(std::move(kept.data));
  }
}

// Unscaled int16 modalities stay int16 where they are decompressed, two voxels per float of the
// stack, last to first like float32 ones: the values are those of the usual float stack.
TEST(CaseDiscoveryTest, Int16ModalitiesAreKeptAsInt16InPlace) {
  testing::TempDir dir;
  const std::string folder = dir.file("BraTS_00003");
  std::filesystem::create_directories(folder);
  for (const char* modality : {"flair", "t1", "t1ce", "t2"}) {
    NiftiVolume volume = small_volume(0.0f);
    for (size_t i = 0; i < volume.data.size(); ++i) {
      volume.data[i] = static_cast<float>(static_cast<int64_t>(i * 37 + modality[1]) % 3000 - 900);
    }
    write_nifti(folder + "/BraTS_00003_" + modality + ".nii.gz", volume, NiftiDataType::kInt16);
  }
  write_nifti(folder + "/BraTS_00003_seg.nii.gz", small_volume(1.0f), NiftiDataType::kUint8);
  const DatasetIndex index = discover_dataset(dir.path(), "brats", true);
  const NiftiVolume usual = load_case_image(index.cases[0], {});
  ASSERT_FALSE(usual.raw_int16);
  NiftiReadOptions in_place;
  in_place.voxels_in_place = true;
  CaseBuffers buffers;
  for (CaseBuffers* pool : {static_cast<CaseBuffers*>(nullptr), &buffers}) {
    NiftiVolume kept = load_case_image(index.cases[0], in_place, pool);
    ASSERT_TRUE(kept.raw_int16);
    EXPECT_EQ(kept.first_voxel, 352 / 2);
    EXPECT_TRUE(kept.known_finite);
    const NiftiVolume widened = widen_raw(kept);
    EXPECT_EQ(widened.dim, usual.dim);
    EXPECT_EQ(widened.data, usual.data);
    if (pool != nullptr) pool->floats.give(std::move(kept.data));
  }
}

TEST(CaseDiscoveryTest, ModalitiesOfDifferentShapesAreRefusedNamingBoth) {
  testing::TempDir dir;
  write_brats_case(dir.path(), "case");
  NiftiVolume larger = small_volume(7.0f);
  larger.dim = {7, 5, 4, 1};
  larger.data.assign(7 * 5 * 4, 7.0f);
  write_nifti(dir.file("case/case_t1.nii.gz"), larger, NiftiDataType::kFloat32);
  const DatasetIndex index = discover_dataset(dir.path(), "brats", true);
  CaseBuffers buffers;
  const std::string message =
      testing::client_error_message([&] { load_case_image(index.cases[0], {}, &buffers); });
  EXPECT_NE(message.find(dir.file("case/case_t1.nii.gz") + " has shape 7x5x4 but " +
                         dir.file("case/case_flair.nii.gz") + " has 6x5x4"),
            std::string::npos)
      << message;
}

TEST(CaseDiscoveryTest, BratsCaseMissingAModalityIsNamed) {
  testing::TempDir dir;
  write_brats_case(dir.path(), "BraTS2021_00005", /*with_t1ce=*/false);
  const std::string message =
      testing::client_error_message([&] { discover_dataset(dir.path(), "brats", true); });
  EXPECT_NE(message.find("BraTS2021_00005 has no *_t1ce.nii[.gz] file"), std::string::npos)
      << message;
}

TEST(CaseDiscoveryTest, ModalitiesOnDifferentGridsAreRefused) {
  testing::TempDir dir;
  write_brats_case(dir.path(), "case");
  NiftiVolume shifted = small_volume(7.0f);
  shifted.affine[0][3] = 5.0;
  write_nifti(dir.file("case/case_t2.nii.gz"), shifted, NiftiDataType::kFloat32);
  const DatasetIndex index = discover_dataset(dir.path(), "brats", true);
  EXPECT_NE(testing::client_error_message([&] {
              load_case_image(index.cases[0], {});
            }).find("affine of " + dir.file("case/case_t2.nii.gz")),
            std::string::npos);
}

TEST(CaseDiscoveryTest, EmptyFolderSaysWhatWasExpected) {
  testing::TempDir dir;
  EXPECT_NE(testing::client_error_message([&] {
              discover_dataset(dir.path(), "auto", true);
            }).find("expected a Decathlon folder (dataset.json)"),
            std::string::npos);
}

}  // namespace
}  // namespace medseg

// Loading a case from its files: a uint8 label, read as its bytes, gives the case its float
// values give, on every path of the static transforms.
#include "data/case_store.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "data/case_discovery.h"
#include "data/static_transforms.h"
#include "io/nifti_volume.h"
#include "test_support.h"
#include "util/buffer_pool.h"

namespace medseg {
namespace {

// A 4-modality image and its label on an LPS grid of `zooms` mm.
struct CaseFiles {
  NiftiVolume image, label;
};

CaseFiles make_case(const std::array<double, 3>& zooms) {
  CaseFiles files;
  const std::array<int64_t, 4> dim{23, 19, 17, 4};
  Affine affine{};
  affine[0] = {-zooms[0], 0.0, 0.0, 20.0};
  affine[1] = {0.0, -zooms[1], 0.0, 15.0};
  affine[2] = {0.0, 0.0, zooms[2], -9.0};
  affine[3] = {0.0, 0.0, 0.0, 1.0};
  files.image.ndim = 4;
  files.image.dim = dim;
  files.image.affine = affine;
  files.image.pixdim = zooms;
  files.image.data.resize(static_cast<size_t>(files.image.voxel_count()));
  for (size_t i = 0; i < files.image.data.size(); ++i) {
    files.image.data[i] = static_cast<float>((i * 7919) % 1000) * 0.25f;
  }
  files.label.dim = {dim[0], dim[1], dim[2], 1};
  files.label.affine = affine;
  files.label.pixdim = zooms;
  files.label.data.resize(static_cast<size_t>(files.label.voxel_count()));
  for (size_t i = 0; i < files.label.data.size(); ++i) {
    files.label.data[i] = static_cast<float>((i / 29 + i % 3) % 4);
  }
  return files;
}

CaseSource write_case(const testing::TempDir& dir, const std::string& id, const CaseFiles& files,
                      NiftiDataType label_type) {
  CaseSource source;
  source.case_id = id;
  source.image_files = {dir.file(id + ".nii.gz")};
  source.label_file = dir.file(id + "_label.nii.gz");
  write_nifti(source.image_files[0], files.image, NiftiDataType::kFloat32);
  write_nifti(source.label_file, files.label, label_type);
  return source;
}

TEST(CaseStoreTest, AUint8LabelGivesTheCaseOfItsFloatValuesOnEveryPath) {
  testing::TempDir dir;
  // 1.1 x 1.0 x 1.3 mm is resampled to the default 1.5 x 1.5 x 2.0 (in slabs); the target
  // spacing itself is not (channel-first, then Orientation).
  for (const auto& zooms : {std::array<double, 3>{1.1, 1.0, 1.3}, {1.5, 1.5, 2.0}}) {
    SCOPED_TRACE("zooms " + std::to_string(zooms[0]));
    const CaseFiles files = make_case(zooms);
    const CaseSource bytes = write_case(dir, "bytes", files, NiftiDataType::kUint8);
    const CaseSource floats = write_case(dir, "floats", files, NiftiDataType::kFloat32);
    CaseLoadOptions options;
    CaseBuffers buffers;
    for (CaseBuffers* pool : {static_cast<CaseBuffers*>(nullptr), &buffers}) {
      const CaseData from_bytes = load_case(bytes, options, pool);
      const CaseData from_floats = load_case(floats, options, pool);
      EXPECT_EQ(from_bytes.spatial_shape, from_floats.spatial_shape);
      EXPECT_EQ(from_bytes.affine, from_floats.affine);
      EXPECT_TRUE(from_bytes.image == from_floats.image);
      EXPECT_TRUE(from_bytes.label == from_floats.label);
      EXPECT_EQ(from_bytes.label.size(), 3 * from_bytes.image.size() / 4);
      int64_t labelled = 0;
      for (const uint8_t v : from_bytes.label) labelled += v;
      EXPECT_GT(labelled, 0);
    }
  }
}

TEST(CaseStoreTest, ARefusedByteOfAUint8LabelIsNamedWithItsCase) {
  testing::TempDir dir;
  CaseFiles files = make_case({1.1, 1.0, 1.3});
  files.label.data[1234] = 5.0f;
  files.label.data[4321] = 5.0f;
  const CaseSource source = write_case(dir, "BRATS_007", files, NiftiDataType::kUint8);
  const std::string message =
      testing::client_error_message([&] { load_case(source, CaseLoadOptions{}); });
  EXPECT_NE(message.find("case 'BRATS_007': label value 5 at 2 voxels"), std::string::npos)
      << message;
  EXPECT_NE(message.find("the msd scheme allows 0, 1, 2, 3"), std::string::npos) << message;
}

}  // namespace
}  // namespace medseg

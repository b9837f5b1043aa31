// The static transforms against MONAI's own outputs: the committed MONAI 1.4 fixtures
// (tests/data/monai, see NOTES.md there) and fresh cases the project's MONAI writes during the
// test. Every case is read with read_nifti and run through the chain, and the shapes, affines,
// images and labels after Spacing, after Orientation and at the end are compared with MONAI's.
#include "data/static_transforms.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/case_store.h"
#include "test_support.h"
#include "util/buffer_pool.h"
#include "util/error.h"

namespace medseg {
namespace {

// The committed fixtures; the live test writes the same layout into a temporary folder.
const std::string kFixtureDir = std::string(MEDSEG_SOURCE_DIR) + "/tests/data/monai/";

nlohmann::json manifest(const std::string& dir = kFixtureDir) {
  std::ifstream in(dir + "manifest.json");
  return nlohmann::json::parse(in);
}

template <typename T>
std::vector<T> read_raw(const std::string& dir, const std::string& relative) {
  std::ifstream in(dir + relative, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<T> values(bytes.size() / sizeof(T));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

std::array<int64_t, 3> spatial(const nlohmann::json& shape, size_t first) {
  return {shape[first].get<int64_t>(), shape[first + 1].get<int64_t>(),
          shape[first + 2].get<int64_t>()};
}

// One stage's comparison with MONAI; `skip_small` holds, per voxel of channel-first data, whether
// MONAI's Spacing output there was |v| < 1e-6 (NOTES.md: round-off near 0 changes the mask of
// NormalizeIntensity(nonzero)).
struct StageReport {
  double max_image_error = 0.0;  // max |ours - MONAI| / max |MONAI|
  double max_image_abs_error = 0.0;
  double label_agreement = 1.0;  // fraction of equal label voxels
};

StageReport compare_stage(const std::string& dir, const CaseData& ours, const nlohmann::json& stage,
                          const std::vector<bool>* skip, const std::string& what) {
  StageReport report;
  const auto& image_ref = stage["image"];
  const auto shape = image_ref["shape"];
  EXPECT_EQ(ours.image_channels, shape[0].get<int64_t>()) << what;
  EXPECT_EQ(ours.spatial_shape, spatial(shape, 1)) << what;
  const auto& affine = stage["affine"];
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      EXPECT_NEAR(ours.affine[r][c], affine[r][c].get<double>(), 1e-6)
          << what << " affine[" << r << "][" << c << "]";
    }
  }
  const auto image = read_raw<float>(dir, image_ref["file"].get<std::string>());
  const auto label = read_raw<uint8_t>(dir, stage["label"]["file"].get<std::string>());
  if (image.size() != ours.image.size() || label.size() != ours.label.size()) {
    ADD_FAILURE() << what << ": sizes differ (image " << ours.image.size() << " vs " << image.size()
                  << ", label " << ours.label.size() << " vs " << label.size() << ")";
    return report;
  }
  double max_ref = 0.0;
  for (float v : image) max_ref = std::max(max_ref, std::fabs(static_cast<double>(v)));
  for (size_t i = 0; i < image.size(); ++i) {
    if (skip != nullptr && (*skip)[i]) continue;
    const double error = std::fabs(static_cast<double>(ours.image[i]) - image[i]);
    report.max_image_abs_error = std::max(report.max_image_abs_error, error);
  }
  report.max_image_error = report.max_image_abs_error / std::max(max_ref, 1e-30);
  size_t equal = 0;
  for (size_t i = 0; i < label.size(); ++i) equal += ours.label[i] == label[i];
  report.label_agreement = label.empty() ? 1.0 : static_cast<double>(equal) / label.size();
  return report;
}

// Runs the static transforms stage by stage on one case of the fixture set in `dir` and compares
// each stage with MONAI's output there.
void expect_matches_monai_after_each_stage(const std::string& dir, const std::string& name,
                                           const nlohmann::json& fixture) {
  const NiftiVolume image = read_nifti(dir + fixture["inputs"]["image"]["file"].get<std::string>());
  const NiftiVolume label = read_nifti(dir + fixture["inputs"]["label"]["file"].get<std::string>());
  StaticTransformOptions options;
  options.label_scheme = parse_label_scheme(fixture["label_scheme"].get<std::string>());
  options.expected_channels = 0;
  options.allow_empty_channels = true;
  for (int a = 0; a < 3; ++a) options.pixdim[a] = fixture["pixdim"][a].get<double>();

  CaseData data = to_channel_first(image, &label, options, name);
  EXPECT_EQ(data.original.spatial_shape, spatial(fixture["inputs"]["label"]["shape"], 0));
  const SpacingResult spaced = spacing(data, options.pixdim);
  EXPECT_EQ(spaced.resampled, fixture["spacing"]["resampled"].get<bool>());
  const StageReport after_spacing =
      compare_stage(dir, data, fixture["spacing"], nullptr, "spacing");

  orient_ras(data);
  const StageReport after_orientation =
      compare_stage(dir, data, fixture["orientation"], nullptr, "orientation");

  // Voxels whose MONAI value after Orientation is |v| < 1e-6 are skipped at the end: there the
  // trilinear round-off (~1e-12 instead of 0, NOTES.md) decides whether NormalizeIntensity counts
  // the voxel as brain. Zeros in both are compared (they must stay 0). Where that round-off put
  // a voxel in the brain of one and not of the other (it depends on the BLAS numpy's solve runs
  // on: OpenBLAS builds differ in the last bit of MONAI's resampling matrix), the channel's mean
  // and std differ too, so such a channel's final values are not compared; the disagreement must
  // be round-off only and rare.
  const auto oriented_ref =
      read_raw<float>(dir, fixture["orientation"]["image"]["file"].get<std::string>());
  std::vector<bool> skip(oriented_ref.size());
  const size_t channel_voxels = oriented_ref.size() / static_cast<size_t>(data.image_channels);
  int64_t membership_disagreements = 0;
  for (size_t c = 0; c < static_cast<size_t>(data.image_channels); ++c) {
    bool channel_differs = false;
    for (size_t i = c * channel_voxels; i < (c + 1) * channel_voxels; ++i) {
      skip[i] =
          std::fabs(oriented_ref[i]) < 1e-6f && !(oriented_ref[i] == 0.0f && data.image[i] == 0.0f);
      if ((oriented_ref[i] == 0.0f) != (data.image[i] == 0.0f)) {
        ++membership_disagreements;
        channel_differs = true;
        EXPECT_LT(std::fabs(oriented_ref[i]) + std::fabs(data.image[i]), 1e-6)
            << "voxel " << i << " is brain in one and not the other beyond round-off";
      }
    }
    if (channel_differs) {
      std::fill(skip.begin() + c * channel_voxels, skip.begin() + (c + 1) * channel_voxels, true);
    }
  }
  EXPECT_LE(membership_disagreements, static_cast<int64_t>(oriented_ref.size() / 100));
  normalize_intensity_nonzero(data);
  const StageReport final_stage = compare_stage(dir, data, fixture["final"], &skip, "final");

  std::printf(
      "[ %-13s ] spacing: image rel %.2e, labels %.5f | orientation: image rel %.2e, "
      "labels %.5f | final: image abs %.2e, labels %.5f | round-off brain-mask differences %lld\n",
      name.c_str(), after_spacing.max_image_error, after_spacing.label_agreement,
      after_orientation.max_image_error, after_orientation.label_agreement,
      final_stage.max_image_abs_error, final_stage.label_agreement,
      static_cast<long long>(membership_disagreements));
  EXPECT_LE(after_spacing.max_image_error, 1e-5);
  EXPECT_LE(after_orientation.max_image_error, 1e-5);
  EXPECT_LE(final_stage.max_image_abs_error, 1e-5);
  EXPECT_GE(after_spacing.label_agreement, 0.999);
  EXPECT_GE(after_orientation.label_agreement, 0.999);
  EXPECT_GE(final_stage.label_agreement, 0.999);
}

// The options the fixture cases were made with (any channel count, empty channels allowed).
StaticTransformOptions fixture_options(const nlohmann::json& fixture) {
  StaticTransformOptions options;
  options.expected_channels = 0;
  options.allow_empty_channels = true;
  for (int a = 0; a < 3; ++a) options.pixdim[a] = fixture["pixdim"][a].get<double>();
  return options;
}

class StaticTransformsMonai : public ::testing::TestWithParam<std::string> {};

TEST_P(StaticTransformsMonai, MatchesMonaiAfterEachStage) {
  expect_matches_monai_after_each_stage(kFixtureDir, GetParam(), manifest()["cases"][GetParam()]);
}

TEST_P(StaticTransformsMonai, PreprocessCaseEqualsTheStages) {
  const std::string name = GetParam();
  const auto fixture = manifest()["cases"][name];
  const NiftiVolume image =
      read_nifti(kFixtureDir + fixture["inputs"]["image"]["file"].get<std::string>());
  const NiftiVolume label =
      read_nifti(kFixtureDir + fixture["inputs"]["label"]["file"].get<std::string>());
  StaticTransformOptions options = fixture_options(fixture);
  const CaseData one_thread = preprocess_case(image, &label, options, name);
  options.threads = 3;
  const CaseData three_threads = preprocess_case(image, &label, options, name);
  EXPECT_EQ(one_thread.image, three_threads.image);
  EXPECT_EQ(one_thread.label, three_threads.label);
  EXPECT_EQ(one_thread.original.affine, image.affine);
  const auto final_label =
      read_raw<uint8_t>(kFixtureDir, fixture["final"]["label"]["file"].get<std::string>());
  EXPECT_EQ(one_thread.label, final_label);
}

// Preprocess's threads reuse one set of buffers case after case (util/buffer_pool.h): whatever
// the previous case's shapes and orientation left in them, every case comes out as it does with
// fresh buffers.
TEST(StaticTransforms, ReusedBuffersGiveTheCasesOfFreshOnes) {
  const std::vector<std::string> names = {"lps_aniso", "oblique",   "int16_scaled",
                                          "nifti2",    "half_ties", "zeros_channel"};
  CaseBuffers buffers;
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::string& name : names) {
      const auto fixture = manifest()["cases"][name];
      NiftiVolume image = read_nifti(
          kFixtureDir + fixture["inputs"]["image"]["file"].get<std::string>(), {}, &buffers);
      const NiftiVolume label =
          read_nifti(kFixtureDir + fixture["inputs"]["label"]["file"].get<std::string>());
      const StaticTransformOptions options = fixture_options(fixture);
      const CaseData fresh = preprocess_case(image, &label, options, name);
      CaseData reused = preprocess_case(image, &label, options, name, &buffers);
      EXPECT_EQ(reused.image, fresh.image) << name << ", pass " << pass;
      EXPECT_EQ(reused.label, fresh.label) << name << ", pass " << pass;
      EXPECT_EQ(reused.spatial_shape, fresh.spatial_shape) << name;
      EXPECT_EQ(reused.affine, fresh.affine) << name;
      give_back(reused, buffers);
      buffers.floats.give(std::move(image.data));
    }
  }
  EXPECT_LE(buffers.floats.spares(), BufferPool<float>::kMaxSpares);
}

// preprocess_case resamples from the NIfTI voxel order and transposes only the resampled volume;
// it must give exactly what the stage-by-stage chain gives (which the MONAI comparisons pin),
// on every fixture (LPS, oblique, scaled int16, NIfTI-2, .5 ties, a zero channel) and with
// several threads.
TEST(StaticTransforms, TheWholeChainEqualsItsStagesBitForBit) {
  const std::vector<std::string> names = {"lps_aniso", "oblique",   "int16_scaled",
                                          "nifti2",    "half_ties", "zeros_channel"};
  for (const std::string& name : names) {
    const auto fixture = manifest()["cases"][name];
    const NiftiVolume image =
        read_nifti(kFixtureDir + fixture["inputs"]["image"]["file"].get<std::string>());
    const NiftiVolume label =
        read_nifti(kFixtureDir + fixture["inputs"]["label"]["file"].get<std::string>());
    for (const int threads : {1, 3}) {
      StaticTransformOptions options = fixture_options(fixture);
      options.threads = threads;
      for (const bool labelled : {true, false}) {
        SCOPED_TRACE(name + (labelled ? " labelled" : " unlabelled") + ", " +
                     std::to_string(threads) + " threads");
        const NiftiVolume* label_or_null = labelled ? &label : nullptr;
        CaseData stages = to_channel_first(image, label_or_null, options, name);
        const SpacingResult spaced =
            spacing(stages, options.pixdim, threads, options.max_output_bytes);
        orient_ras(stages, threads);
        if (options.normalize) normalize_intensity_nonzero(stages);
        const CaseData whole = preprocess_case(image, label_or_null, options, name);
        EXPECT_EQ(whole.spatial_shape, stages.spatial_shape);
        EXPECT_EQ(whole.affine, stages.affine);
        EXPECT_EQ(whole.original.spatial_shape, stages.original.spatial_shape);
        EXPECT_EQ(whole.original.affine, stages.original.affine);
        EXPECT_EQ(whole.image_channels, stages.image_channels);
        EXPECT_EQ(whole.label_channels, stages.label_channels);
        EXPECT_TRUE(whole.image == stages.image) << "resampled " << spaced.resampled;
        EXPECT_TRUE(whole.label == stages.label);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StaticTransformsMonai,
                         ::testing::Values("lps_aniso", "oblique", "int16_scaled", "nifti2",
                                           "zeros_channel", "half_ties"));

TEST(StaticTransforms, ManifestListsOnlyTestedCases) {
  const auto m = manifest();
  std::vector<std::string> names;
  for (const auto& [name, value] : m["cases"].items()) names.push_back(name);
  EXPECT_EQ(names.size(), 6u) << "a new fixture case needs adding to INSTANTIATE_TEST_SUITE_P";
}

// ----------------------------------------------------------------------------- synthetic cases

NiftiVolume volume(std::array<int64_t, 3> shape, int64_t channels, float fill) {
  NiftiVolume v;
  v.dim = {shape[0], shape[1], shape[2], channels};
  v.ndim = channels > 1 ? 4 : 3;
  v.data.assign(shape[0] * shape[1] * shape[2] * channels, fill);
  return v;
}

std::string client_error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const ClientError& e) {
    return e.what();
  }
  return "";
}

// The same comparison on cases MONAI has never been checked against here: the project's MONAI
// (scripts/setup.sh installs it) writes freshly drawn geometry (random shapes, voxel sizes,
// rotations, translations and pixdims for each kind of case: LPS, oblique qform-only, int16 with
// scaling, NIfTI-2, ...) and its own outputs, and medseg must reproduce them.
TEST(StaticTransformsLiveMonai, FreshCasesWithRandomGeometryMatchMonai) {
  for (const int seed : {11, 12}) {
    testing::TempDir dir;
    const testing::CommandResult generated = testing::run_python(
        "tests/data/monai/make_fixtures.py --static-only --random-geometry --seed " +
        std::to_string(seed) + " --out " + dir.path());
    ASSERT_EQ(generated.exit_code, 0) << generated.output;
    const nlohmann::json fresh = manifest(dir.path() + "/");
    ASSERT_EQ(fresh["cases"].size(), 6u);
    for (const auto& [name, fixture] : fresh["cases"].items()) {
      SCOPED_TRACE("seed " + std::to_string(seed) + ", case " + name + ": " +
                   fixture["description"].get<std::string>());
      expect_matches_monai_after_each_stage(dir.path() + "/", name, fixture);
    }
  }
}

// The image is resampled and reoriented slab by slab when the orientation keeps every axis in
// place: for every flip of the three axes (and for permuted axes, which take the whole-volume
// path), with a plane count that is not a multiple of the slab's, on 1 and 3 threads, the
// result equals the stages run one after another.
TEST(StaticTransforms, SlabsOfEveryFlipAndPermutationEqualTheStagesBitForBit) {
  NiftiVolume image = volume({37, 29, 23}, 2, 0.0f);
  for (size_t i = 0; i < image.data.size(); ++i) {
    image.data[i] = static_cast<float>((i * 7919) % 1000) * 0.37f - 40.0f;
  }
  NiftiVolume label = volume({37, 29, 23}, 1, 0.0f);
  for (size_t i = 0; i < label.data.size(); ++i) {
    label.data[i] = static_cast<float>((i / 97) % 4);
  }
  const std::array<double, 3> zooms{1.0, 1.1, 1.3};
  int checked = 0;
  for (int flips = 0; flips < 9; ++flips) {
    // 0-7: each axis maybe flipped; 8: x and y swapped (voxel x runs along world y).
    Affine affine{};
    affine[3][3] = 1.0;
    for (int a = 0; a < 3; ++a) {
      const int world = flips == 8 && a < 2 ? 1 - a : a;
      affine[world][a] = (flips < 8 && ((flips >> a) & 1) ? -1.0 : 1.0) * zooms[a];
      affine[world][3] = 3.0 * a - 10.0;
    }
    image.affine = affine;
    label.affine = affine;
    for (const int threads : {1, 3}) {
      SCOPED_TRACE("orientation " + std::to_string(flips) + ", " + std::to_string(threads) +
                   " threads");
      StaticTransformOptions options;
      options.expected_channels = 0;
      options.pixdim = {1.5, 1.6, 1.9};  // 23 planes of 1.3 mm -> 16 of 1.9 mm
      options.threads = threads;
      CaseData stages = to_channel_first(image, &label, options, "slabs");
      const SpacingResult spaced =
          spacing(stages, options.pixdim, threads, options.max_output_bytes);
      ASSERT_TRUE(spaced.resampled);
      orient_ras(stages, threads);
      normalize_intensity_nonzero(stages);
      const CaseData whole = preprocess_case(image, &label, options, "slabs");
      EXPECT_EQ(whole.spatial_shape, stages.spatial_shape);
      EXPECT_EQ(whole.affine, stages.affine);
      EXPECT_TRUE(whole.image == stages.image);
      EXPECT_TRUE(whole.label == stages.label);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 18);
}

// An image kept as raw int16 (read with voxels_in_place from an unscaled int16 file) gives the
// bits of the same image as floats on every path: resampled in slabs from its int16 voxels, and
// widened first where the grid already matches or the orientation permutes the axes.
TEST(StaticTransforms, RawInt16ImagesEqualTheirFloatsOnEveryPath) {
  testing::TempDir dir;
  NiftiVolume source = volume({33, 27, 21}, 3, 0.0f);
  for (size_t i = 0; i < source.data.size(); ++i) {
    source.data[i] = static_cast<float>(static_cast<int64_t>(i * 7919) % 4000 - 500);
  }
  NiftiReadOptions in_place;
  in_place.voxels_in_place = true;
  for (const bool swap_xy : {false, true}) {
    for (const bool resampled : {true, false}) {
      SCOPED_TRACE(std::string(swap_xy ? "axes permuted" : "axes in place") +
                   (resampled ? ", resampled" : ", on its grid"));
      source.affine = Affine{};
      source.affine[3][3] = 1.0;
      source.affine[swap_xy ? 1 : 0][0] = -1.0;  // LPS-like: x flipped
      source.affine[swap_xy ? 0 : 1][1] = -1.2;
      source.affine[2][2] = 1.4;
      const std::string path = dir.file("image.nii.gz");
      write_nifti(path, source, NiftiDataType::kInt16);
      const NiftiVolume floats = read_nifti(path);
      const NiftiVolume raw = read_nifti(path, in_place);
      ASSERT_TRUE(raw.raw_int16);
      StaticTransformOptions options;
      options.expected_channels = 0;
      options.pixdim =
          resampled ? std::array<double, 3>{1.6, 1.5, 2.1} : std::array<double, 3>{1.0, 1.2, 1.4};
      for (const int threads : {1, 3}) {
        options.threads = threads;
        CaseBuffers buffers;
        const CaseData expected = preprocess_case(floats, nullptr, options, "int16");
        const CaseData actual = preprocess_case(raw, nullptr, options, "int16", &buffers);
        EXPECT_EQ(actual.spatial_shape, expected.spatial_shape);
        EXPECT_EQ(actual.affine, expected.affine);
        EXPECT_TRUE(actual.image == expected.image) << threads << " threads";
      }
    }
  }
}

TEST(StaticTransforms, RejectsLabelWithAnotherShape) {
  const NiftiVolume image = volume({8, 8, 6}, 4, 1.0f);
  const NiftiVolume label = volume({8, 8, 5}, 1, 0.0f);
  const std::string message =
      client_error_of([&] { to_channel_first(image, &label, {}, "BRATS_007"); });
  EXPECT_NE(message.find("BRATS_007"), std::string::npos) << message;
  EXPECT_NE(message.find("8x8x5"), std::string::npos) << message;
  EXPECT_NE(message.find("8x8x6"), std::string::npos) << message;
}

TEST(StaticTransforms, RejectsLabelWithAnotherAffine) {
  const NiftiVolume image = volume({8, 8, 6}, 4, 1.0f);
  NiftiVolume label = volume({8, 8, 6}, 1, 0.0f);
  label.affine[0][3] = 0.5;
  const std::string message =
      client_error_of([&] { to_channel_first(image, &label, {}, "BRATS_007"); });
  EXPECT_NE(message.find("BRATS_007"), std::string::npos) << message;
  EXPECT_NE(message.find("affine"), std::string::npos) << message;
  // Round-off well below 1e-3 is accepted.
  label.affine[0][3] = 1e-5;
  EXPECT_EQ(client_error_of([&] { to_channel_first(image, &label, {}, "BRATS_007"); }), "");
}

TEST(StaticTransforms, RejectsWrongModalityCount) {
  const NiftiVolume image = volume({8, 8, 6}, 3, 1.0f);
  const std::string message = client_error_of([&] { to_channel_first(image, nullptr, {}, "c1"); });
  EXPECT_NE(message.find("c1"), std::string::npos) << message;
  EXPECT_NE(message.find("3 modalities"), std::string::npos) << message;
  EXPECT_NE(message.find("expected 4"), std::string::npos) << message;
}

TEST(StaticTransforms, RejectsAllZeroChannelUnlessAllowed) {
  NiftiVolume image = volume({4, 4, 4}, 4, 1.0f);
  std::fill(image.data.begin() + 2 * 64, image.data.begin() + 3 * 64, 0.0f);
  const std::string message = client_error_of([&] { to_channel_first(image, nullptr, {}, "c2"); });
  EXPECT_NE(message.find("channel 2"), std::string::npos) << message;
  StaticTransformOptions options;
  options.allow_empty_channels = true;
  EXPECT_EQ(client_error_of([&] { to_channel_first(image, nullptr, options, "c2"); }), "");
}

TEST(StaticTransforms, ThreeDimensionalImageIsOneChannel) {
  const NiftiVolume image = volume({4, 5, 6}, 1, 2.0f);
  StaticTransformOptions options;
  options.expected_channels = 1;
  const CaseData data = to_channel_first(image, nullptr, options, "mono");
  EXPECT_EQ(data.image_channels, 1);
  EXPECT_EQ(data.label_channels, 0);
  EXPECT_EQ(data.spatial_shape, (std::array<int64_t, 3>{4, 5, 6}));
}

TEST(StaticTransforms, ChannelFirstIsCOrder) {
  NiftiVolume image = volume({3, 4, 5}, 2, 0.0f);
  for (size_t i = 0; i < image.data.size(); ++i) image.data[i] = static_cast<float>(i + 1);
  StaticTransformOptions options;
  options.expected_channels = 2;
  const CaseData data = to_channel_first(image, nullptr, options, "order");
  // (c, x, y, z) = (1, 2, 3, 4): NIfTI index x + 3 (y + 4 (z + 5 c)).
  EXPECT_EQ(data.image[((1 * 3 + 2) * 4 + 3) * 5 + 4], 1.0f + 2 + 3 * (3 + 4 * (4 + 5 * 1)));
}

TEST(StaticTransforms, AxisAlignedDownsamplingShapeAndAffine) {
  // Task01 geometry (LPS, 1 mm): 240x240x155 -> 160x160x78 at 1.5, 1.5, 2 mm, then RAS.
  CaseData data;
  data.case_id = "task01";
  data.spatial_shape = {240, 240, 155};
  data.image_channels = 1;
  data.image.assign(240 * 240 * 155, 3.0f);
  data.affine = identity_affine();
  data.affine[0][0] = -1.0;
  data.affine[1][1] = -1.0;
  data.affine[0][3] = 120.0;
  const SpacingResult result = spacing(data, {1.5, 1.5, 2.0});
  EXPECT_TRUE(result.resampled);
  EXPECT_EQ(data.spatial_shape, (std::array<int64_t, 3>{160, 160, 78}));
  EXPECT_DOUBLE_EQ(data.affine[0][0], -1.5);
  EXPECT_DOUBLE_EQ(data.affine[2][2], 2.0);
  EXPECT_DOUBLE_EQ(data.affine[0][3], 120.0);
  for (float v : data.image) ASSERT_FLOAT_EQ(v, 3.0f);  // constant stays constant
  orient_ras(data);
  EXPECT_DOUBLE_EQ(data.affine[0][0], 1.5);
  EXPECT_DOUBLE_EQ(data.affine[0][3], 120.0 - 1.5 * 159);
  EXPECT_DOUBLE_EQ(data.affine[1][3], -1.5 * 159);
}

// Broken headers and settings that would resample a small file into gigabytes (issue 14).
TEST(StaticTransforms, NonPhysicalSpacingAndHugeResamplingAreClientErrors) {
  StaticTransformOptions options;
  options.expected_channels = 4;
  for (const double zoom : {1e-30, 1e30}) {
    NiftiVolume image = volume({8, 8, 6}, 4, 1.0f);
    image.affine[0][0] = zoom;
    testing::expect_client_error([&] { preprocess_case(image, nullptr, options, "tiny"); },
                                 {"case 'tiny'", "voxel spacing", "expected 0.001000 to 1000"});
  }
  // 1 mm voxels resampled to 0.01 mm: 1,000,000 times the voxels.
  const NiftiVolume image = volume({40, 40, 30}, 4, 1.0f);
  options.pixdim = {0.01, 0.01, 0.01};
  options.max_output_bytes = int64_t{512} << 20;
  testing::expect_client_error([&] { preprocess_case(image, nullptr, options, "zoomed"); },
                               {"case 'zoomed'", "3901x3901x2901", "data.max_case_mb"});
}

// An image not known to be finite (its voxels left where they were decompressed) is checked on
// the values the chain computes: a NaN or an infinity is refused naming the case and the volume,
// resampled or not, wherever it sits (here a corner, which the resampling reaches with weight 0).
TEST(StaticTransforms, NonFiniteVoxelsOfAnUncheckedImageAreRefusedNamingTheVolume) {
  for (const std::array<double, 3>& pixdim :
       {std::array<double, 3>{1.0, 1.0, 1.0}, std::array<double, 3>{1.5, 1.5, 2.0}}) {
    for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      StaticTransformOptions options;
      options.pixdim = pixdim;
      NiftiVolume image = volume({9, 8, 7}, 4, 1.0f);
      const int64_t per_volume = 9 * 8 * 7;
      image.data[2 * per_volume + per_volume - 1] = bad;  // volume 2's last voxel
      image.known_finite = true;                          // trusted: not checked again
      EXPECT_NO_THROW(preprocess_case(image, nullptr, options, "trusted"));
      image.known_finite = false;
      try {
        preprocess_case(image, nullptr, options, "BRATS_009");
        ADD_FAILURE() << "expected a NonFiniteImageError for " << bad << ", pixdim " << pixdim[0];
      } catch (const NonFiniteImageError& e) {
        EXPECT_EQ(e.volume, 2);
        EXPECT_NE(std::string(e.what()).find("case BRATS_009 has a non-finite voxel value"),
                  std::string::npos)
            << e.what();
      }
    }
  }
}

// A resampled case's checks run on its channels' nonzero sums: intensities near float32's
// largest are finite and pass, while an Inf and a -Inf in one channel (whose sum is NaN) are
// refused, naming that channel.
TEST(StaticTransforms, HugeFiniteIntensitiesPassAndInfinitiesOfBothSignsAreRefused) {
  StaticTransformOptions options;
  options.pixdim = {1.5, 1.5, 2.0};
  NiftiVolume image = volume({9, 8, 7}, 4, 1.0f);
  const int64_t per_volume = 9 * 8 * 7;
  for (int64_t i = 0; i < per_volume; ++i) image.data[i] = i % 2 == 0 ? 1e38f : -1e38f;
  const CaseData huge = preprocess_case(image, nullptr, options, "huge");
  for (const float v : huge.image) ASSERT_TRUE(std::isfinite(v));
  image.data[per_volume] = INFINITY;           // volume 1's first voxel
  image.data[2 * per_volume - 1] = -INFINITY;  // and its last
  try {
    preprocess_case(image, nullptr, options, "BRATS_010");
    ADD_FAILURE() << "expected a NonFiniteImageError";
  } catch (const NonFiniteImageError& e) {
    EXPECT_EQ(e.volume, 1);
  }
}

// Each channel of a resampled case is normalised as soon as it is complete, and the channel an
// error names is the one that is empty as loaded: a constant channel, all zeros once
// normalised, is not it.
TEST(StaticTransforms, TheEmptyChannelNamedIsTheOneThatWasEmpty) {
  StaticTransformOptions options;
  options.pixdim = {1.5, 1.5, 2.0};
  NiftiVolume image = volume({9, 8, 7}, 4, 5.0f);
  const int64_t per_volume = 9 * 8 * 7;
  std::fill(image.data.begin() + 2 * per_volume, image.data.begin() + 3 * per_volume, 0.0f);
  const std::string message =
      testing::client_error_message([&] { preprocess_case(image, nullptr, options, "BRATS_011"); });
  EXPECT_NE(message.find("case 'BRATS_011': image channel 2 is zero everywhere"), std::string::npos)
      << message;
  options.allow_empty_channels = true;
  const CaseData allowed = preprocess_case(image, nullptr, options, "BRATS_011");
  for (const float v : allowed.image) ASSERT_EQ(v, 0.0f);  // constant channels: v - mean = 0
}

TEST(StaticTransforms, NormalizeKeepsZerosAndUsesPopulationStd) {
  CaseData data;
  data.spatial_shape = {1, 1, 4};
  data.image_channels = 2;
  data.image = {0.0f, 1.0f, 3.0f, 0.0f, 0.0f, 5.0f, 5.0f, 5.0f};
  normalize_intensity_nonzero(data);
  EXPECT_EQ(data.image[0], 0.0f);
  EXPECT_FLOAT_EQ(data.image[1], -1.0f);  // mean 2, population std 1
  EXPECT_FLOAT_EQ(data.image[2], 1.0f);
  EXPECT_EQ(data.image[3], 0.0f);
  EXPECT_EQ(data.image[5], 0.0f);  // constant channel: std 0 -> 1, v - mean = 0
}

}  // namespace
}  // namespace medseg

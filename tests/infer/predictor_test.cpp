#include "infer/predictor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>

#include "data/static_transforms.h"
#include "infer/infer_fixtures.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

struct Agreement {
  double all = 0;         // share of voxels with the same value
  double foreground = 0;  // the same over voxels nonzero in either map
};

Agreement agreement(const std::vector<float>& expected, const std::vector<float>& actual) {
  EXPECT_EQ(expected.size(), actual.size());
  int64_t same = 0, foreground = 0, foreground_same = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const bool equal = expected[i] == actual[i];
    same += equal;
    if (expected[i] != 0 || actual[i] != 0) {
      ++foreground;
      foreground_same += equal;
    }
  }
  return {static_cast<double>(same) / expected.size(),
          foreground ? static_cast<double>(foreground_same) / foreground : 1.0};
}

// The "perfect model": the label through the static transforms to [TC, WT, ET], then back.
Agreement round_trip(const SyntheticCase& source, const std::array<double, 3>& pixdim,
                     bool* resampled = nullptr) {
  StaticTransformOptions options;
  options.pixdim = pixdim;
  options.normalize = false;
  CaseData data = to_channel_first(source.image, &source.label, options, "case");
  const SpacingResult spacing_result = spacing(data, pixdim);
  if (resampled) *resampled = spacing_result.resampled;
  orient_ras(data);
  const NiftiVolume back =
      label_map_in_original_grid(data, LabelScheme::kMsd, source.label.header, /*threads=*/2);
  EXPECT_EQ(back.dim, source.label.dim);
  EXPECT_EQ(back.affine, source.label.affine);
  return agreement(source.label.data, back.data);
}

TEST(PredictorTest, ChannelsToLabelValuesInvertsEveryScheme) {
  const struct {
    LabelScheme scheme;
    std::vector<float> values;
  } table[] = {
      {LabelScheme::kMsd, {0, 1, 2, 3}},
      {LabelScheme::kBrats, {0, 1, 2, 4}},
      {LabelScheme::kMonaiTutorial, {0, 1, 2, 3}},
  };
  for (const auto& row : table) {
    const int64_t count = static_cast<int64_t>(row.values.size());
    std::vector<uint8_t> channels(3 * count);
    labels_to_channels(row.values.data(), count, row.scheme, "table", channels.data());
    std::vector<float> back(count, -1.0f);
    channels_to_label_values(channels.data(), count, row.scheme, back.data());
    EXPECT_EQ(back, row.values) << label_scheme_name(row.scheme);
  }
}

TEST(PredictorTest, BackMappingUndoesOrientationExactly) {
  // Spacing equal to the source's: only Orientation (a permutation and flips) to undo.
  const SyntheticCase oblique = testing::oblique_case({32, 28, 24}, 3, 0);
  bool resampled = true;
  const Agreement perfect = round_trip(oblique, testing::kObliqueSpacing, &resampled);
  EXPECT_FALSE(resampled);
  EXPECT_GE(perfect.all, 0.99);
  EXPECT_GE(perfect.foreground, 0.99);
  std::cout << "oblique, pixdim = spacing: agreement " << perfect.all << ", foreground "
            << perfect.foreground << "\n";

  const SyntheticCase lps = make_synthetic_case({32, 28, 24}, 3, 1);  // Task01-like LPS, 1 mm
  const Agreement lps_agreement = round_trip(lps, {1.0, 1.0, 1.0});
  EXPECT_EQ(lps_agreement.all, 1.0);
}

TEST(PredictorTest, BackMappingAfterResamplingAgreesClosely) {
  // Down to 1.5 x 1.5 x 2 mm and back with nearest neighbours loses what the coarse grid cannot
  // hold: compartment borders one or two voxels thick. Foreground agreement (voxels labelled in
  // either map) grows with the size of the structures.
  const struct {
    const char* name;
    SyntheticCase source;
    double min_foreground;
  } cases[] = {
      {"lps 1 mm 48x44x36", make_synthetic_case({48, 44, 36}, 4, 0), 0.75},
      {"oblique 48x44x36", testing::oblique_case({48, 44, 36}, 4, 1), 0.75},
      {"oblique 96x88x72", testing::oblique_case({96, 88, 72}, 4, 1), 0.85},
  };
  for (const auto& row : cases) {
    bool resampled = false;
    const Agreement result = round_trip(row.source, {1.5, 1.5, 2.0}, &resampled);
    EXPECT_TRUE(resampled) << row.name;
    EXPECT_GE(result.all, 0.99) << row.name;
    EXPECT_GE(result.foreground, row.min_foreground) << row.name;
    std::cout << row.name << ", pixdim 1.5 x 1.5 x 2.0: agreement " << result.all << ", foreground "
              << result.foreground << "\n";
  }
}

TEST(PredictorTest, PredictsInTheSourceGridWithTheSourceHeader) {
  TempDir dir;
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());
  PredictorOptions options;
  options.device = "cpu";
  options.keep_probabilities = true;
  CasePredictor predictor(dir.file("model"), options);
  EXPECT_EQ(predictor.label_scheme(), LabelScheme::kMsd);
  EXPECT_EQ(predictor.device_name(), "cpu");

  // Through a file, so the header is what read_nifti makes of it.
  const SyntheticCase generated = testing::oblique_case({32, 28, 24}, 5, 0);
  write_nifti(dir.file("case.nii.gz"), generated.image, NiftiDataType::kFloat32);
  const NiftiVolume image = read_nifti(dir.file("case.nii.gz"));
  const Prediction prediction = predictor.predict(image, "case");

  const NiftiVolume& label_map = prediction.label_map;
  EXPECT_EQ(label_map.ndim, 3);
  EXPECT_EQ(label_map.dim, (std::array<int64_t, 4>{32, 28, 24, 1}));
  write_nifti(dir.file("label.nii.gz"), label_map, NiftiDataType::kUint8);
  const NiftiVolume written = read_nifti(dir.file("label.nii.gz"));
  EXPECT_EQ(written.header.datatype, static_cast<int>(NiftiDataType::kUint8));
  EXPECT_EQ(written.header.sform_code, 2);
  EXPECT_EQ(written.header.qform_code, 1);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(written.affine[r][c], image.affine[r][c], 1e-5);
  }
  for (int axis = 0; axis < 3; ++axis) EXPECT_NEAR(written.pixdim[axis], image.pixdim[axis], 1e-5);
  const std::set<float> allowed = {0, 1, 2, 3};
  for (float value : written.data) ASSERT_TRUE(allowed.count(value)) << value;

  // Probabilities: [X', Y', Z', 3] in the preprocessed (RAS, 1.5 x 1.5 x 2 mm) grid.
  const NiftiVolume& probabilities = prediction.probabilities;
  EXPECT_EQ(probabilities.ndim, 4);
  EXPECT_EQ(probabilities.dim[3], 3);
  for (int axis = 0; axis < 3; ++axis) {
    EXPECT_EQ(probabilities.dim[axis], prediction.preprocessed_shape[axis]);
  }
  EXPECT_GT(probabilities.affine[0][0], 0.0);  // RAS
  for (float value : probabilities.data) {
    ASSERT_GE(value, 0.0f);
    ASSERT_LE(value, 1.0f);
  }
}

// Training refuses NaN/Inf voxels; inference must too, instead of an all-0 or NaN map (issue 14).
TEST(PredictorTest, NonFiniteVoxelsAreAClientErrorNamingTheCase) {
  TempDir dir;
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());
  PredictorOptions options;
  options.device = "cpu";
  CasePredictor predictor(dir.file("model"), options);
  NiftiVolume image = testing::oblique_case({20, 18, 16}, 5, 0).image;
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    image.data[20 * 18 * 16 * 2 + 7] = bad;
    testing::expect_client_error([&] { predictor.predict(image, "BRATS_666"); },
                                 {"case BRATS_666", "non-finite voxel", "in volume 2"});
  }
}

TEST(PredictorTest, ThresholdsThroughTheSchemeOfTheModel) {
  // Threshold 0: every channel set -> the ET value of each scheme everywhere; threshold 1:
  // nothing set (a random tiny network never saturates the sigmoid) -> 0 everywhere.
  TempDir dir;
  const SyntheticCase generated = make_synthetic_case({24, 24, 16}, 6, 0);
  const struct {
    const char* scheme;
    double threshold;
    float expected;
  } table[] = {{"msd", 0.0, 3}, {"brats", 0.0, 4}, {"monai_tutorial", 0.0, 2}, {"msd", 1.0, 0}};
  for (const auto& row : table) {
    const std::string folder = dir.file(std::string("model_") + row.scheme);
    testing::write_tiny_model(
        folder, testing::tiny_model_config({std::string("data.label_scheme=") + row.scheme}));
    PredictorOptions options;
    options.device = "cpu";
    options.overrides = {"sliding_window.threshold=" + std::to_string(row.threshold)};
    CasePredictor predictor(folder, options);
    const Prediction prediction = predictor.predict(generated.image, "case");
    EXPECT_TRUE(prediction.probabilities.data.empty());
    for (float value : prediction.label_map.data) {
      ASSERT_EQ(value, row.expected) << row.scheme << " threshold " << row.threshold;
    }
  }
}

std::string client_error_of(const std::string& model_path, const PredictorOptions& options) {
  try {
    CasePredictor predictor(model_path, options);
  } catch (const ClientError& error) {
    return error.what();
  }
  return "(no ClientError)";
}

TEST(PredictorTest, LoadsModelTarGzAndPrefersBestModel) {
  TempDir dir;
  const ResolvedConfig config = testing::tiny_model_config();
  testing::write_tiny_model(dir.file("model"), config, "model.pth", 1);
  testing::write_tiny_model(dir.file("model"), config, "best_model.pth", 2);
  PredictorOptions options;
  options.device = "cpu";
  EXPECT_EQ(CasePredictor(dir.file("model"), options).weights_file(),
            dir.file("model/best_model.pth"));
  options.weights = "model.pth";
  EXPECT_EQ(CasePredictor(dir.file("model"), options).weights_file(), dir.file("model/model.pth"));
  options.weights = "";

  // SageMaker's artifact: the files at the archive root. Extracted under $TMPDIR, then removed.
  ASSERT_EQ(
      testing::run_shell("tar -czf " + dir.file("model.tar.gz") + " -C " + dir.file("model") + " .")
          .exit_code,
      0);
  fs::create_directories(dir.file("tmp"));
  const char* previous = std::getenv("TMPDIR");
  const std::string saved = previous ? previous : "";
  setenv("TMPDIR", dir.file("tmp").c_str(), 1);
  const std::string archive_weights =
      CasePredictor(dir.file("model.tar.gz"), options).weights_file();
  const bool temporary_removed = fs::is_empty(dir.file("tmp"));
  if (previous) {
    setenv("TMPDIR", saved.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
  EXPECT_EQ(archive_weights, dir.file("model.tar.gz") + ":best_model.pth");
  EXPECT_TRUE(temporary_removed);

  // A folder holding only model.tar.gz (the SageMaker `model` channel).
  fs::create_directories(dir.file("channel"));
  fs::copy_file(dir.file("model.tar.gz"), dir.file("channel/model.tar.gz"));
  EXPECT_EQ(CasePredictor(dir.file("channel"), options).weights_file(),
            dir.file("channel/model.tar.gz") + ":best_model.pth");
  // A .pth file names the weights directly.
  EXPECT_EQ(CasePredictor(dir.file("model/model.pth"), options).weights_file(),
            dir.file("model/model.pth"));
}

TEST(PredictorTest, BadModelsAreClientErrorsNamingTheFile) {
  TempDir dir;
  PredictorOptions options;
  options.device = "cpu";
  const ResolvedConfig config = testing::tiny_model_config();

  // Missing model path.
  EXPECT_NE(client_error_of(dir.file("nowhere"), options).find(dir.file("nowhere")),
            std::string::npos);

  // No medseg_config.yaml beside the weights.
  testing::write_tiny_model(dir.file("no_config"), config);
  fs::remove(dir.file("no_config/medseg_config.yaml"));
  EXPECT_NE(client_error_of(dir.file("no_config"), options)
                .find(dir.file("no_config/medseg_config.yaml")),
            std::string::npos);

  // Weights of another architecture than medseg_config.yaml says.
  testing::write_tiny_model(dir.file("mismatch"),
                            testing::tiny_model_config({"model.channels=[4, 8, 32]"}));
  testing::write_text(dir.file("mismatch/medseg_config.yaml"), config_to_yaml(config));
  const std::string mismatch = client_error_of(dir.file("mismatch"), options);
  EXPECT_NE(mismatch.find(dir.file("mismatch/model.pth")), std::string::npos) << mismatch;

  // A --weights name that is not there lists what is.
  testing::write_tiny_model(dir.file("good"), config);
  options.weights = "epoch_3.pth";
  const std::string missing_weights = client_error_of(dir.file("good"), options);
  EXPECT_NE(missing_weights.find(dir.file("good/epoch_3.pth")), std::string::npos);
  EXPECT_NE(missing_weights.find("model.pth"), std::string::npos);
  options.weights = "";

  // An archive that is not one.
  testing::write_text(dir.file("model.tar.gz"), "not a tar file");
  const std::string archive = client_error_of(dir.file("model.tar.gz"), options);
  EXPECT_NE(archive.find(dir.file("model.tar.gz")), std::string::npos) << archive;

  // Inside an archive: errors name the archive, not the temporary folder (issue 14), and a
  // member that is a symbolic link out of the archive is refused.
  testing::write_tiny_model(dir.file("packed"), config);
  fs::remove(dir.file("packed/medseg_config.yaml"));
  ASSERT_EQ(testing::run_shell("tar -czf " + dir.file("packed.tar.gz") + " -C " +
                               dir.file("packed") + " .")
                .exit_code,
            0);
  const std::string packed = client_error_of(dir.file("packed.tar.gz"), options);
  EXPECT_NE(packed.find(dir.file("packed.tar.gz") + ":"), std::string::npos) << packed;
  EXPECT_EQ(packed.find("medseg-tmp"), std::string::npos) << packed;
  testing::write_tiny_model(dir.file("linked"), config);
  fs::remove(dir.file("linked/model.pth"));
  fs::create_symlink(dir.file("good/model.pth"), dir.file("linked/model.pth"));
  ASSERT_EQ(testing::run_shell("tar -czf " + dir.file("linked.tar.gz") + " -C " +
                               dir.file("linked") + " .")
                .exit_code,
            0);
  const std::string linked = client_error_of(dir.file("linked.tar.gz"), options);
  EXPECT_NE(linked.find("member model.pth is a symbolic link"), std::string::npos) << linked;

  // A model with 4 input channels refuses a 3-D image (ClientError from the transforms).
  CasePredictor predictor(dir.file("good"), options);
  NiftiVolume single = make_synthetic_case({24, 24, 16}, 0, 0).label;
  EXPECT_THROW(predictor.predict(single, "single"), ClientError);
}

}  // namespace
}  // namespace medseg

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "infer/infer_fixtures.h"
#include "io/nifti_volume.h"
#include "test_support.h"

namespace medseg {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::run_medseg;
using testing::TempDir;

// A Decathlon folder: two synthetic training cases (`medseg synth`, Task01's LPS 1 mm grid) and
// one oblique test case listed under "test", without a label.
void write_decathlon_input(const std::string& folder) {
  const CommandResult synth = run_medseg(
      {"synth", "--out", folder, "--cases", "2", "--shape", "32", "28", "24", "--seed", "1"});
  ASSERT_EQ(synth.exit_code, 0) << synth.output;
  fs::create_directories(folder + "/imagesTs");
  const SyntheticCase oblique = testing::oblique_case({30, 26, 20}, 2, 0);
  write_nifti(folder + "/imagesTs/BRATS_900.nii.gz", oblique.image, NiftiDataType::kFloat32);
  nlohmann::json dataset = nlohmann::json::parse(testing::read_text(folder + "/dataset.json"));
  dataset["test"] = {"./imagesTs/BRATS_900.nii.gz"};
  testing::write_text(folder + "/dataset.json", dataset.dump(2));
}

// The label map has the image's grid and header, uint8 values of the msd scheme.
void expect_label_map_of(const std::string& label_file, const std::string& image_file) {
  SCOPED_TRACE(label_file);
  const NiftiVolume label = read_nifti(label_file);
  const NiftiVolume image = read_nifti(image_file);
  EXPECT_EQ(label.ndim, 3);
  for (int axis = 0; axis < 3; ++axis) EXPECT_EQ(label.dim[axis], image.dim[axis]);
  EXPECT_EQ(label.header.datatype, static_cast<int>(NiftiDataType::kUint8));
  EXPECT_EQ(label.header.sform_code, image.header.sform_code);
  EXPECT_EQ(label.header.qform_code, image.header.qform_code);
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) EXPECT_NEAR(label.affine[r][c], image.affine[r][c], 1e-5);
  }
  const std::set<float> allowed = {0, 1, 2, 3};
  for (float value : label.data) ASSERT_TRUE(allowed.count(value)) << value;
}

TEST(InferCommandTest, DecathlonFolderToLabelMapsInTheOriginalGrids) {
  TempDir dir;
  write_decathlon_input(dir.file("data"));
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());
  const CommandResult result =
      run_medseg({"infer", "--model", dir.file("model"), "--input", dir.file("data"), "--output",
                  dir.file("out"), "--probabilities", "--device", "cpu"});
  ASSERT_EQ(result.exit_code, 0) << result.output;

  const std::vector<std::pair<std::string, std::string>> cases = {
      {"BRATS_001", "imagesTr/BRATS_001.nii.gz"},
      {"BRATS_002", "imagesTr/BRATS_002.nii.gz"},
      {"BRATS_900", "imagesTs/BRATS_900.nii.gz"}};
  for (const auto& [case_id, image] : cases) {
    expect_label_map_of(dir.file("out/" + case_id + ".nii.gz"), dir.file("data/" + image));
    const NiftiVolume probabilities =
        read_nifti(dir.file("out/" + case_id + "_probabilities.nii.gz"));
    EXPECT_EQ(probabilities.ndim, 4);
    EXPECT_EQ(probabilities.dim[3], 3);
    EXPECT_EQ(probabilities.header.datatype, static_cast<int>(NiftiDataType::kFloat32));
    // One line per case with its seconds.
    EXPECT_NE(result.output.find("case " + case_id + " ("), std::string::npos) << result.output;
  }
  const nlohmann::json summary =
      nlohmann::json::parse(testing::read_text(dir.file("out/inference_summary.json")));
  ASSERT_EQ(summary["cases"].size(), 3u);
  EXPECT_EQ(summary["succeeded"], 3);
  EXPECT_EQ(summary["failed"], 0);
  for (const auto& entry : summary["cases"]) {
    EXPECT_GT(entry["seconds"].get<double>(), 0.0);
    EXPECT_TRUE(testing::file_exists(entry["output"].get<std::string>()));
  }
  EXPECT_EQ(summary["cases"][2]["original_shape"], nlohmann::json({30, 26, 20}));
}

TEST(InferCommandTest, SingleFileAndModelTarGz) {
  TempDir dir;
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());
  ASSERT_EQ(
      testing::run_shell("tar -czf " + dir.file("model.tar.gz") + " -C " + dir.file("model") + " .")
          .exit_code,
      0);
  const SyntheticCase oblique = testing::oblique_case({28, 24, 20}, 3, 0);
  write_nifti(dir.file("scan.nii"), oblique.image, NiftiDataType::kFloat32);
  const CommandResult result =
      run_medseg({"infer", "--model", dir.file("model.tar.gz"), "--input", dir.file("scan.nii"),
                  "--output", dir.file("out"), "--device", "cpu"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  expect_label_map_of(dir.file("out/scan.nii.gz"), dir.file("scan.nii"));
  EXPECT_FALSE(testing::file_exists(dir.file("out/scan_probabilities.nii.gz")));
}

TEST(InferCommandTest, BratsCaseFoldersAndAnEmptyFolder) {
  TempDir dir;
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());
  // One BraTS case folder: a 3-D file per modality (split from a synthetic 4-D image).
  const SyntheticCase generated = testing::oblique_case({28, 24, 20}, 6, 0);
  const char* modalities[] = {"flair", "t1", "t1ce", "t2"};
  const int64_t voxels = 28 * 24 * 20;
  for (int m = 0; m < 4; ++m) {
    NiftiVolume modality = generated.image;
    modality.ndim = 3;
    modality.dim[3] = 1;
    modality.data.assign(generated.image.data.begin() + m * voxels,
                         generated.image.data.begin() + (m + 1) * voxels);
    fs::create_directories(dir.file("brats/case7"));
    write_nifti(dir.file(std::string("brats/case7/case7_") + modalities[m] + ".nii.gz"), modality,
                NiftiDataType::kFloat32);
  }
  CommandResult result =
      run_medseg({"infer", "--model", dir.file("model"), "--input", dir.file("brats"), "--output",
                  dir.file("out"), "--device", "cpu"});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  expect_label_map_of(dir.file("out/case7.nii.gz"), dir.file("brats/case7/case7_flair.nii.gz"));

  fs::create_directories(dir.file("empty"));
  result = run_medseg({"infer", "--ml-root", dir.file("ml"), "--model", dir.file("model"),
                       "--input", dir.file("empty"), "--output", dir.file("out2")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("no cases found"), std::string::npos) << result.output;
}

// An ML root laid out as SageMaker does for a training job that infers: the `model` channel holds
// the training job's model.tar.gz, the `data` channel images. Returns the root.
std::string make_inference_job(const TempDir& dir, const std::string& hyperparameters) {
  const std::string root = dir.file("ml");
  testing::make_ml_root(root, hyperparameters);
  testing::write_tiny_model(dir.file("trained"), testing::tiny_model_config());
  fs::create_directories(root + "/input/data/model");
  EXPECT_EQ(testing::run_shell("tar -czf " + root + "/input/data/model/model.tar.gz -C " +
                               dir.file("trained") + " .")
                .exit_code,
            0);
  fs::create_directories(root + "/input/data/data");
  const SyntheticCase generated = make_synthetic_case({32, 28, 24}, 4, 0);
  write_nifti(root + "/input/data/data/patient7.nii.gz", generated.image, NiftiDataType::kFloat32);
  return root;
}

TEST(InferCommandTest, SageMakerChannelsWriteToTheModelFolder) {
  TempDir dir;
  const std::string root = make_inference_job(dir, "{}");
  const CommandResult result = run_medseg({"infer", "--ml-root", root});
  ASSERT_EQ(result.exit_code, 0) << result.output;
  expect_label_map_of(root + "/model/patient7.nii.gz", root + "/input/data/data/patient7.nii.gz");
  EXPECT_TRUE(testing::file_exists(root + "/model/inference_summary.json"));
  EXPECT_NE(result.stdout_text.find("infer_seconds_per_case="), std::string::npos);
}

// Launchers that cannot pass arguments (SDK v3's ModelTrainer starts the image with none; every
// SageMaker training job with the bare word `train`) choose infer with the hyperparameter
// `command`, in SDK v2's JSON-encoded form or v3's plain one.
TEST(InferCommandTest, TheCommandHyperparameterRunsInferenceAsATrainingJob) {
  for (const auto& [arguments, hyperparameters] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"train"}, R"({"command": "\"infer\""})"}, {{}, R"({"command": "infer"})"}}) {
    SCOPED_TRACE(hyperparameters);
    TempDir dir;
    const std::string root = make_inference_job(dir, hyperparameters);
    const CommandResult result = run_medseg(arguments, {"MEDSEG_ML_ROOT=" + root});
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("running `medseg infer` (hyperparameter command=infer)"),
              std::string::npos)
        << result.output;
    expect_label_map_of(root + "/model/patient7.nii.gz", root + "/input/data/data/patient7.nii.gz");
  }
}

TEST(InferCommandTest, BadInputIsAClientErrorWithFailureFile) {
  TempDir dir;
  const std::string root = dir.file("ml");
  testing::make_ml_root(root, "{}");
  testing::write_tiny_model(dir.file("model"), testing::tiny_model_config());

  // Missing input.
  CommandResult result = run_medseg({"infer", "--ml-root", root, "--model", dir.file("model"),
                                     "--input", dir.file("missing"), "--output", dir.file("out")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(testing::read_text(root + "/output/failure").find(dir.file("missing")),
            std::string::npos);

  // Model folder without medseg_config.yaml.
  testing::write_tiny_model(dir.file("bare"), testing::tiny_model_config());
  fs::remove(dir.file("bare/medseg_config.yaml"));
  const SyntheticCase generated = make_synthetic_case({24, 24, 16}, 5, 0);
  fs::create_directories(dir.file("images"));
  write_nifti(dir.file("images/good.nii.gz"), generated.image, NiftiDataType::kFloat32);
  result = run_medseg({"infer", "--ml-root", root, "--model", dir.file("bare"), "--input",
                       dir.file("images"), "--output", dir.file("out")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(testing::read_text(root + "/output/failure").find(dir.file("bare/medseg_config.yaml")),
            std::string::npos);

  // Writing next to the inputs must not overwrite them.
  result = run_medseg({"infer", "--ml-root", root, "--model", dir.file("model"), "--input",
                       dir.file("images"), "--output", dir.file("images")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("would overwrite input image"), std::string::npos);
  EXPECT_EQ(read_nifti(dir.file("images/good.nii.gz")).data, generated.image.data);

  // One bad case (a 3-D image for a 4-modality model): the good case is still written, the
  // summary names the bad one, and the command fails.
  write_nifti(dir.file("images/bad.nii.gz"), generated.label, NiftiDataType::kUint8);
  result = run_medseg({"infer", "--ml-root", root, "--model", dir.file("model"), "--input",
                       dir.file("images"), "--output", dir.file("out")});
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_TRUE(testing::file_exists(dir.file("out/good.nii.gz")));
  EXPECT_FALSE(testing::file_exists(dir.file("out/bad.nii.gz")));
  const nlohmann::json summary =
      nlohmann::json::parse(testing::read_text(dir.file("out/inference_summary.json")));
  EXPECT_EQ(summary["failed"], 1);
  EXPECT_NE(testing::read_text(root + "/output/failure").find("bad"), std::string::npos);
}

}  // namespace
}  // namespace medseg

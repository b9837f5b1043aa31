#include "model/model_io.h"

#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "model/monai_fixtures.h"
#include "test_support.h"
#include "torch_test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

using testing::fixture_input;
using testing::fixture_options;
using testing::fixture_output;
using testing::load_fixture_weights;
using testing::max_relative_error;
using testing::TempDir;

void expect_same_state(const UNetImpl& actual, const UNetImpl& expected) {
  const auto expected_parameters = expected.named_parameters();
  ASSERT_EQ(actual.named_parameters().size(), expected_parameters.size());
  for (const auto& item : actual.named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), expected_parameters[item.key()])) << item.key();
  }
}

std::string error_of_load(const std::string& path, UNetImpl& unet) {
  return testing::client_error_message([&] { load_model_pth(path, unet); });
}

// Writes `unet`'s state dict to `path` as torch.save does, with `tensor` as its entry `key`.
void write_state_with(const std::string& path, const UNetImpl& unet, const std::string& key,
                      const torch::Tensor& tensor) {
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& item : unet.named_parameters()) {
    state.insert(item.key(), item.key() == key ? tensor : item.value().detach());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(state));
  testing::write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end()));
}

TEST(ModelIoTest, RoundTripRestoresEveryTensorAndWritesTheConfig) {
  TempDir dir;
  const std::string path = dir.file("model/model.pth");
  std::filesystem::create_directories(dir.file("model"));
  UNet saved(UNetOptions{});
  save_model_pth(path, *saved, "model:\n  channels: [16, 32, 64, 128, 256]\n");

  UNet loaded(UNetOptions{});  // a different random initialisation
  load_model_pth(path, *loaded);
  expect_same_state(*loaded, *saved);
  EXPECT_EQ(model_config_path(path), dir.file("model/medseg_config.yaml"));
  EXPECT_EQ(testing::read_text(model_config_path(path)),
            "model:\n  channels: [16, 32, 64, 128, 256]\n");
  // Only the two finished files remain (no temporaries).
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("model"))) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"medseg_config.yaml", "model.pth"}));
}

// unet/small_state_dict.pt is MONAI's small_res2 state dict written by Python's torch.save.
TEST(ModelIoTest, LoadsPythonTorchSave) {
  UNet unet(fixture_options("small_res2"));
  load_model_pth(testing::monai_fixture("unet/small_state_dict.pt"), *unet);
  UNet reference(fixture_options("small_res2"));
  load_fixture_weights("small_res2", *reference);
  expect_same_state(*unet, *reference);
}

TEST(ModelIoTest, ShapeMismatchNamesTheKeyAndBothShapes) {
  TempDir dir;
  UNet small(fixture_options("small_res2"));
  save_model_pth(dir.file("model.pth"), *small);
  UNet unet(UNetOptions{});
  const torch::Tensor before = unet->named_parameters()["model.0.conv.unit0.conv.weight"].clone();
  const std::string message = error_of_load(dir.file("model.pth"), *unet);
  EXPECT_NE(message.find("key model.0.conv.unit0.conv.weight has shape [4, 4, 3, 3, 3] in the "
                         "file but the model expects [16, 4, 3, 3, 3]"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("more"), std::string::npos) << message;
  // Nothing was modified.
  EXPECT_TRUE(torch::equal(unet->named_parameters()["model.0.conv.unit0.conv.weight"], before));
}

TEST(ModelIoTest, MissingAndUnexpectedKeysAreNamed) {
  TempDir dir;
  UNet res0(fixture_options("small_res0"));
  save_model_pth(dir.file("model.pth"), *res0);
  UNet res2(fixture_options("small_res2"));
  const std::string message = error_of_load(dir.file("model.pth"), *res2);
  EXPECT_NE(message.find("missing key model.0.conv.unit0.conv.weight"), std::string::npos)
      << message;
}

TEST(ModelIoTest, RejectsMissingAndCorruptFiles) {
  TempDir dir;
  UNet unet(fixture_options("small_res0"));
  EXPECT_NE(error_of_load(dir.file("absent.pth"), *unet).find("does not exist"), std::string::npos);
  testing::write_text(dir.file("garbage.pth"), "not a zip file");
  EXPECT_NE(error_of_load(dir.file("garbage.pth"), *unet).find("garbage.pth is not a PyTorch"),
            std::string::npos);
}

// Found by fuzz/fuzz_model: a damaged archive with no end-of-central-directory record made
// torch::jit::pickle_load's vector reader copy 4 kB past the end of its buffer (a heap overflow
// under AddressSanitizer, scripts/test.sh --sanitize). It is a ClientError naming the file.
TEST(ModelIoTest, AnArchiveCutBeforeItsCentralDirectoryIsAClientErrorWithoutAnOverread) {
  UNet unet(testing::harness_network_options());
  const std::string damaged =
      std::string(MEDSEG_SOURCE_DIR) +
      "/tests/data/fuzz_findings/model-without-end-of-central-directory.pth";
  const std::string error = error_of_load(damaged, *unet);
  EXPECT_NE(error.find("model-without-end-of-central-directory.pth is not a PyTorch file"),
            std::string::npos)
      << error;
}

// Found by fuzz/fuzz_model: a weight stored as UInt2 (a bit-packed type LibTorch cannot copy)
// escaped as c10::NotImplementedError, exit 4. Weights that are not floating-point are refused by
// name, the found file's and an int32 one written here.
TEST(ModelIoTest, WeightsThatAreNotFloatingPointAreAClientErrorNamingTheKey) {
  UNet unet(testing::harness_network_options());
  const std::string found =
      std::string(MEDSEG_SOURCE_DIR) + "/tests/data/fuzz_findings/model-with-uint2-weights.pth";
  EXPECT_NE(error_of_load(found, *unet).find("values, expected floating-point weights"),
            std::string::npos)
      << error_of_load(found, *unet);

  TempDir dir;
  const torch::Tensor weight = unet->named_parameters()["model.0.conv.weight"];
  write_state_with(dir.file("model.pth"), *unet, "model.0.conv.weight", weight.to(torch::kInt32));
  const std::string message = error_of_load(dir.file("model.pth"), *unet);
  EXPECT_NE(message.find("key model.0.conv.weight holds Int values, expected floating-point "
                         "weights"),
            std::string::npos)
      << message;
}

// LibTorch's unpickler takes a tensor's sizes from the pickle without comparing them with its
// storage: a weight of the right shape over a storage of two floats read past the buffer.
TEST(ModelIoTest, AWeightLargerThanItsStorageIsAClientErrorNamingTheKey) {
  UNet unet(testing::harness_network_options());
  TempDir dir;
  const torch::Tensor weight = unet->named_parameters()["model.0.conv.weight"];
  write_state_with(dir.file("model.pth"), *unet, "model.0.conv.weight",
                   testing::beyond_its_storage(torch::zeros({2}), weight.sizes()));
  const std::string message = error_of_load(dir.file("model.pth"), *unet);
  EXPECT_NE(message.find("model.0.conv.weight is a tensor of 432 elements whose last one is "
                         "element 431 of a storage holding 2"),
            std::string::npos)
      << message;
}

// A diverged or damaged model (NaN weights) predicted an all-0 map with exit 0 (issue 14).
TEST(ModelIoTest, NonFiniteWeightsAreAClientErrorNamingTheKey) {
  TempDir dir;
  UNet diverged(fixture_options("small_res0"));
  {
    torch::NoGradGuard no_grad;
    diverged->parameters()[0].view({-1})[0] = std::nanf("");
  }
  save_model_pth(dir.file("model.pth"), *diverged);
  UNet unet(fixture_options("small_res0"));
  const std::string message = error_of_load(dir.file("model.pth"), *unet);
  EXPECT_NE(
      message.find(diverged->named_parameters().begin()->key() + " holds NaN or infinite values"),
      std::string::npos)
      << message;
}

// Python's torch.load + MONAI's UNet.load_state_dict(strict=True) accept C++-written model.pth
// files and compute the same output, for the default network and the conv-only and stride-1
// variants, with the project's torch and MONAI (scripts/setup.sh). One Python process.
TEST(ModelIoTest, PythonMonaiLoadsCppModelStrictly) {
  TempDir dir;
  // 32^3: MONAI's InstanceNorm rejects the default network's 1x1x1 bottom at 16^3.
  torch::manual_seed(7);
  const torch::Tensor input = torch::randn({1, 4, 32, 32, 32});
  testing::write_text(dir.file("input.bin"), std::string(static_cast<const char*>(input.data_ptr()),
                                                         input.numel() * sizeof(float)));
  const std::vector<std::string> configs = {"default", "small_res0", "small_res1_s21"};
  std::vector<UNet> networks;
  nlohmann::json jobs = nlohmann::json::array();
  for (const std::string& config : configs) {
    networks.emplace_back(fixture_options(config));  // C++'s own random initialisation
    networks.back()->eval();
    save_model_pth(dir.file(config + ".pth"), *networks.back());
    nlohmann::json kwargs = testing::unet_manifest().at("configs").at(config).at("config");
    kwargs.erase("spatial_dims");
    jobs.push_back({{"model", dir.file(config + ".pth")},
                    {"config", kwargs},
                    {"input", dir.file("input.bin")},
                    {"shape", input.sizes().vec()},
                    {"output", dir.file(config + ".out")}});
  }
  testing::write_text(dir.file("jobs.json"), jobs.dump());
  const auto result =
      testing::run_python("tests/model/monai_load_check.py " + dir.file("jobs.json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  std::cout << result.stdout_text;

  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < configs.size(); ++i) {
    const torch::Tensor output = networks[i]->forward(input);
    torch::Tensor python_output = torch::empty_like(output);
    const std::string bytes = testing::read_text(dir.file(configs[i] + ".out"));
    ASSERT_EQ(bytes.size(), python_output.numel() * sizeof(float)) << configs[i];
    std::memcpy(python_output.data_ptr<float>(), bytes.data(), bytes.size());
    const double error = max_relative_error(output, python_output);
    std::cout << "[ Python   ] " << configs[i] << ": max |C++ - MONAI| / max |MONAI| = " << error
              << "\n";
    EXPECT_LE(error, 1e-4) << configs[i];
  }
}

}  // namespace
}  // namespace medseg

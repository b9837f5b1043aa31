#include "sagemaker/hyperparameters.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

using nlohmann::json;

struct EncodingCase {
  const char* encoded;  // the string value as it appears in hyperparameters.json
  json expected;
};

// Every encoding SageMaker clients use for hyperparameter values.
class HyperparameterEncodingTest : public ::testing::TestWithParam<EncodingCase> {};

TEST_P(HyperparameterEncodingTest, DecodesToTypedValue) {
  EXPECT_EQ(decode_hyperparameter_value(GetParam().encoded), GetParam().expected)
      << "encoded: " << GetParam().encoded;
}

INSTANTIATE_TEST_SUITE_P(
    AllEncodings, HyperparameterEncodingTest,
    ::testing::Values(
        // plain strings, as the console and boto3 send them
        EncodingCase{"10", json(10)}, EncodingCase{"1e-4", json(1e-4)},
        EncodingCase{"-3", json(-3)}, EncodingCase{"adam", json("adam")},
        EncodingCase{"cosine-warm", json("cosine-warm")},
        EncodingCase{"s3://bucket/key.yaml", json("s3://bucket/key.yaml")},
        // JSON-encoded, as the SageMaker Python SDK >= 2 sends them
        EncodingCase{"\"adam\"", json("adam")},
        EncodingCase{"[128, 128, 64]", json({128, 128, 64})}, EncodingCase{"true", json(true)},
        EncodingCase{"false", json(false)}, EncodingCase{"{\"a\": 1}", json({{"a", 1}})},
        EncodingCase{"0.25", json(0.25)},
        // Python repr, as str() of Python values produces them
        EncodingCase{"True", json(true)}, EncodingCase{"False", json(false)},
        EncodingCase{"None", json(nullptr)}, EncodingCase{"[1, 2]", json({1, 2})},
        EncodingCase{"(128, 128, 64)", json({128, 128, 64})}, EncodingCase{"(1,)", json({1})},
        EncodingCase{"{'a': 1}", json({{"a", 1}})},
        EncodingCase{"['adam', 'sgd']", json({"adam", "sgd"})},
        EncodingCase{"[1.5, 1.5, 2.0]", json({1.5, 1.5, 2.0})},
        // things that are not literals stay raw strings
        EncodingCase{"[1, 2", json("[1, 2")}, EncodingCase{"Truex", json("Truex")},
        EncodingCase{"", json("")}, EncodingCase{"nan", json("nan")}));

TEST(HyperparametersTest, DropsSageMakerKeysAndDecodesValues) {
  testing::TempDir dir;
  const std::string path = dir.file("hyperparameters.json");
  testing::write_text(path, R"({
    "epochs": "10",
    "optimizer": "\"adamw\"",
    "roi_size": "[64, 64, 32]",
    "resume": "True",
    "sagemaker_program": "\"train.py\"",
    "sagemaker_submit_directory": "\"s3://b/src.tar.gz\"",
    "_tuning_objective_metric": "val_mean_dice"
  })");
  const std::vector<Hyperparameter> values = read_hyperparameters(path);
  ASSERT_EQ(values.size(), 4u);
  std::map<std::string, json> by_key;
  for (const Hyperparameter& value : values) by_key[value.key] = value.value;
  EXPECT_EQ(by_key.at("epochs"), json(10));
  EXPECT_EQ(by_key.at("optimizer"), json("adamw"));
  EXPECT_EQ(by_key.at("roi_size"), json({64, 64, 32}));
  EXPECT_EQ(by_key.at("resume"), json(true));
}

TEST(HyperparametersTest, MissingFileMeansNone) {
  testing::TempDir dir;
  EXPECT_TRUE(read_hyperparameters(dir.file("absent.json")).empty());
}

TEST(HyperparametersTest, MalformedJsonNamesTheFile) {
  testing::TempDir dir;
  const std::string path = dir.file("hyperparameters.json");
  testing::write_text(path, "{\"epochs\": \"10\",");
  try {
    read_hyperparameters(path);
    FAIL() << "expected a ClientError";
  } catch (const ClientError& error) {
    EXPECT_NE(std::string(error.what()).find(path), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("malformed JSON"), std::string::npos);
  }
}

TEST(HyperparametersTest, NonObjectIsRejected) {
  testing::TempDir dir;
  const std::string path = dir.file("hyperparameters.json");
  testing::write_text(path, "[\"epochs\", 10]");
  EXPECT_THROW(read_hyperparameters(path), ClientError);
}

// Hostile files: each a ClientError naming the file, never a crash or an exit 4 (issue 14).
TEST(HyperparametersTest, HostileFilesAreClientErrorsNamingTheFile) {
  testing::TempDir dir;
  const std::string path = dir.file("hyperparameters.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string(30000, '[') + std::string(30000, ']'), "nested 30000 levels deep"},
      {R"({"learning_rate": 1e400})", "number overflow"},
      {"null", "expected a JSON object of hyperparameter names to values, got null"},
  };
  for (const auto& [text, says] : cases) {
    SCOPED_TRACE(says);
    testing::write_text(path, text);
    testing::expect_client_error([&] { read_hyperparameters(path); }, {path, says});
  }
  std::filesystem::create_directories(dir.file("folder.json"));
  testing::expect_client_error([&] { read_hyperparameters(dir.file("folder.json")); },
                               {"folder.json: is a folder"});
}

TEST(HyperparametersTest, AValueNestedThousandsDeepStaysText) {
  const std::string deep = std::string(20000, '[') + std::string(20000, ']');
  EXPECT_EQ(decode_hyperparameter_value(deep), nlohmann::json(deep));
  const std::string python = std::string(20000, '(') + std::string(20000, ')');
  EXPECT_EQ(decode_hyperparameter_value(python), nlohmann::json(python));
}

}  // namespace
}  // namespace medseg

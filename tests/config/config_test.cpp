#include "config/config.h"

#include <gtest/gtest.h>

#include <regex>

#include "config/config_loader.h"
#include "config/config_schema.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

std::string shipped_config_path() {
  return std::string(MEDSEG_SOURCE_DIR) + "/config/brats_unet.yaml";
}

JobEnvironment environment_with(const std::string& root, const std::string& hyperparameters) {
  testing::make_ml_root(root, hyperparameters);
  return load_job_environment(MlPaths{root});
}

TEST(ConfigSchemaTest, NamesAndAliasesAreUnique) {
  std::set<std::string> seen;
  for (const ConfigField& field : config_schema()) {
    EXPECT_TRUE(seen.insert(field.name).second) << field.name;
    for (const std::string& alias : field.aliases) EXPECT_TRUE(seen.insert(alias).second) << alias;
    EXPECT_FALSE(field.help.empty()) << field.name << " has no help text";
  }
}

TEST(ConfigSchemaTest, ShippedYamlSetsEveryKeyToItsDefault) {
  // The shipped file documents every setting; its values are the built-in defaults, so the
  // defaults table in the README is what a job without overrides runs with.
  ResolvedConfig resolved;
  apply_yaml_file(resolved, shipped_config_path());
  const Config defaults;
  for (const ConfigField& field : config_schema()) {
    EXPECT_EQ(resolved.origin.count(field.name), 1u)
        << field.name << " is missing from config/brats_unet.yaml";
    EXPECT_EQ(YAML::Dump(get_config_field(resolved.config, field)),
              YAML::Dump(get_config_field(defaults, field)))
        << field.name << " differs from its built-in default";
  }
}

TEST(ConfigSchemaTest, ReadmeTableIsTheGeneratedOne) {
  const std::string readme = testing::read_text(std::string(MEDSEG_SOURCE_DIR) + "/README.md");
  EXPECT_NE(readme.find(config_markdown_table()), std::string::npos)
      << "README.md's configuration table is stale: run scripts/update_readme.sh";
}

TEST(ConfigLayeringTest, LaterLayersWin) {
  testing::TempDir root;
  // The config channel's YAML sets epochs and lr; hyperparameters override epochs; --set
  // overrides the batch size.
  testing::write_text(root.file("input/data/config/job.yaml"),
                      "train:\n  epochs: 7\n  batch_size: 3\noptim:\n  learning_rate: 0.01\n");
  const JobEnvironment environment = environment_with(root.path(), R"({"epochs": "12"})");
  ConfigRequest request;
  request.shipped_config = shipped_config_path();
  request.overrides = {"batch_size=5"};
  const ResolvedConfig resolved = resolve_config(environment, request);
  EXPECT_EQ(resolved.config.train.epochs, 12);
  EXPECT_EQ(resolved.config.train.batch_size, 5);
  EXPECT_DOUBLE_EQ(resolved.config.optim.learning_rate, 0.01);
  EXPECT_EQ(resolved.config.model.channels, (std::vector<int>{16, 32, 64, 128, 256}));
  EXPECT_EQ(resolved.origin.at("train.epochs"), environment.paths.hyperparameters_file());
  EXPECT_EQ(resolved.origin.at("train.batch_size"), "--set");
  EXPECT_EQ(resolved.origin.at("optim.learning_rate"), root.file("input/data/config/job.yaml"));
  ASSERT_EQ(resolved.layers.size(), 4u);
}

TEST(ConfigLayeringTest, ConfigFileHyperparameterNamesTheUserYaml) {
  testing::TempDir root;
  testing::write_text(root.file("input/data/config/a.yaml"), "epochs: 2\n");
  testing::write_text(root.file("input/data/config/b.yaml"), "epochs: 4\n");
  const JobEnvironment environment = environment_with(root.path(), R"({"config_file": "b.yaml"})");
  EXPECT_EQ(resolve_config(environment, {}).config.train.epochs, 4);
}

TEST(ConfigLayeringTest, SeveralYamlFilesWithoutConfigFileIsAnError) {
  testing::TempDir root;
  testing::write_text(root.file("input/data/config/a.yaml"), "epochs: 2\n");
  testing::write_text(root.file("input/data/config/b.yaml"), "epochs: 4\n");
  const JobEnvironment environment = environment_with(root.path(), "{}");
  EXPECT_NE(
      testing::client_error_message([&] { resolve_config(environment, {}); }).find("config_file"),
      std::string::npos);
}

TEST(ConfigLayeringTest, SageMakerEncodedHyperparametersBecomeTypedValues) {
  testing::TempDir root;
  const JobEnvironment environment = environment_with(root.path(), R"json({
    "epochs": "20", "learning_rate": "3e-4", "optimizer": "\"adamw\"",
    "roi_size": "[96, 96, 64]", "pixdim": "(1.0, 1.0, 1.5)", "resume": "False",
    "train.amp": "bf16", "model.channels": "[8, 16, 32, 64, 128]",
    "sagemaker_region": "\"us-east-1\"", "_tuning_objective_metric": "val_mean_dice"})json");
  const Config config = resolve_config(environment, {}).config;
  EXPECT_EQ(config.train.epochs, 20);
  EXPECT_DOUBLE_EQ(config.optim.learning_rate, 3e-4);
  EXPECT_EQ(config.optim.name, "adamw");
  EXPECT_EQ(config.augment.roi_size, (std::vector<int>{96, 96, 64}));
  EXPECT_EQ(config.data.pixdim, (std::vector<double>{1.0, 1.0, 1.5}));
  EXPECT_FALSE(config.checkpoint.resume);
  EXPECT_EQ(config.train.amp, "bf16");
  EXPECT_EQ(config.model.channels, (std::vector<int>{8, 16, 32, 64, 128}));
}

struct BadValueCase {
  const char* key;
  const char* value;  // as YAML
  const char* expected_text;
};

class ConfigValidationTest : public ::testing::TestWithParam<BadValueCase> {};

TEST_P(ConfigValidationTest, RejectsWithKeyValueAndExpectation) {
  ResolvedConfig resolved;
  const std::string message = testing::client_error_message(
      [&] { apply_override(resolved, std::string(GetParam().key) + "=" + GetParam().value); });
  EXPECT_NE(message.find(GetParam().value), std::string::npos) << message;
  EXPECT_NE(message.find(GetParam().expected_text), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    BadValues, ConfigValidationTest,
    ::testing::Values(BadValueCase{"epochs", "ten", "train.epochs = 'ten': expected an integer"},
                      BadValueCase{"epochs", "0", "an integer in [1, 1e+06]"},
                      BadValueCase{"epochs", "2.5", "expected an integer"},
                      BadValueCase{"learning_rate", "fast", "a number in [0, 10]"},
                      BadValueCase{"optimizer", "adagrad", "one of: adam, adamw, sgd"},
                      BadValueCase{"roi_size", "[64, 64]", "a list of 3 integers"},
                      BadValueCase{"roi_size", "[64, 64, x]", "a list of 3 integers"},
                      BadValueCase{"resume", "maybe", "true or false"},
                      BadValueCase{"validation_fraction", "1.5", "a number in [0, 0.9]"}));

TEST(ConfigValidationTest, UnknownKeySuggestsTheClosestValidKey) {
  ResolvedConfig resolved;
  EXPECT_NE(testing::client_error_message([&] {
              apply_override(resolved, "epoch=3");
            }).find("unknown key 'epoch' (did you mean 'epochs'?)"),
            std::string::npos);
  EXPECT_NE(testing::client_error_message([&] {
              apply_override(resolved, "train.epoch=3");
            }).find("did you mean 'train.epochs'?"),
            std::string::npos);
  EXPECT_NE(
      testing::client_error_message([&] {
        apply_yaml_text(resolved, "optim:\n  lerning_rate: 1\n", "u.yaml");
      }).find("u.yaml: unknown key 'optim.lerning_rate' (did you mean 'optim.learning_rate'?)"),
      std::string::npos);
}

// A megabyte-long unknown key (issue 14): answered at once, shortened in the message.
TEST(ConfigValidationTest, AHugeUnknownKeyIsShortenedInTheMessage) {
  ResolvedConfig resolved;
  const std::string key(1 << 20, 'k');
  const std::string message =
      testing::client_error_message([&] { apply_override(resolved, key + "=1"); });
  EXPECT_NE(message.find("unknown key 'kkkk"), std::string::npos) << message.substr(0, 200);
  EXPECT_LT(message.size(), 300u);
}

TEST(ConfigValidationTest, CrossFieldRulesNameBothKeys) {
  Config config;
  config.model.strides = {2, 2, 2};
  EXPECT_NE(testing::client_error_message([&] { validate_config(config); }).find("model.channels"),
            std::string::npos);
  config = Config();
  config.augment.roi_size = {100, 128, 64};
  EXPECT_NE(testing::client_error_message([&] { validate_config(config); }).find("multiple of 16"),
            std::string::npos);
}

// Sizes that would allocate terabytes (a batch, an epoch's sample order, the network) are refused
// before anything is allocated, naming the keys (issue 14: they were bad_allocs and exit 4).
TEST(ConfigValidationTest, ResourceBoundsNameTheKeys) {
  Config config;
  config.augment.roi_size = {4096, 4096, 4096};
  testing::expect_client_error(
      [&] { validate_config(config); },
      {"augment.roi_size [4096, 4096, 4096]", "train.batch_size", "at most 16 GiB"});
  config = Config();
  config.train.steps_per_epoch = 2147483647;
  testing::expect_client_error([&] { validate_config(config); },
                               {"train.steps_per_epoch 2147483647", "use more epochs"});
  config = Config();
  config.model.channels = {4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096};
  config.model.strides = {1, 1, 1, 1, 1, 1, 1};
  testing::expect_client_error([&] { validate_config(config); },
                               {"model.channels [4096", "over 256 GiB"});
  EXPECT_NO_THROW(validate_config(Config()));
}

// Hostile configuration files (issue 14): each a ClientError naming the file, read or not.
TEST(ConfigValidationTest, HostileYamlFilesAreClientErrors) {
  testing::TempDir dir;
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"epochs: 2\n---\nepochs: 3\n", "holds several YAML documents"},
      // yaml-cpp's LoadAll never returned on these (found by fuzz/fuzz_config).
      {"&a,", "holds several YAML documents"},
      {"&&&&&&&, \"a\", rTue,*&, \"a\", rTue, None,e]", "holds several YAML documents"},
      {"epochs: " + std::string(5000, '[') + std::string(5000, ']') + "\n",
       "nested 5000 levels deep"},
      {std::string(2 << 20, '#'), "at most 1 MiB"},
  };
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string path = dir.file("c" + std::to_string(i) + ".yaml");
    testing::write_text(path, texts[i].first);
    ResolvedConfig resolved;
    testing::expect_client_error([&] { apply_yaml_file(resolved, path); }, {path, texts[i].second});
  }
  ResolvedConfig resolved;
  testing::expect_client_error([&] { apply_yaml_file(resolved, dir.path()); },
                               {"is not a regular file"});
  testing::expect_client_error([&] { apply_yaml_file(resolved, "/dev/zero"); },
                               {"/dev/zero: is not a regular file"});
}

TEST(ConfigValidationTest, MalformedYamlNamesFileAndLine) {
  ResolvedConfig resolved;
  const std::string message = testing::client_error_message(
      [&] { apply_yaml_text(resolved, "train:\n  epochs: [1, 2\n", "bad.yaml"); });
  EXPECT_NE(message.find("bad.yaml: malformed YAML at line"), std::string::npos) << message;
}

TEST(ConfigPrintTest, YamlRoundTripsAndMarksOverrides) {
  ResolvedConfig resolved;
  apply_override(resolved, "epochs=3");
  apply_override(resolved, "roi_size=[64, 64, 32]");
  const std::string yaml = config_to_yaml(resolved);
  EXPECT_NE(yaml.find("epochs: 3  # from --set"), std::string::npos) << yaml;
  ResolvedConfig reloaded;
  apply_yaml_text(reloaded, yaml, "printed");
  EXPECT_EQ(reloaded.config.train.epochs, 3);
  EXPECT_EQ(reloaded.config.augment.roi_size, (std::vector<int>{64, 64, 32}));
  EXPECT_EQ(config_to_yaml(reloaded).find("epochs: 3  # from --set"), std::string::npos);
}

}  // namespace
}  // namespace medseg

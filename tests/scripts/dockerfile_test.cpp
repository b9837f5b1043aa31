// The Dockerfile cannot be built on the development machines (no Docker engine), so this test
// checks what can be checked by reading it: the SageMaker entrypoint contract, that it builds with
// the same script as CI, and that every path it copies or installs exists where it says.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include "test_support.h"

namespace medseg {
namespace {

std::string source_file(const std::string& relative) {
  return std::string(MEDSEG_SOURCE_DIR) + "/" + relative;
}

// Dockerfile instructions with line continuations joined, comments dropped.
std::vector<std::string> instructions() {
  std::istringstream in(testing::read_text(source_file("Dockerfile")));
  std::vector<std::string> result;
  std::string line, current;
  while (std::getline(in, line)) {
    if (current.empty() && (line.empty() || line[0] == '#')) continue;
    if (!line.empty() && line.back() == '\\') {
      current += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    result.push_back(current + line);
    current.clear();
  }
  return result;
}

std::vector<std::string> starting_with(const std::string& keyword) {
  std::vector<std::string> matches;
  for (const std::string& instruction : instructions()) {
    if (instruction.rfind(keyword + " ", 0) == 0) matches.push_back(instruction);
  }
  return matches;
}

TEST(DockerfileTest, ExecFormEntrypointIsTheBinary) {
  const auto entrypoints = starting_with("ENTRYPOINT");
  ASSERT_EQ(entrypoints.size(), 1u);
  EXPECT_EQ(entrypoints[0], R"(ENTRYPOINT ["/usr/local/bin/medseg"])");
  EXPECT_TRUE(starting_with("CMD").empty()) << "SageMaker passes `train`/`serve` as the command";
}

TEST(DockerfileTest, MultiStageWithSlimRuntime) {
  const auto stages = starting_with("FROM");
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_NE(stages[0].find(" AS build"), std::string::npos);
  EXPECT_NE(stages[1].find("slim"), std::string::npos);
}

TEST(DockerfileTest, TrainAndServeOnPathAndNoTini) {
  const std::string text = testing::read_text(source_file("Dockerfile"));
  EXPECT_NE(text.find("ln -s /usr/local/bin/medseg /usr/local/bin/train"), std::string::npos);
  EXPECT_NE(text.find("ln -s /usr/local/bin/medseg /usr/local/bin/serve"), std::string::npos);
  for (const std::string& instruction : instructions()) {
    EXPECT_EQ(instruction.find("tini"), std::string::npos) << instruction;
  }
}

TEST(DockerfileTest, NothingIsBakedIntoOptMl) {
  for (const std::string& instruction : instructions()) {
    if (instruction.rfind("LABEL", 0) == 0) continue;
    EXPECT_EQ(instruction.find("/opt/ml"), std::string::npos)
        << "SageMaker mounts over /opt/ml: " << instruction;
  }
}

TEST(DockerfileTest, AcceptsBindToPort) {
  const auto labels = starting_with("LABEL");
  ASSERT_EQ(labels.size(), 1u);
  EXPECT_NE(labels[0].find("com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true"),
            std::string::npos);
}

TEST(DockerfileTest, BuildsWithTheScriptCiRuns) {
  const auto runs = starting_with("RUN");
  int setup_runs = 0;
  for (const std::string& run : runs) {
    if (run.find("scripts/setup.sh") != std::string::npos) {
      ++setup_runs;
      EXPECT_NE(run.find("scripts/setup.sh --cuda"), std::string::npos) << run;
      EXPECT_NE(run.find("MEDSEG_INSTALL_PREFIX=/usr/local"), std::string::npos) << run;
      EXPECT_NE(run.find("MEDSEG_BUILD_TESTS=OFF"), std::string::npos) << run;
    }
  }
  EXPECT_EQ(setup_runs, 1);
  const std::string ci = testing::read_text(source_file(".ci/run"));
  EXPECT_NE(ci.find("scripts/test.sh"), std::string::npos);
  const std::string test_script = testing::read_text(source_file("scripts/test.sh"));
  EXPECT_NE(test_script.find("scripts/setup.sh"), std::string::npos);
  EXPECT_NE(test_script.find("scripts/setup.sh --cuda"), std::string::npos)
      << "CI builds the CUDA binary the image ships";
  // setup.sh must honour the variables and the option the Dockerfile uses.
  const std::string setup = testing::read_text(source_file("scripts/setup.sh"));
  for (const char* variable : {"MEDSEG_BUILD_TESTS", "MEDSEG_INSTALL_PREFIX", "MEDSEG_BUILD_DIR"}) {
    EXPECT_NE(setup.find(std::string("${") + variable), std::string::npos) << variable;
  }
  EXPECT_NE(setup.find("--cuda) cuda=ON"), std::string::npos);
}

TEST(DockerfileTest, UsesTheTorchWheelThisBuildUses) {
  // LibTorch comes only from the pinned wheel that setup.sh installs: no other download.
  const std::string text = testing::read_text(source_file("Dockerfile"));
  EXPECT_EQ(text.find("pytorch.org"), std::string::npos);
  EXPECT_EQ(text.find("torch=="), std::string::npos);
  EXPECT_NE(testing::read_text(source_file("scripts/setup.sh")).find("scripts/requirements.txt"),
            std::string::npos);

  // The CUDA toolkit of the build stage is the CUDA version the wheel was built with
  // (torch/version.py: cuda = '13.0' <-> cuda-toolkit-13-0).
  const std::string version_py = testing::read_text(std::string(MEDSEG_TORCH_DIR) + "/version.py");
  std::smatch cuda;
  ASSERT_TRUE(std::regex_search(version_py, cuda, std::regex(R"(\ncuda[^=\n]*=\s*'(\d+)\.(\d+)')")))
      << version_py;
  EXPECT_NE(text.find("ARG CUDA_PACKAGE_VERSION=" + cuda[1].str() + "-" + cuda[2].str()),
            std::string::npos)
      << "torch was built with CUDA " << cuda[1] << "." << cuda[2];

  // The runtime stage copies the wheel's libraries from the virtual environment setup.sh makes,
  // whose site-packages folder is named after the Python version (Debian 12: 3.11).
  const std::string site_packages =
      std::filesystem::path(MEDSEG_TORCH_DIR).parent_path().lexically_relative(MEDSEG_SOURCE_DIR);
  if (site_packages.rfind(".venv/", 0) == 0) {
    EXPECT_NE(text.find("site=/src/" + site_packages + " "), std::string::npos) << site_packages;
  }
  EXPECT_NE(text.find(R"(cp -a "$site"/torch/lib/. "$site"/nvidia/*/lib/. /runtime-libs/)"),
            std::string::npos);
}

TEST(DockerfileTest, CopiedSourcesExistAndInstallPathsMatchTheBinary) {
  for (const std::string& copy : starting_with("COPY")) {
    if (copy.find("--from=") != std::string::npos) continue;
    std::istringstream words(copy);
    std::vector<std::string> parts;
    std::string word;
    while (words >> word) parts.push_back(word);
    ASSERT_GE(parts.size(), 3u) << copy;
    for (size_t i = 1; i + 1 < parts.size(); ++i) {
      EXPECT_TRUE(std::filesystem::exists(source_file(parts[i]))) << copy;
    }
  }
  // The binary looks for its configuration at <exe dir>/../share/medseg/brats_unet.yaml and
  // CMake installs it there; the runtime stage must copy it to the same place.
  const std::string text = testing::read_text(source_file("Dockerfile"));
  EXPECT_NE(text.find("COPY --from=build /usr/local/bin/medseg /usr/local/bin/medseg"),
            std::string::npos);
  EXPECT_NE(text.find("/usr/local/share/medseg/brats_unet.yaml "
                      "/usr/local/share/medseg/brats_unet.yaml"),
            std::string::npos);
  const std::string cmake = testing::read_text(source_file("CMakeLists.txt"));
  EXPECT_NE(cmake.find("install(FILES config/brats_unet.yaml DESTINATION share/medseg)"),
            std::string::npos);
  EXPECT_NE(cmake.find("install(TARGETS medseg RUNTIME DESTINATION bin)"), std::string::npos);
}

TEST(DockerfileTest, InstalledLayoutFindsTheShippedConfig) {
  // Install into a temporary prefix exactly as the image does and check the installed binary
  // resolves the shipped YAML (the layout the runtime stage copies).
  testing::TempDir prefix;
  const std::string build_dir = std::filesystem::path(MEDSEG_BINARY).parent_path().string();
  const testing::CommandResult install =
      testing::run_shell("cmake --install '" + build_dir + "' --prefix '" + prefix.path() + "'");
  ASSERT_EQ(install.exit_code, 0) << install.output;
  testing::TempDir root;
  testing::make_ml_root(root.path(), "{}");
  const testing::CommandResult result =
      // The image finds LibTorch through ld.so.conf; here the wheel's folder stands in for it.
      testing::run_shell("export LD_LIBRARY_PATH='" + std::string(MEDSEG_TORCH_DIR) +
                         "/lib' MEDSEG_ML_ROOT='" + root.path() + "'; '" +
                         prefix.file("bin/medseg") + "' train --print-config 2>&1 && '" +
                         prefix.file("bin/medseg") + "' train --set epochs=2 2>&1");
  EXPECT_NE(result.output.find("config layer: " + prefix.path() + "/share/medseg/brats_unet.yaml"),
            std::string::npos)
      << result.output;
}

}  // namespace
}  // namespace medseg

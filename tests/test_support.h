// Helpers shared by the tests: temporary directories, files, an ML root laid out like /opt/ml,
// and running the medseg binary as SageMaker would.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace medseg::testing {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& relative) const { return path_ + "/" + relative; }
  // The names directly inside, sorted.
  std::vector<std::string> entries() const;

 private:
  std::string path_;
};

// Writes `text` to `path`, creating parent folders.
void write_text(const std::string& path, const std::string& text);
// The same for bytes; a failure to write throws.
void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes);
std::string read_text(const std::string& path);
bool file_exists(const std::string& path);

// Lays out <root>/input/config with the given JSON texts (empty = file not written) and the
// output/model folders, as SageMaker does before starting the container.
void make_ml_root(const std::string& root, const std::string& hyperparameters_json,
                  const std::string& input_data_config_json = "",
                  const std::string& resource_config_json = "");

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
  std::string stdout_text;
};

// Runs the medseg binary with `arguments` (and `env` entries "K=V" added to the environment).
CommandResult run_medseg(const std::vector<std::string>& arguments,
                         const std::vector<std::string>& env = {});

// A TCP port on 127.0.0.1 that was free a moment ago (for a rendezvous between test processes).
int free_loopback_port();

// Runs a shell command line, capturing its output.
CommandResult run_shell(const std::string& command_line);

// Runs `arguments` (a script path relative to the repository, and its options; shell syntax)
// from the repository root with the project's Python (MEDSEG_PYTHON: the virtual environment
// scripts/setup.sh makes, with torch, MONAI and nibabel). A failure's output says so.
CommandResult run_python(const std::string& arguments);

// What TensorBoard's own reader finds in the event files of `folder` (tests/io/read_tensorboard.py:
// scalars by tag as [step, value] pairs, images by tag with their decoded size and outline colour
// counts); a failure of the reader fails the calling test.
nlohmann::json read_tensorboard(const std::string& folder);

}  // namespace medseg::testing

namespace medseg::testing {

// The message of the ClientError that `action` throws; records a test failure (and returns "")
// when it throws none.
std::string client_error_message(const std::function<void()>& action);

// Runs `action`, expecting a ClientError whose message contains every one of `parts`.
void expect_client_error(const std::function<void()>& action,
                         const std::vector<std::string>& parts);

// Raw little-endian float32 values from a file under tests/data (path relative to the repo).
std::vector<float> read_float32_file(const std::string& repo_relative_path);

}  // namespace medseg::testing

namespace medseg::testing {

// Why a test that needs `count` CUDA devices cannot run here ("" when it can): the CPU build, or
// fewer GPUs than needed. GPU tests are named Gpu* (ctest label gpu) and skip with this reason.
std::string missing_cuda_devices(int count = 1);

}  // namespace medseg::testing

// Skips the current test, saying why, unless `count` CUDA devices are usable.
#define MEDSEG_REQUIRE_CUDA_DEVICES(count)                                                        \
  if (const std::string reason = ::medseg::testing::missing_cuda_devices(count); !reason.empty()) \
  GTEST_SKIP() << reason

#include "test_support.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "util/error.h"

namespace medseg::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "medseg-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code error;
  fs::remove_all(path_, error);
}

std::vector<std::string> TempDir::entries() const {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(path_)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_text(path, std::string(bytes.begin(), bytes.end()));
}

int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot find a free loopback port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

bool file_exists(const std::string& path) { return fs::exists(path); }

void make_ml_root(const std::string& root, const std::string& hyperparameters_json,
                  const std::string& input_data_config_json,
                  const std::string& resource_config_json) {
  fs::create_directories(root + "/input/config");
  fs::create_directories(root + "/input/data");
  fs::create_directories(root + "/model");
  fs::create_directories(root + "/output");
  if (!hyperparameters_json.empty()) {
    write_text(root + "/input/config/hyperparameters.json", hyperparameters_json);
  }
  if (!input_data_config_json.empty()) {
    write_text(root + "/input/config/inputdataconfig.json", input_data_config_json);
  }
  if (!resource_config_json.empty()) {
    write_text(root + "/input/config/resourceconfig.json", resource_config_json);
  }
}

namespace {

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

CommandResult run_shell(const std::string& command_line) {
  TempDir scratch;
  const std::string stdout_file = scratch.file("stdout");
  const std::string both_file = scratch.file("both");
  // stdout goes to both files; stderr to the combined one.
  const std::string wrapped = "{ " + command_line + " ; } 2>>" + shell_quote(both_file) +
                              " | tee -a " + shell_quote(both_file) + " > " +
                              shell_quote(stdout_file) + "; exit ${PIPESTATUS[0]}";
  const std::string full = "bash -c " + shell_quote(wrapped) + " </dev/null";
  const int status = std::system(full.c_str());
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.output = read_text(both_file);
  result.stdout_text = read_text(stdout_file);
  return result;
}

CommandResult run_medseg(const std::vector<std::string>& arguments,
                         const std::vector<std::string>& env) {
  std::string command = "env -u MEDSEG_ML_ROOT";
  for (const std::string& entry : env) command += " " + shell_quote(entry);
  command += " " + shell_quote(MEDSEG_BINARY);
  for (const std::string& argument : arguments) command += " " + shell_quote(argument);
  return run_shell(command);
}

}  // namespace medseg::testing

namespace medseg::testing {

std::string client_error_message(const std::function<void()>& action) {
  try {
    action();
  } catch (const ClientError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a ClientError";
  return "";
}

void expect_client_error(const std::function<void()>& action,
                         const std::vector<std::string>& parts) {
  try {
    action();
    ADD_FAILURE() << "expected a ClientError containing '" << parts.front() << "'";
  } catch (const ClientError& error) {
    for (const std::string& part : parts) {
      EXPECT_NE(std::string(error.what()).find(part), std::string::npos)
          << "message: " << error.what() << "\nmissing: " << part;
    }
  }
}

std::vector<float> read_float32_file(const std::string& repo_relative_path) {
  const std::string bytes = read_text(std::string(MEDSEG_SOURCE_DIR) + "/" + repo_relative_path);
  if (bytes.empty() || bytes.size() % sizeof(float) != 0) {
    throw std::runtime_error("cannot read float32 data from " + repo_relative_path);
  }
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

CommandResult run_python(const std::string& arguments) {
  CommandResult result = run_shell("cd " + shell_quote(MEDSEG_SOURCE_DIR) +
                                   " && PYTHONWARNINGS=ignore::FutureWarning " +
                                   shell_quote(MEDSEG_PYTHON) + " " + arguments);
  if (result.exit_code != 0) {
    result.output += "\n(" + std::string(MEDSEG_PYTHON) +
                     " failed: the tests that compare with MONAI need the project's Python "
                     "environment with torch, MONAI and nibabel, which scripts/setup.sh installs)";
  }
  return result;
}

nlohmann::json read_tensorboard(const std::string& folder) {
  const CommandResult result = run_python("tests/io/read_tensorboard.py " + shell_quote(folder));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  if (result.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(result.stdout_text);
}

std::string missing_cuda_devices(int count) {
#ifdef MEDSEG_WITH_CUDA
  const int available = static_cast<int>(torch::cuda::device_count());
  if (available >= count) return "";
  return "needs " + std::to_string(count) + " CUDA device(s); this machine has " +
         std::to_string(available);
#else
  return "needs " + std::to_string(count) +
         " CUDA device(s): this is the CPU build (scripts/setup.sh --cuda builds build-cuda/)";
#endif
}

}  // namespace medseg::testing

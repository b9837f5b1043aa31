#include "util/json_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "util/error.h"

namespace medseg {
namespace fs = std::filesystem;

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_system_error("cannot open " + path);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw_system_error("cannot read " + path);
  return contents.str();
}

nlohmann::json read_json_file(const std::string& path, bool required) {
  std::error_code error;
  if (!fs::exists(path, error)) {
    if (required) throw ClientError(path + ": file not found (expected a JSON file)");
    return nullptr;
  }
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& parse_error) {
    throw ClientError(path + ": malformed JSON (" + parse_error.what() + ")");
  }
}

namespace {

void write_all(int fd, const std::string& text, const std::string& path) {
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_system_error("cannot write " + path);
    }
    written += static_cast<size_t>(n);
  }
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& text) {
  const fs::path target(path);
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string temporary =
      (directory / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid())))
          .string();
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_system_error("cannot create " + temporary);
  try {
    write_all(fd, text, temporary);
    if (::fsync(fd) != 0) throw_system_error("cannot fsync " + temporary);
  } catch (...) {
    ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(temporary.c_str());
    throw_system_error("cannot close " + temporary);
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    ::unlink(temporary.c_str());
    throw_system_error("cannot rename " + temporary + " to " + path);
  }
  const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd >= 0) {
    ::fsync(directory_fd);
    ::close(directory_fd);
  }
}

}  // namespace medseg

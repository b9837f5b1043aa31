#include "sagemaker/failure_file.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "sagemaker/ml_paths.h"
#include "util/file_io.h"

namespace medseg {
namespace fs = std::filesystem;
namespace {

// Creates `path` with `text` unless it exists (O_EXCL: of several processes, one wins). Returns
// false when it existed; throws PlatformError when it cannot be written.
bool write_if_absent(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw_system_error("cannot create " + path);
  }
  try {
    write_all(fd, text.data(), text.size(), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::fsync(fd);
  ::close(fd);
  return true;
}

std::string message_file(const MlPaths& paths) { return paths.output_dir() + "/message"; }

}  // namespace

std::string failure_reason(ErrorKind kind, const std::string& message) {
  std::string reason = std::string(error_kind_name(kind)) + ": ";
  for (const char c : message) {
    if (c == '\n' || c == '\r') {
      reason += ' ';
    } else if (c == '\0') {
      reason += "\\0";  // a NUL would cut the message wherever it is read as a C string
    } else {
      reason += c;
    }
  }
  return reason;
}

bool write_failure_file(const std::string& ml_root, ErrorKind kind, const std::string& message) {
  const MlPaths paths{ml_root};
  std::error_code error;
  if (!fs::is_directory(ml_root, error)) return false;
  const std::string text = failure_reason(kind, message) + "\n";
  try {
    fs::create_directories(paths.output_dir());
    if (!write_if_absent(paths.failure_file(), text)) {
      std::fprintf(stderr, "medseg: %s already holds this job's first error; not replaced\n",
                   paths.failure_file().c_str());
      return false;
    }
    write_if_absent(message_file(paths), text);
    return true;
  } catch (const std::exception& write_error) {
    std::fprintf(stderr, "medseg: could not write %s: %s\n", paths.failure_file().c_str(),
                 write_error.what());
    return false;
  }
}

void clear_stale_failure_files(const std::string& ml_root) {
  const MlPaths paths{ml_root};
  for (const std::string& path : {paths.failure_file(), message_file(paths)}) {
    std::error_code error;
    if (fs::remove(path, error)) {
      spdlog::warn("removed {}, left by an earlier run in this ML root", path);
    } else if (error) {
      spdlog::warn("cannot remove {}, left by an earlier run: {}", path, error.message());
    }
  }
}

}  // namespace medseg

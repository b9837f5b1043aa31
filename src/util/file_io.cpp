#include "util/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace medseg {
namespace fs = std::filesystem;

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    // At most 1 GiB per call: Linux writes at most 2 GiB - 4 KiB at once.
    const ssize_t written = ::write(fd, bytes, std::min<size_t>(size, size_t{1} << 30));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_system_error("cannot write " + path);
    }
    bytes += written;
    size -= static_cast<size_t>(written);
  }
}

void fsync_directory(const std::string& directory) {
  const std::string name = directory.empty() ? "." : directory;
  const int fd = ::open(name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_system_error("cannot open directory " + name + " to fsync it");
  const int result = ::fsync(fd);
  const int saved_errno = errno;
  ::close(fd);
  if (result != 0 && saved_errno != EINVAL && saved_errno != ENOTSUP) {
    errno = saved_errno;
    throw_system_error("cannot fsync directory " + name);
  }
}

AtomicFile::AtomicFile(std::string path, mode_t mode) : path_(std::move(path)) {
  const fs::path target(path_);
  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");
  temporary_path_ = (directory / ("." + target.filename().string() + ".tmp.XXXXXX")).string();
  fd_ = ::mkstemp(&temporary_path_[0]);
  if (fd_ < 0) throw_system_error("cannot create a temporary file to write " + path_);
  if (::fchmod(fd_, mode) != 0) {
    const int saved_errno = errno;
    abandon();
    errno = saved_errno;
    throw_system_error("cannot set the permissions of " + temporary_path_);
  }
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() noexcept {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  ::unlink(temporary_path_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw InternalError("AtomicFile::write after commit of " + path_);
  try {
    write_all(fd_, data, size, temporary_path_);
  } catch (...) {
    abandon();
    throw;
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw InternalError("AtomicFile::commit twice for " + path_);
  const auto fail = [&](const std::string& what) {
    const int saved_errno = errno;
    abandon();
    ::unlink(temporary_path_.c_str());
    errno = saved_errno;
    throw_system_error(what);
  };
  if (::fsync(fd_) != 0) fail("cannot fsync " + temporary_path_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot close " + temporary_path_);
  if (::rename(temporary_path_.c_str(), path_.c_str()) != 0) {
    fail("cannot rename " + temporary_path_ + " to " + path_);
  }
  fsync_directory(fs::path(path_).parent_path().string());
}

void write_file_atomically(const std::string& path, const void* data, size_t size) {
  AtomicFile file(path);
  file.write(data, size);
  file.commit();
}

void write_file_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_system_error("cannot open " + path);
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) throw_system_error("cannot read " + path);
  return contents.str();
}

}  // namespace medseg

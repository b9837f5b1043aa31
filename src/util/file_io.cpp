#include "util/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

AtomicFile::AtomicFile(std::string path, std::string temporary_path, mode_t mode)
    : path_(std::move(path)), temporary_path_(std::move(temporary_path)) {
  fd_ = ::open(temporary_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd_ < 0) throw_system_error("cannot create temporary file " + temporary_path_);
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

void AtomicFile::write_at(uint64_t offset, const void* data, size_t size) {
  if (fd_ < 0) throw InternalError("AtomicFile::write_at after commit of " + path_);
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written =
        ::pwrite(fd_, bytes, std::min<size_t>(size, size_t{1} << 30), static_cast<off_t>(offset));
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      if (written == 0) errno = EIO;
      const int saved_errno = errno;
      abandon();
      errno = saved_errno;
      throw_system_error("cannot write " + temporary_path_);
    }
    bytes += written;
    offset += static_cast<uint64_t>(written);
    size -= static_cast<size_t>(written);
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

ReadOnlyFile::ReadOnlyFile(std::string path, std::string what)
    : path_(std::move(path)), what_(std::move(what)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int error = errno;
    if (error == ENOENT || error == ENOTDIR)
      throw ClientError(what_ + " " + path_ + " does not exist");
    if (error == EACCES) {
      throw ClientError(what_ + " " + path_ + " is not readable (permission denied)");
    }
    errno = error;
    throw_system_error("cannot open " + what_ + " " + path_);
  }
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    const int error = errno;
    ::close(fd_);
    errno = error;
    throw_system_error("cannot stat " + what_ + " " + path_);
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd_);
    throw ClientError(what_ + " " + path_ + " is not a regular file");
  }
  size_ = static_cast<int64_t>(info.st_size);
}

ReadOnlyFile::~ReadOnlyFile() { ::close(fd_); }

int64_t ReadOnlyFile::read_at(int64_t offset, int64_t count, void* destination) const {
  auto* out = static_cast<char*>(destination);
  int64_t done = 0;
  while (done < count) {
    const size_t chunk = static_cast<size_t>(std::min<int64_t>(count - done, int64_t{1} << 30));
    const ssize_t got = ::pread(fd_, out + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_system_error("cannot read " + what_ + " " + path_);
    }
    if (got == 0) break;
    done += got;
  }
  return done;
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

// The file-system layer: every file medseg writes goes through here, so every one is written the
// same durable way and every failure names the file. Errors are PlatformErrors with the system's
// reason (a full disk, a read-only folder, ...).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace medseg {

// Writes all `size` bytes to `fd`, retrying short writes and EINTR. `path` names the file.
void write_all(int fd, const void* data, size_t size, const std::string& path);

// fsyncs a directory, so that a rename into it survives a crash. File systems that cannot fsync a
// directory (EINVAL, ENOTSUP) are accepted: the rename is then as durable as they make it.
void fsync_directory(const std::string& directory);

// A file written under a temporary name in its final directory and renamed over `path` by
// commit(): fsync of the data, rename, fsync of the directory. Readers see the old file or the
// whole new one, never a part. Destroyed without commit() (an error, an exception), it removes
// the temporary file and leaves `path` as it was.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path, mode_t mode = 0644);
  // With a temporary name of the caller's choosing (in the same directory as `path`), for writers
  // whose leftovers must be recognisable (the checkpoint store stamps its writer's PID in it). A
  // file already there under that name is truncated.
  AtomicFile(std::string path, std::string temporary_path, mode_t mode = 0644);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  // Writes at `offset` without moving the append position (headers filled in at the end).
  void write_at(uint64_t offset, const void* data, size_t size);
  void commit();

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  const std::string& temporary_path() const { return temporary_path_; }

 private:
  void abandon() noexcept;

  std::string path_;
  std::string temporary_path_;
  int fd_ = -1;
};

// Writes a whole file atomically (see AtomicFile).
void write_file_atomically(const std::string& path, const void* data, size_t size);
void write_file_atomically(const std::string& path, const std::string& text);

// A file opened for positional reads, with its size. `what` names it in errors ("NIfTI file",
// "checkpoint"). A path that does not exist, is not readable or is not a regular file is a
// ClientError ("<what> <path> does not exist"); other failures are PlatformErrors.
class ReadOnlyFile {
 public:
  ReadOnlyFile(std::string path, std::string what);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  int64_t size() const { return size_; }

  // Reads up to `count` bytes at `offset` into `destination`; returns how many were read (fewer
  // only at the end of the file). EINTR and short reads are retried.
  int64_t read_at(int64_t offset, int64_t count, void* destination) const;

 private:
  std::string path_;
  std::string what_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// The whole file; PlatformError naming the path when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace medseg

#include "io/byte_source.h"

#include <unistd.h>

#include <cerrno>
#include <utility>

#include "util/error.h"

namespace medseg {

size_t read_fully(ByteSource& source, void* buffer, size_t size) {
  auto* bytes = static_cast<char*>(buffer);
  size_t total = 0;
  while (total < size) {
    const size_t got = source.read_some(bytes + total, size - total);
    if (got == 0) break;
    total += got;
  }
  return total;
}

FdByteSource::FdByteSource(int fd, std::string name, bool owns_fd)
    : fd_(fd), name_(std::move(name)), owns_fd_(owns_fd) {}

FdByteSource::~FdByteSource() {
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
}

size_t FdByteSource::read_some(void* buffer, size_t size) {
  if (size == 0) return 0;
  while (true) {
    const ssize_t got = ::read(fd_, buffer, size);
    if (got >= 0) return static_cast<size_t>(got);
    if (errno == EINTR) continue;
    throw_system_error("cannot read " + name_);
  }
}

IstreamByteSource::IstreamByteSource(std::istream& stream, std::string name)
    : stream_(stream), name_(std::move(name)) {}

size_t IstreamByteSource::read_some(void* buffer, size_t size) {
  if (size == 0 || stream_.eof()) return 0;
  stream_.read(static_cast<char*>(buffer), static_cast<std::streamsize>(size));
  const std::streamsize got = stream_.gcount();
  if (stream_.bad() || (stream_.fail() && !stream_.eof())) {
    throw PlatformError("cannot read " + name_ + ": the stream failed");
  }
  return static_cast<size_t>(got);
}

}  // namespace medseg

// Sequential byte sources: the narrow interface through which medseg reads data that cannot seek
// (a pipe, a SageMaker Pipe-mode FIFO, a std::istream). The record stream reader
// (io/medseg_record.h) and the RecordIO unwrapping of Pipe mode (io/pipe_channel.h) are stacked on
// it, so each can be tested over an in-memory stream or a real pipe.
//
// Contract: read_some() blocks until at least one byte is available or the source has ended, and
// returns 0 only at the end. A source is used by one thread at a time.
#pragma once

#include <cstddef>
#include <istream>
#include <string>

namespace medseg {

class ByteSource {
 public:
  virtual ~ByteSource() = default;

  // Reads up to `size` bytes into `buffer` and returns how many were read; 0 means end of stream.
  // Throws PlatformError when the underlying read fails, ClientError when a framing layer finds
  // malformed data.
  virtual size_t read_some(void* buffer, size_t size) = 0;

  // What is being read, for error messages (a path, "channel 'train' (FIFO ...)", ...).
  virtual std::string name() const = 0;
};

// Reads until `size` bytes have arrived or the source ends; returns the number read (< size only
// at the end of the stream).
size_t read_fully(ByteSource& source, void* buffer, size_t size);

// Reads a file descriptor with read(2), retrying on EINTR.
class FdByteSource : public ByteSource {
 public:
  // When `owns_fd` the descriptor is closed on destruction (closing a FIFO early is allowed).
  FdByteSource(int fd, std::string name, bool owns_fd);
  ~FdByteSource() override;
  FdByteSource(const FdByteSource&) = delete;
  FdByteSource& operator=(const FdByteSource&) = delete;

  size_t read_some(void* buffer, size_t size) override;
  std::string name() const override { return name_; }

 private:
  int fd_;
  std::string name_;
  bool owns_fd_;
};

// Reads a std::istream (which must outlive this object). A stream in a failed state other than
// end-of-file raises PlatformError.
class IstreamByteSource : public ByteSource {
 public:
  IstreamByteSource(std::istream& stream, std::string name);

  size_t read_some(void* buffer, size_t size) override;
  std::string name() const override { return name_; }

 private:
  std::istream& stream_;
  std::string name_;
};

}  // namespace medseg

// SageMaker Pipe mode: a channel's data arrives through one FIFO per epoch,
// <data_dir>/<channel>_<epoch> (epoch 0, 1, ...), holding the channel's S3 objects back to back
// (each a shard of whole medseg records). PipeChannel waits for each epoch's FIFO, opens it and
// hands out its bytes; with RecordWrapperType=RecordIO the RecordIO framing is removed so that
// readers see the plain objects back to back.
//
// RecordIO framing (SageMaker's, as read by sagemaker-tensorflow-extensions): each frame is
// u32 magic 0xced7230a, u32 lrec (length = low 29 bits, flag = top 3 bits: 0 whole, 1 start,
// 2 middle, 3 end), the payload, zeros up to a multiple of 4 bytes; little-endian. A multi-part
// object is the concatenation of its parts' payloads (nothing is inserted between parts, unlike
// dmlc-core's RecordIO, which re-inserts the magic).
//
// Contract:
//  - open_next_epoch() polls for the FIFO every poll_interval and waits for its writer to connect;
//    if neither happens within open_timeout it raises ClientError naming the channel and path
//    (usually the channel is not in Pipe mode or its name is misspelt). A regular file at that
//    path is accepted too (local testing).
//  - The returned stream reads to the end of the epoch; destroying it earlier closes the FIFO
//    (allowed: SageMaker then moves on). Each call moves to the next epoch index; only one epoch's
//    stream should be open at a time (one reader process per FIFO).
//  - Malformed RecordIO framing (bad magic, a part out of order, a stream ending inside a frame or
//    a multi-part object) raises ClientError naming the channel, FIFO and byte offset.
//  - Reads block while SageMaker has not delivered data yet; there is no stall timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/byte_source.h"

namespace medseg {

inline constexpr uint32_t kRecordIOMagic = 0xced7230au;

struct PipeChannelOptions {
  std::string data_dir = "/opt/ml/input/data";  // where SageMaker creates the FIFOs
  std::string channel;                          // the channel name, e.g. "train"
  bool record_io = false;                       // RecordWrapperType == "RecordIO"
  double open_timeout_seconds = 600.0;          // wait for the FIFO and its writer this long
  double poll_interval_seconds = 0.05;          // how often to look for the FIFO
};

// Removes RecordIO framing from `inner`, producing the concatenated payloads.
class RecordIOByteSource : public ByteSource {
 public:
  explicit RecordIOByteSource(std::unique_ptr<ByteSource> inner);

  size_t read_some(void* buffer, size_t size) override;
  std::string name() const override { return inner_->name(); }

  // Whole objects (flag 0 or an end part) seen so far.
  int64_t objects_read() const { return objects_read_; }

 private:
  // Reads the next frame header; returns false at a clean end of stream.
  bool next_frame();
  void read_exact(void* buffer, size_t size, const char* what);

  std::unique_ptr<ByteSource> inner_;
  uint64_t offset_ = 0;           // bytes consumed from inner_
  uint64_t frame_remaining_ = 0;  // payload bytes left in the current frame
  uint32_t frame_padding_ = 0;    // padding after the current frame's payload
  bool in_multipart_ = false;     // between a start part and its end part
  bool ended_ = false;
  int64_t objects_read_ = 0;
};

// A host's first worker reads SageMaker's FIFO (one reader per FIFO) and gives its other workers
// the same bytes: PipeTee copies everything read from `inner` into the FIFOs `outputs` (made here,
// each read by one local worker through a PipeChannel on its folder). An output is opened once its
// reader has opened it (within `open_timeout_seconds`, else PlatformError naming it); a reader
// that stops reading before the end raises PlatformError (EPIPE) on the next write to it. The
// destructor closes the outputs (their readers see the end of the stream) and removes them.
class PipeTee : public ByteSource {
 public:
  PipeTee(std::unique_ptr<ByteSource> inner, std::vector<std::string> outputs,
          double open_timeout_seconds);
  ~PipeTee() override;
  PipeTee(const PipeTee&) = delete;
  PipeTee& operator=(const PipeTee&) = delete;

  size_t read_some(void* buffer, size_t size) override;
  std::string name() const override { return inner_->name(); }

 private:
  void open_outputs();

  std::unique_ptr<ByteSource> inner_;
  std::vector<std::string> outputs_;
  std::vector<int> fds_;
  double open_timeout_seconds_;
};

class PipeChannel {
 public:
  // Throws ClientError when the channel name is empty.
  explicit PipeChannel(PipeChannelOptions options);

  // Waits for and opens <data_dir>/<channel>_<next_epoch()>, then advances next_epoch().
  std::unique_ptr<ByteSource> open_next_epoch();

  int next_epoch() const { return next_epoch_; }
  std::string fifo_path(int epoch) const;

 private:
  PipeChannelOptions options_;
  int next_epoch_ = 0;
};

}  // namespace medseg

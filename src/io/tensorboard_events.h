// TensorBoard event files: what `tensorboard --logdir` and SageMaker's TensorBoard read. A file
// named events.out.tfevents.<seconds>.<host>.<pid> holds records (length, masked CRC-32C of the
// length, an Event protobuf, its masked CRC-32C); the first Event names the format version, then
// scalars and PNG images as Summary values, and a "session start" at a resumed step so that
// TensorBoard drops the points an interrupted run wrote past its checkpoint.
//
// The few protobuf messages are encoded here by hand (varints and length-delimited fields of
// tensorflow's event.proto / summary.proto): libprotobuf is not linked because LibTorch exports
// its own copy of protobuf's symbols, and two copies in one process is undefined behaviour.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace medseg {

// CRC-32C (Castagnoli) of `size` bytes, and TensorBoard's masked form of it.
uint32_t crc32c(const void* data, size_t size);
uint32_t masked_crc32c(const void* data, size_t size);

class TensorBoardWriter {
 public:
  // Creates `folder` and a new event file in it. A folder that cannot be written is a
  // PlatformError naming it.
  explicit TensorBoardWriter(const std::string& folder);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalar(const std::string& tag, int64_t step, double value);
  // `png`: an encoded PNG of `width` x `height` pixels with `channels` (3 = RGB).
  void add_image(const std::string& tag, int64_t step, const std::string& png, int width,
                 int height, int channels);
  // A run resumed from a checkpoint whose first new step is `step`: TensorBoard discards the
  // points earlier files hold for `step` and after (what the interrupted run wrote past its
  // checkpoint).
  void add_session_start(int64_t step);
  // Pushes what was written to the file system (SageMaker uploads the folder as it changes).
  void flush();

  const std::string& path() const { return path_; }

 private:
  void write_event(int64_t step, const std::string& fields);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace medseg

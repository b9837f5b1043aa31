// Pipe mode as SageMaker delivers it: every epoch a new FIFO streams the channel's records once,
// and training never needs the whole data set in memory. Each epoch's records pass through a
// shuffle buffer of `shuffle_buffer` cases: once it is full, a seeded draw picks the case to use
// next and the next record of the stream takes its place. So every record of the stream is used
// at most once per epoch (exactly once when the epoch needs as many samples as the stream has),
// and a record moves on average about shuffle_buffer places from its position in the stream: the
// larger the buffer, the closer to a full shuffle (with the buffer as large as the data set it is
// one). Shuffle the S3 objects as well (the channel's ShuffleConfig) when the stream's order has
// structure, e.g. shards written class by class.
//
// Global sample g of the epoch is the g-th case drawn; this worker takes the samples the batch
// loader assigns to its rank (step t of rank r: t*W*B + r*B + [0, B)) and drops the others, so
// every worker of the data group, reading the same bytes, agrees on the order without talking.
//
// Resume mid-epoch: start_epoch(epoch, samples, first_sample) replays the epoch's draws from the
// start of its stream without using the first `first_sample` samples. The result is exactly the
// interrupted run's when the stream delivers the same records in the same order as in the
// interrupted epoch (no ShuffleConfig, or one that repeats per epoch), else each record is still
// used at most once in the resumed epoch but not the same ones as before the interruption.
//
// Thread safety: a reader thread per epoch fills the buffer; acquire()/release() may be called
// from several loader threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "io/byte_source.h"
#include "io/case_data.h"
#include "io/medseg_record.h"

namespace medseg {

struct StreamedEpochsOptions {
  int64_t shuffle_buffer = 16;  // cases
  uint64_t seed = 0;
  int rank = 0;        // within the group of workers that read the same stream
  int world_size = 1;  // that group's size
  int64_t batch_size = 2;
  int64_t max_held = 8;  // this worker's drawn samples waiting for the loader, at most
  std::unordered_set<std::string> skip;  // case ids that are not training cases (validation)
  RecordReadOptions read;
};

class StreamedEpochs {
 public:
  // Returns the next epoch's stream (the next FIFO); called once per start_epoch().
  using OpenEpoch = std::function<std::unique_ptr<ByteSource>()>;

  StreamedEpochs(OpenEpoch open_epoch, StreamedEpochsOptions options);
  ~StreamedEpochs();
  StreamedEpochs(const StreamedEpochs&) = delete;
  StreamedEpochs& operator=(const StreamedEpochs&) = delete;

  // Starts drawing `num_samples` samples of `epoch` from the next stream; samples before
  // `first_sample` are drawn but not used. Ends the previous epoch's reading first.
  void start_epoch(uint64_t epoch, int64_t num_samples, int64_t first_sample);

  // The case of this worker's global sample `sample`, once the stream has delivered it; valid
  // until release(sample). Rethrows the reader's error: a malformed stream, or one that ended
  // before the epoch's samples (ClientError naming the channel and the counts).
  CaseView acquire(int64_t sample);
  void release(int64_t sample);

  // Ends the epoch's reading (the stream is closed early, which Pipe mode allows).
  void stop();

  // What an epoch's reader thread shares with acquire()/release() (streamed_epochs.cpp).
  struct Shared;

 private:
  OpenEpoch open_epoch_;
  StreamedEpochsOptions options_;
  std::shared_ptr<Shared> shared_;
  std::thread reader_;
};

}  // namespace medseg

// The training input pipeline after the static transforms: worker threads cut random crops
// (data/random_transforms.h) from cases held in memory and assemble them into batches, through a
// bounded ring of batch slots. Batches come out in order and each sample is keyed by
// (seed, epoch, global sample index), so the data a step sees is the same whatever the number of
// threads, and a resumed epoch replays exactly.
//
// Data order: epoch e visits cases in epoch_case_order() (or in the order a stream draws them);
// with W ranks and per-rank batch B, step t of rank r takes the global samples
// t*W*B + r*B + [0, B).
//
// Thread safety: one consumer thread calls start_epoch()/next(); the workers are internal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/random_transforms.h"
#include "data/training_set.h"
#include "io/case_data.h"

namespace medseg {

// The case index of each global sample of an epoch: successive seeded permutations of the cases
// (a new permutation each time the epoch needs more samples than there are cases).
std::vector<int64_t> epoch_case_order(int64_t num_cases, int64_t num_samples, uint64_t seed,
                                      uint64_t epoch);

struct Batch {
  int64_t step = 0;  // step within the epoch
  int64_t batch_size = 0;
  std::array<int64_t, 3> shape{0, 0, 0};
  int64_t image_channels = 0;
  int64_t label_channels = 0;
  std::vector<float> image;    // [B, C, x, y, z]
  std::vector<uint8_t> label;  // [B, L, x, y, z]
};

struct BatchLoaderOptions {
  RandomTransformOptions transforms;
  int64_t batch_size = 2;  // per rank
  int rank = 0;
  int world_size = 1;
  uint64_t seed = 0;
  int num_workers = 2;       // threads cutting crops
  int prefetch_batches = 4;  // ring size: batches ready or being filled
};

class StreamedEpochs;

class BatchLoader {
 public:
  // `cases` must outlive the loader.
  BatchLoader(const TrainingSet* cases, BatchLoaderOptions options);
  // The cases of each epoch's samples come from a stream instead (Pipe mode,
  // data/streamed_epochs.h), which must outlive the loader; the crops are the same function of
  // (seed, epoch, global sample index).
  BatchLoader(StreamedEpochs* stream, BatchLoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // Begins producing `steps` batches of `epoch`, starting at `first_step` (resume mid-epoch).
  void start_epoch(uint64_t epoch, int64_t steps, int64_t first_step = 0);

  // The next batch of the epoch into `out` (buffers swapped, not copied); false when the epoch is
  // exhausted. Rethrows a worker's exception.
  bool next(Batch& out);

  // Bytes held by the ring of batch slots (the loader's memory beyond the cases).
  int64_t buffer_bytes() const;

 private:
  struct Slot;
  // One of `cases` and `stream` is given.
  BatchLoader(const TrainingSet* cases, StreamedEpochs* stream, BatchLoaderOptions options);
  void worker_loop();
  void stop_workers();

  const TrainingSet* cases_ = nullptr;
  StreamedEpochs* stream_ = nullptr;
  BatchLoaderOptions options_;
  std::vector<int64_t> order_;  // case of each global sample of the current epoch
  uint64_t epoch_ = 0;
  int64_t end_step_ = 0;
  int64_t next_to_claim_ = 0;   // next step a worker takes
  int64_t next_to_return_ = 0;  // next step next() returns
  bool stopping_ = false;
  std::exception_ptr failure_;
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::thread> workers_;
};

}  // namespace medseg

#include "data/streamed_epochs.h"

#include <chrono>
#include <utility>

#include "util/error.h"
#include "util/random.h"

namespace medseg {

// What the reader thread and the loader share. The reader holds it too, so a reader still blocked
// in a read when the epoch is abandoned (stop()) can finish on its own.
struct StreamedEpochs::Shared {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<int64_t, CaseData> held;  // this worker's drawn samples not yet released
  std::vector<CaseData> spare;       // released cases whose buffers the reader reuses
  std::exception_ptr failure;
  bool stopping = false;
  bool finished = true;

  // Keeps one used case for the reader to decode the next record into (its buffers reused);
  // others are freed. The caller holds `mutex`.
  void keep_spare(CaseData&& data) {
    if (spare.empty()) spare.push_back(std::move(data));
  }
};

namespace {

// Reads one epoch: fills the shuffle buffer, then draws `num_samples` samples from it.
void read_epoch(const std::shared_ptr<StreamedEpochs::Shared>& shared, ByteSource& source,
                const StreamedEpochsOptions& options, uint64_t epoch, int64_t num_samples,
                int64_t first_sample) {
  RecordStreamReader reader(source, options.read);
  int64_t delivered = 0;  // training records read from the stream
  auto next_record = [&](CaseData& out) {
    {
      std::lock_guard<std::mutex> lock(shared->mutex);
      if (!shared->spare.empty()) {
        out = std::move(shared->spare.back());
        shared->spare.pop_back();
      }
    }
    while (reader.next(&out)) {
      if (options.skip.count(out.case_id) != 0) continue;
      ++delivered;
      return true;
    }
    return false;
  };
  const auto recycle = [&](CaseData&& data) {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->keep_spare(std::move(data));
  };
  std::vector<CaseData> window;
  const size_t capacity = static_cast<size_t>(std::max<int64_t>(1, options.shuffle_buffer));
  window.reserve(capacity);
  CaseData incoming;
  while (window.size() < capacity && next_record(incoming)) window.push_back(std::move(incoming));
  RandomStream random(options.seed ^ 0x5be11f00d5eedULL, epoch, 0);
  const int64_t group_batch = options.batch_size * options.world_size;
  for (int64_t sample = 0; sample < num_samples; ++sample) {
    if (window.empty()) {
      throw ClientError(source.name() + ": epoch " + std::to_string(epoch + 1) + " delivered " +
                        std::to_string(delivered) + " training records, but the epoch needs " +
                        std::to_string(num_samples) +
                        " samples (steps per epoch x batch x workers): does every epoch's FIFO "
                        "stream the whole channel, and is train.steps_per_epoch too large?");
    }
    const auto last = static_cast<int64_t>(window.size()) - 1;
    const auto pick = static_cast<size_t>(random.uniform_int(0, last));
    CaseData chosen = std::move(window[pick]);
    if (next_record(incoming)) {
      window[pick] = std::move(incoming);
    } else {
      window[pick] = std::move(window.back());
      window.pop_back();
    }
    const bool mine = (sample % group_batch) / options.batch_size == options.rank;
    if (!mine || sample < first_sample) {
      recycle(std::move(chosen));
      continue;
    }
    std::unique_lock<std::mutex> lock(shared->mutex);
    shared->changed.wait(lock, [&] {
      return shared->stopping || static_cast<int64_t>(shared->held.size()) < options.max_held;
    });
    if (shared->stopping) return;
    shared->held.emplace(sample, std::move(chosen));
    lock.unlock();
    shared->changed.notify_all();
  }
}

}  // namespace

StreamedEpochs::StreamedEpochs(OpenEpoch open_epoch, StreamedEpochsOptions options)
    : open_epoch_(std::move(open_epoch)), options_(std::move(options)) {}

StreamedEpochs::~StreamedEpochs() { stop(); }

void StreamedEpochs::stop() {
  if (!reader_.joinable()) return;
  {
    std::unique_lock<std::mutex> lock(shared_->mutex);
    shared_->stopping = true;
    shared_->changed.notify_all();
    // A reader blocked reading a stream that is not moving cannot be woken; it is left to finish
    // on its own (it holds what it uses) rather than holding up the job's end.
    shared_->changed.wait_for(lock, std::chrono::seconds(5), [&] { return shared_->finished; });
  }
  if (shared_->finished) {
    reader_.join();
  } else {
    reader_.detach();
  }
}

void StreamedEpochs::start_epoch(uint64_t epoch, int64_t num_samples, int64_t first_sample) {
  stop();
  shared_ = std::make_shared<Shared>();
  shared_->finished = false;
  reader_ = std::thread([shared = shared_, open = open_epoch_, options = options_, epoch,
                         num_samples, first_sample] {
    try {
      std::unique_ptr<ByteSource> source = open();
      read_epoch(shared, *source, options, epoch, num_samples, first_sample);
    } catch (...) {
      std::lock_guard<std::mutex> lock(shared->mutex);
      shared->failure = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->finished = true;
    shared->changed.notify_all();
  });
}

CaseView StreamedEpochs::acquire(int64_t sample) {
  std::unique_lock<std::mutex> lock(shared_->mutex);
  shared_->changed.wait(lock, [&] {
    return shared_->held.count(sample) != 0 || shared_->failure || shared_->stopping ||
           shared_->finished;
  });
  const auto found = shared_->held.find(sample);
  if (found != shared_->held.end()) return view_of(found->second);
  if (shared_->failure) std::rethrow_exception(shared_->failure);
  throw InternalError("StreamedEpochs::acquire(" + std::to_string(sample) +
                      "): the epoch's reading ended without drawing it");
}

void StreamedEpochs::release(int64_t sample) {
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    const auto found = shared_->held.find(sample);
    if (found == shared_->held.end()) return;
    shared_->keep_spare(std::move(found->second));
    shared_->held.erase(found);
  }
  shared_->changed.notify_all();
}

}  // namespace medseg

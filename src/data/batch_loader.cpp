#include "data/batch_loader.h"

#include <algorithm>
#include <cstring>

#include "data/streamed_epochs.h"
#include "util/error.h"
#include "util/random.h"

namespace medseg {

// A batch being filled (owned by one worker) or ready (waiting for next()).
struct BatchLoader::Slot {
  int64_t step = -1;
  bool ready = false;
  Batch batch;
  Sample sample;  // scratch of the worker filling this slot
};

std::vector<int64_t> epoch_case_order(int64_t num_cases, int64_t num_samples, uint64_t seed,
                                      uint64_t epoch) {
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(num_samples));
  std::vector<int64_t> permutation(static_cast<size_t>(num_cases));
  for (uint64_t round = 0; static_cast<int64_t>(order.size()) < num_samples; ++round) {
    for (int64_t i = 0; i < num_cases; ++i) permutation[static_cast<size_t>(i)] = i;
    // Fisher-Yates with a stream of its own: (seed, epoch, round) never collides with the sample
    // streams because those use the global sample index as their second key part.
    RandomStream random(seed ^ 0x5eed0f0e0d0c0b0aULL, epoch, round);
    for (int64_t i = num_cases - 1; i > 0; --i) {
      std::swap(permutation[static_cast<size_t>(i)],
                permutation[static_cast<size_t>(random.uniform_int(0, i))]);
    }
    for (int64_t i = 0; i < num_cases && static_cast<int64_t>(order.size()) < num_samples; ++i) {
      order.push_back(permutation[static_cast<size_t>(i)]);
    }
  }
  return order;
}

BatchLoader::BatchLoader(const TrainingSet* cases, BatchLoaderOptions options)
    : BatchLoader(cases, nullptr, std::move(options)) {
  if (cases_->empty()) throw ClientError("no training cases to load");
}

BatchLoader::BatchLoader(StreamedEpochs* stream, BatchLoaderOptions options)
    : BatchLoader(nullptr, stream, std::move(options)) {}

BatchLoader::BatchLoader(const TrainingSet* cases, StreamedEpochs* stream,
                         BatchLoaderOptions options)
    : cases_(cases), stream_(stream), options_(std::move(options)) {
  options_.num_workers = std::max(1, options_.num_workers);
  options_.prefetch_batches = std::max(1, options_.prefetch_batches);
  for (int i = 0; i < options_.prefetch_batches; ++i) slots_.push_back(std::make_unique<Slot>());
}

BatchLoader::~BatchLoader() { stop_workers(); }

void BatchLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (stream_ != nullptr) stream_->stop();  // wakes workers waiting for a sample
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

void BatchLoader::start_epoch(uint64_t epoch, int64_t steps, int64_t first_step) {
  stop_workers();
  const int64_t global_batch = options_.batch_size * options_.world_size;
  if (stream_ != nullptr) {
    stream_->start_epoch(epoch, steps * global_batch, first_step * global_batch);
  } else {
    order_ = epoch_case_order(static_cast<int64_t>(cases_->size()), steps * global_batch,
                              options_.seed, epoch);
  }
  epoch_ = epoch;
  end_step_ = steps;
  next_to_claim_ = first_step;
  next_to_return_ = first_step;
  stopping_ = false;
  failure_ = nullptr;
  for (auto& slot : slots_) {
    slot->step = -1;
    slot->ready = false;
  }
  for (int i = 0; i < options_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

void BatchLoader::worker_loop() {
  while (true) {
    Slot* slot = nullptr;
    int64_t step = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      // A step may be claimed once its slot (step % ring size) has been handed out.
      changed_.wait(lock, [&] {
        if (stopping_ || next_to_claim_ >= end_step_) return true;
        const Slot& candidate = *slots_[static_cast<size_t>(next_to_claim_ % slots_.size())];
        return candidate.step < 0;
      });
      if (stopping_ || next_to_claim_ >= end_step_) return;
      step = next_to_claim_++;
      slot = slots_[static_cast<size_t>(step % slots_.size())].get();
      slot->step = step;
      slot->ready = false;
    }
    try {
      Batch& batch = slot->batch;
      batch.step = step;
      batch.batch_size = options_.batch_size;
      const int64_t first_sample =
          step * options_.batch_size * options_.world_size + options_.rank * options_.batch_size;
      for (int64_t i = 0; i < options_.batch_size; ++i) {
        const int64_t global_sample = first_sample + i;
        const CaseView source =
            stream_ != nullptr ? stream_->acquire(global_sample)
                               : cases_->view(static_cast<size_t>(order_[global_sample]));
        make_random_sample(source, options_.transforms, options_.seed, epoch_,
                           static_cast<uint64_t>(global_sample), slot->sample);
        const std::string case_id = *source.case_id;
        if (stream_ != nullptr) stream_->release(global_sample);  // the crop is cut: done with it
        const Sample& sample = slot->sample;
        if (i == 0) {
          batch.shape = sample.shape;
          batch.image_channels = sample.image_channels;
          batch.label_channels = sample.label_channels;
          batch.image.resize(sample.image.size() * static_cast<size_t>(options_.batch_size));
          batch.label.resize(sample.label.size() * static_cast<size_t>(options_.batch_size));
        } else if (sample.image_channels != batch.image_channels ||
                   sample.label_channels != batch.label_channels) {
          throw ClientError("case " + case_id + " has " +
                            std::to_string(sample.image_channels) + " image channels and " +
                            std::to_string(sample.label_channels) +
                            " label channels, unlike the other cases of its batch");
        }
        std::memcpy(batch.image.data() + i * sample.image.size(), sample.image.data(),
                    sample.image.size() * sizeof(float));
        std::memcpy(batch.label.data() + i * sample.label.size(), sample.label.data(),
                    sample.label.size());
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        slot->ready = true;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      // Once stopping, a stream's "ended without drawing it" is the stop, not a failure.
      if (!failure_ && !stopping_) failure_ = std::current_exception();
      stopping_ = true;
    }
    changed_.notify_all();
  }
}

bool BatchLoader::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (next_to_return_ >= end_step_) return false;
  Slot& slot = *slots_[static_cast<size_t>(next_to_return_ % slots_.size())];
  changed_.wait(lock, [&] { return failure_ || (slot.step == next_to_return_ && slot.ready); });
  if (failure_) std::rethrow_exception(failure_);
  std::swap(out, slot.batch);
  slot.step = -1;
  slot.ready = false;
  ++next_to_return_;
  lock.unlock();
  changed_.notify_all();
  return true;
}

int64_t BatchLoader::buffer_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t bytes = 0;
  for (const auto& slot : slots_) {
    bytes += static_cast<int64_t>(
        slot->batch.image.capacity() * sizeof(float) + slot->batch.label.capacity() +
        slot->sample.image.capacity() * sizeof(float) + slot->sample.label.capacity());
  }
  return bytes;
}

}  // namespace medseg

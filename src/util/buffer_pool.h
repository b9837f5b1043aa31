// Large buffers that one thread reuses from case to case. Preprocessing a full-size BraTS case
// passes through several image-sized buffers (the decoded file, the channel-first image, the
// resampled and reoriented ones: about 450 MB). Fresh from the allocator, each costs a page fault
// and a zeroed page per 4 KiB, which took longer than the work done in them; kept in a pool, they
// cost nothing after the first case.
//
// take() hands out the spare buffer that fits best (the smallest one large enough, else the
// largest, which grows, with room to spare), so that case after case each role gets back the
// buffer it had and, once a thread has met its largest files, no buffer is re-grown or
// re-zeroed. The pool keeps at most kMaxSpares buffers (the smallest are dropped). Not
// thread-safe: one pool per thread.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "util/memory.h"

namespace medseg {

template <typename T>
class BufferPool {
 public:
  static constexpr size_t kMaxSpares = 8;

  // A buffer of `size` elements. Its contents are unspecified: the caller overwrites them.
  std::vector<T> take(size_t size) {
    // Best fit: the smallest spare that holds `size`; when none does, the largest (it grows).
    size_t best = spare_.size();
    for (size_t i = 0; i < spare_.size(); ++i) {
      if (best == spare_.size()) {
        best = i;
        continue;
      }
      const bool fits = spare_[i].capacity() >= size, best_fits = spare_[best].capacity() >= size;
      if (fits != best_fits) {
        if (fits) best = i;
      } else if (fits ? spare_[i].capacity() < spare_[best].capacity()
                      : spare_[i].capacity() > spare_[best].capacity()) {
        best = i;
      }
    }
    std::vector<T> buffer;
    if (best < spare_.size()) {
      buffer = std::move(spare_[best]);
      spare_.erase(spare_.begin() + static_cast<std::ptrdiff_t>(best));
    }
    if (buffer.capacity() < size) {
      // A new allocation: hint huge pages before its first touch. A spare that grows gets a
      // quarter more than asked: files differ in size from case to case (compressed ones by
      // 10-20%), and each regrowth is a fresh allocation whose page faults cost more than
      // the case's work (0.05-0.16 s for 33 MB here).
      const size_t room = buffer.capacity() == 0 ? size : size + size / 4;
      std::vector<T>().swap(buffer);
      buffer.reserve(room);
      advise_huge_pages(buffer.data(), room * sizeof(T));
    }
    buffer.resize(size);
    return buffer;
  }

  // Keeps `buffer` for a later take(); leaves it empty.
  void give(std::vector<T>&& buffer) {
    if (buffer.capacity() == 0) return;
    spare_.push_back(std::move(buffer));
    buffer = std::vector<T>();
    if (spare_.size() > kMaxSpares) {
      size_t smallest = 0;
      for (size_t i = 1; i < spare_.size(); ++i) {
        if (spare_[i].capacity() < spare_[smallest].capacity()) smallest = i;
      }
      spare_.erase(spare_.begin() + static_cast<std::ptrdiff_t>(smallest));
    }
  }

  size_t spares() const { return spare_.size(); }

 private:
  std::vector<std::vector<T>> spare_;
};

// The pools of one preprocessing thread: float images and byte buffers (labels, compressed
// files).
struct CaseBuffers {
  BufferPool<float> floats;
  BufferPool<uint8_t> bytes;
};

}  // namespace medseg

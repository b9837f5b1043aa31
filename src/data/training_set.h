// The cases a worker draws training crops from, wherever their voxels live: decoded in this
// process's memory (NIfTI channels, Pipe mode), or in record shards mapped read-only, so that a
// host's workers share one copy through the page cache and the kernel may evict what is not in
// use (File/FastFile record channels). A view of case i is valid while the set lives.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/case_data.h"

namespace medseg {

class MappedRecordReader;

class TrainingSet {
 public:
  TrainingSet() = default;
  // Cases held in memory.
  explicit TrainingSet(std::vector<CaseData> cases);
  // Records `records` (indices) of a mapped reader, in that order.
  TrainingSet(std::shared_ptr<const MappedRecordReader> reader, std::vector<size_t> records);

  size_t size() const { return in_memory_.size() + records_.size(); }
  bool empty() const { return size() == 0; }
  CaseView view(size_t index) const;
  const std::string& case_id(size_t index) const;
  // Bytes this process holds privately for the cases (mapped records count 0).
  int64_t private_bytes() const;
  // Bytes of the mapped records' images and labels (shared with the host's other workers).
  int64_t mapped_bytes() const;

 private:
  std::vector<CaseData> in_memory_;
  std::shared_ptr<const MappedRecordReader> reader_;
  std::vector<size_t> records_;
};

}  // namespace medseg

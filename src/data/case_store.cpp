#include "data/case_store.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "util/error.h"

namespace medseg {

CaseData load_case(const CaseSource& source, const CaseLoadOptions& options) {
  const NiftiVolume image = load_case_image(source, options.read);
  if (source.label_file.empty()) {
    return preprocess_case(image, nullptr, options.transforms, source.case_id);
  }
  const NiftiVolume label = read_nifti(source.label_file, options.read);
  return preprocess_case(image, &label, options.transforms, source.case_id);
}

std::vector<CaseData> load_cases(const DatasetIndex& index, const CaseLoadOptions& options) {
  if (index.layout == DatasetLayout::kRecords) {
    throw InternalError("load_cases: record channels are read by the record reader");
  }
  std::vector<CaseData> cases(index.cases.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const int threads =
      std::max(1, std::min<int>(options.threads, static_cast<int>(index.cases.size())));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < cases.size(); i = next++) {
        try {
          cases[i] = load_case(index.cases[i], options);
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = cases.size();  // stop the other workers early
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  if (failure) std::rethrow_exception(failure);
  return cases;
}

int64_t case_bytes(const std::vector<CaseData>& cases) {
  int64_t bytes = 0;
  for (const CaseData& data : cases) {
    bytes += static_cast<int64_t>(data.image.size() * sizeof(float) + data.label.size());
  }
  return bytes;
}

}  // namespace medseg

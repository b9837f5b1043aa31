#include "util/memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace medseg {
namespace {

MemoryUsage memory_usage_of(const std::string& status_path) {
  MemoryUsage usage;
  std::ifstream status(status_path);
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (status >> key) {
    int64_t* field = key == "VmHWM:"     ? &usage.peak_resident_bytes
                     : key == "VmRSS:"   ? &usage.resident_bytes
                     : key == "RssAnon:" ? &usage.anonymous_bytes
                     : key == "RssFile:" ? &usage.file_bytes
                                         : nullptr;
    if (field != nullptr && status >> kib >> unit) *field = kib * 1024;
    status.ignore(1 << 16, '\n');
  }
  return usage;
}

}  // namespace

void advise_huge_pages(void* buffer, size_t bytes) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  if (bytes < 2 * kHugePage) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(buffer) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(buffer) + bytes) & ~(kHugePage - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

MemoryUsage memory_usage() { return memory_usage_of("/proc/self/status"); }

MemoryUsage memory_usage(int pid) {
  return memory_usage_of("/proc/" + std::to_string(pid) + "/status");
}

}  // namespace medseg

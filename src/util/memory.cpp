#include "util/memory.h"

#include <sys/mman.h>

#include <algorithm>
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

int64_t available_memory_bytes() {
  int64_t available = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    int64_t kib = 0;
    meminfo >> kib;
    if (key == "MemAvailable:") {
      available = kib * 1024;
      break;
    }
    meminfo.ignore(1 << 10, '\n');
  }
  // cgroup v2: "0::/path" in /proc/self/cgroup, the limit in /sys/fs/cgroup/path/memory.max.
  std::ifstream cgroup("/proc/self/cgroup");
  for (std::string line; std::getline(cgroup, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    const std::string folder = "/sys/fs/cgroup" + line.substr(3);
    std::ifstream max_file(folder + "/memory.max");
    std::ifstream current_file(folder + "/memory.current");
    std::string max_text;
    int64_t current = 0;
    if (max_file >> max_text && max_text != "max" && current_file >> current) {
      const int64_t left = std::max<int64_t>(0, std::stoll(max_text) - current);
      available = available > 0 ? std::min(available, left) : left;
    }
  }
  return available;
}

MemoryUsage memory_usage(int pid) {
  return memory_usage_of("/proc/" + std::to_string(pid) + "/status");
}

}  // namespace medseg

#include "util/memory.h"

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

MemoryUsage memory_usage() { return memory_usage_of("/proc/self/status"); }

MemoryUsage memory_usage(int pid) {
  return memory_usage_of("/proc/" + std::to_string(pid) + "/status");
}

}  // namespace medseg

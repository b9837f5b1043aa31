#include "util/memory.h"

#include <fstream>
#include <string>

namespace medseg {

MemoryUsage memory_usage() {
  MemoryUsage usage;
  std::ifstream status("/proc/self/status");
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

}  // namespace medseg

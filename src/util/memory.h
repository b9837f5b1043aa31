// This process's memory as Linux accounts it (/proc/self/status), for the logs and benchmarks
// that show what a worker holds: its peak, and its current private (anonymous) and file-backed
// resident memory. Mapped record shards are file-backed: shared by the host's workers through the
// page cache, and evictable under pressure, unlike anonymous memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace medseg {

struct MemoryUsage {
  int64_t peak_resident_bytes = 0;  // VmHWM
  int64_t resident_bytes = 0;       // VmRSS
  int64_t anonymous_bytes = 0;      // RssAnon: private to this process
  int64_t file_bytes = 0;           // RssFile: mapped files (shared with other processes)
};

// Zeros where the kernel does not say (no /proc).
MemoryUsage memory_usage();
// The same for another process of this host (pid), e.g. a server the benchmark started.
MemoryUsage memory_usage(int pid);

// Bytes this process could still allocate: the host's MemAvailable, or less when this process's
// cgroup (v2) has a memory.max below that. 0 when the kernel does not say.
int64_t available_memory_bytes();

// Asks the kernel to back a large buffer that is about to be written with transparent huge pages
// (first-touch page faults are a large share of loading a volume: a 143 MB image is 35k 4-KiB
// faults). Only a hint: failure is ignored.
void advise_huge_pages(void* buffer, size_t bytes);

}  // namespace medseg

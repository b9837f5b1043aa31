#include "fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <new>

#include "util/error.h"

namespace medseg::fuzz {

std::string scratch_file(const std::string& name, const uint8_t* data, size_t size) {
  static const std::string folder = [] {
    const char* base = std::getenv("TMPDIR");
    std::string path = std::string(base && *base ? base : "/dev/shm") + "/medseg-fuzz-" +
                       std::to_string(::getpid());
    std::system(("mkdir -p " + path).c_str());
    return path;
  }();
  const std::string path = folder + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

void expect_clean(const std::function<void()>& parse) {
  try {
    parse();
  } catch (const ClientError& error) {
    if (std::string(error.what()).empty()) {
      std::fprintf(stderr, "finding: a ClientError without a message\n");
      std::abort();
    }
  } catch (const PlatformError& error) {
    if (std::string(error.what()).empty()) std::abort();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "finding: %s escaped as '%s' instead of a ClientError\n",
                 typeid(error).name(), error.what());
    std::abort();
  }
}

}  // namespace medseg::fuzz

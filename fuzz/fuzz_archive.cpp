// Tar archives as serve receives them (a request body holding a BraTS case folder) and as a
// model channel delivers model.tar.gz: listed first, then extracted within the size and member
// bounds, or refused with a ClientError naming the archive; never a crash or a hang. Each input
// runs /bin/tar twice (list, extract), so this harness is slow: hundreds of inputs per second.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "util/archive.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = medseg::fuzz::scratch_file("input.tar", data, size);
  medseg::fuzz::expect_clean([&] {
    const medseg::TemporaryFolder folder("to extract the fuzzed archive in");
    medseg::extract_tar(path, folder.path(), "fuzzed archive", "a tar of regular files",
                        static_cast<int64_t>(8 * size) + 4096);
  });
  return 0;
}

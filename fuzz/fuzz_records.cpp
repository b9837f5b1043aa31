// medseg record shards over arbitrary bytes, as File mode maps them and as Pipe mode streams them
// (plain, and inside SageMaker's RecordIO framing): every record is read or the input is refused
// with a ClientError; no buffer is sized from a header beyond the bytes that can arrive.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>

#include "fuzz_support.h"
#include "io/byte_source.h"
#include "io/case_data.h"
#include "io/medseg_record.h"
#include "io/pipe_channel.h"

namespace {

void read_stream(std::unique_ptr<medseg::ByteSource> source, uint64_t max_record_bytes) {
  medseg::RecordReadOptions options;
  options.max_record_bytes = max_record_bytes;
  medseg::RecordStreamReader reader(*source, options);
  medseg::CaseData record;
  while (reader.next(&record)) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = medseg::fuzz::scratch_file("input.medrec", data, size);
  medseg::fuzz::expect_clean([&] {
    medseg::MappedRecordReader reader(path);
    for (size_t i = 0; i < reader.size(); ++i) reader.read(i);
  });
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  medseg::fuzz::expect_clean([&] {
    std::istringstream stream(bytes);
    read_stream(std::make_unique<medseg::IstreamByteSource>(stream, "stream"), uint64_t{64} << 20);
  });
  medseg::fuzz::expect_clean([&] {
    std::istringstream stream(bytes);
    read_stream(std::make_unique<medseg::RecordIOByteSource>(
                    std::make_unique<medseg::IstreamByteSource>(stream, "recordio")),
                uint64_t{64} << 20);
  });
  return 0;
}

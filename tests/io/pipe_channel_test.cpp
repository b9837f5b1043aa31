#include "io/pipe_channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/medseg_record.h"
#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

using Bytes = std::vector<uint8_t>;
using testing::TempDir;

CaseData small_case(const std::string& case_id, int seed) {
  CaseData case_data;
  case_data.case_id = case_id;
  case_data.spatial_shape = {4, 3, 5};
  case_data.image_channels = 2;
  case_data.label_channels = 3;
  case_data.image.resize(2 * 60);
  for (size_t i = 0; i < case_data.image.size(); ++i) {
    case_data.image[i] = static_cast<float>(seed) + 0.25f * static_cast<float>(i);
  }
  case_data.label.resize(3 * 60);
  for (size_t i = 0; i < case_data.label.size(); ++i) case_data.label[i] = (i + seed) % 2;
  return case_data;
}

// An S3 object as medseg's preprocess writes it: a shard of whole records.
Bytes shard_object(const std::vector<std::string>& case_ids, int seed) {
  Bytes object;
  for (const std::string& case_id : case_ids) {
    const Bytes record = encode_record(small_case(case_id, seed++), ImageDType::kFloat32);
    object.insert(object.end(), record.begin(), record.end());
  }
  return object;
}

void append_frame(Bytes* out, uint32_t flag, const uint8_t* data, uint32_t size) {
  const uint32_t header[2] = {kRecordIOMagic, (flag << 29) | size};
  const auto* header_bytes = reinterpret_cast<const uint8_t*>(header);
  out->insert(out->end(), header_bytes, header_bytes + 8);
  out->insert(out->end(), data, data + size);
  out->insert(out->end(), (4 - size % 4) % 4, 0);
}

// Wraps an object as SageMaker's RecordIO does; with `part_sizes` it is split into a start part,
// middle parts and an end part of those sizes (the last takes the rest).
Bytes record_io_wrap(const Bytes& object, const std::vector<uint32_t>& part_sizes = {}) {
  Bytes out;
  if (part_sizes.empty()) {
    append_frame(&out, 0, object.data(), static_cast<uint32_t>(object.size()));
    return out;
  }
  size_t at = 0;
  for (size_t part = 0; part <= part_sizes.size(); ++part) {
    const bool last = part == part_sizes.size();
    const uint32_t size = last ? static_cast<uint32_t>(object.size() - at) : part_sizes[part];
    append_frame(&out, part == 0 ? 1 : (last ? 3 : 2), object.data() + at, size);
    at += size;
  }
  return out;
}

Bytes concat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const Bytes& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// Plays SageMaker's part: after `delay` creates the FIFO, waits (up to 10 s) for a reader, then
// writes `bytes` in uneven chunks. A reader that closes early ends the writing (EPIPE).
class FakeSageMaker {
 public:
  FakeSageMaker(std::string fifo, Bytes bytes, std::chrono::milliseconds delay)
      : thread_([this, fifo, bytes, delay] { run(fifo, bytes, delay); }) {}
  ~FakeSageMaker() { join(); }
  size_t written() const { return written_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run(const std::string& fifo, const Bytes& bytes, std::chrono::milliseconds delay) {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, nullptr);  // EPIPE instead of a signal
    std::this_thread::sleep_for(delay);
    if (::mkfifo(fifo.c_str(), 0600) != 0) return;
    int fd = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (fd < 0 && std::chrono::steady_clock::now() < deadline) {
      fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO until a reader opens
      if (fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (fd < 0) return;
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    size_t chunk = 777;
    while (written_ < bytes.size()) {
      const size_t size = std::min(chunk, bytes.size() - written_);
      const ssize_t n = ::write(fd, bytes.data() + written_, size);
      if (n <= 0) break;
      written_ += static_cast<size_t>(n);
      chunk = chunk * 3 % 5000 + 1;
    }
    ::close(fd);
  }

  size_t written_ = 0;
  std::thread thread_;
};

std::vector<std::string> read_case_ids(ByteSource& source) {
  RecordStreamReader reader(source);
  std::vector<std::string> ids;
  CaseData case_data;
  while (reader.next(&case_data)) ids.push_back(case_data.case_id);
  return ids;
}

PipeChannelOptions options_for(const TempDir& dir, bool record_io) {
  PipeChannelOptions options;
  options.data_dir = dir.path();
  options.channel = "train";
  options.record_io = record_io;
  options.open_timeout_seconds = 10;
  options.poll_interval_seconds = 0.01;
  return options;
}

TEST(PipeChannel, ReadsObjectsBackToBackFromLateFifosEpochAfterEpoch) {
  TempDir dir;
  PipeChannel channel(options_for(dir, /*record_io=*/false));
  EXPECT_EQ(dir.file("train_0"), channel.fifo_path(0));
  const Bytes stream = concat({shard_object({"a", "b"}, 1), shard_object({"c"}, 5)});
  for (int epoch = 0; epoch < 2; ++epoch) {
    FakeSageMaker sagemaker(channel.fifo_path(epoch), stream, std::chrono::milliseconds(100));
    std::unique_ptr<ByteSource> source = channel.open_next_epoch();
    EXPECT_NE(source->name().find("train_" + std::to_string(epoch)), std::string::npos);
    EXPECT_EQ((std::vector<std::string>{"a", "b", "c"}), read_case_ids(*source));
  }
  EXPECT_EQ(2, channel.next_epoch());
}

TEST(PipeChannel, UnwrapsRecordIOIncludingMultiPartObjects) {
  TempDir dir;
  PipeChannel channel(options_for(dir, /*record_io=*/true));
  // Object 2 is split into parts of odd sizes (padding) that cut through its records.
  const Bytes stream = concat({record_io_wrap(shard_object({"a"}, 1)),
                               record_io_wrap(shard_object({"b", "c", "d"}, 2), {13, 1001, 2}),
                               record_io_wrap(shard_object({"e"}, 9), {4})});
  FakeSageMaker sagemaker(channel.fifo_path(0), stream, std::chrono::milliseconds(20));
  std::unique_ptr<ByteSource> source = channel.open_next_epoch();
  EXPECT_EQ((std::vector<std::string>{"a", "b", "c", "d", "e"}), read_case_ids(*source));
  EXPECT_EQ(3, dynamic_cast<RecordIOByteSource&>(*source).objects_read());
}

TEST(PipeChannel, ReaderMayCloseEarlyAndMoveToTheNextEpoch) {
  TempDir dir;
  PipeChannel channel(options_for(dir, /*record_io=*/true));
  std::vector<Bytes> objects;
  for (int i = 0; i < 40; ++i) objects.push_back(record_io_wrap(shard_object({"x", "y"}, i)));
  const Bytes stream = concat(objects);  // larger than a pipe buffer
  {
    FakeSageMaker sagemaker(channel.fifo_path(0), stream, std::chrono::milliseconds(0));
    std::unique_ptr<ByteSource> source = channel.open_next_epoch();
    RecordStreamReader reader(*source);
    CaseData case_data;
    ASSERT_TRUE(reader.next(&case_data));
    EXPECT_EQ("x", case_data.case_id);
    source.reset();  // close early; the writer sees EPIPE
    sagemaker.join();
    EXPECT_LT(sagemaker.written(), stream.size());
  }
  FakeSageMaker sagemaker(channel.fifo_path(1), stream, std::chrono::milliseconds(50));
  std::unique_ptr<ByteSource> source = channel.open_next_epoch();
  EXPECT_EQ(80u, read_case_ids(*source).size());
}

TEST(PipeChannel, MissingFifoTimesOutWithAClearError) {
  TempDir dir;
  PipeChannelOptions options = options_for(dir, false);
  options.channel = "validation";
  options.open_timeout_seconds = 0.2;
  PipeChannel channel(options);
  const auto start = std::chrono::steady_clock::now();
  testing::expect_client_error([&] { channel.open_next_epoch(); },
                               {"channel 'validation'", dir.file("validation_0"), "did not appear",
                                "TrainingInputMode=Pipe"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // A FIFO without a writer also times out instead of blocking forever.
  ASSERT_EQ(0, ::mkfifo(dir.file("validation_0").c_str(), 0600));
  testing::expect_client_error([&] { channel.open_next_epoch(); }, {"no writer"});
}

TEST(PipeChannel, RegularFileStandsInForAFifo) {
  TempDir dir;
  const Bytes stream = shard_object({"local"}, 3);
  testing::write_text(dir.file("train_0"), std::string(stream.begin(), stream.end()));
  PipeChannel channel(options_for(dir, false));
  std::unique_ptr<ByteSource> source = channel.open_next_epoch();
  EXPECT_EQ((std::vector<std::string>{"local"}), read_case_ids(*source));
}

// Malformed RecordIO streams, decoded from memory.
TEST(PipeChannel, MalformedRecordIOIsAClientError) {
  const Bytes object = shard_object({"a"}, 1);
  const Bytes whole = record_io_wrap(object);
  const Bytes split = record_io_wrap(object, {100});
  struct Case {
    std::string name;
    Bytes bytes;
    std::string expected;
  };
  Bytes bad_magic = whole;
  bad_magic[0] ^= 0xff;
  Bytes middle_first = split;
  middle_first[7] = static_cast<uint8_t>((middle_first[7] & 0x1f) | (2 << 5));
  Bytes bad_flag = whole;
  bad_flag[7] |= 0xe0;
  const std::vector<Case> cases = {
      {"bad magic", bad_magic, "magic"},
      {"middle part first", middle_first, "continuation flag 2"},
      {"flag 7", bad_flag, "continuation flag 7"},
      {"cut in a frame header", Bytes(whole.begin(), whole.begin() + 5), "frame header"},
      {"cut in a payload", Bytes(whole.begin(), whole.end() - 30), "payload"},
      {"start part only", Bytes(split.begin(), split.begin() + 108), "multi-part"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::istringstream in(std::string(c.bytes.begin(), c.bytes.end()));
    RecordIOByteSource source(std::make_unique<IstreamByteSource>(in, "channel 'train'"));
    testing::expect_client_error([&] { read_case_ids(source); }, {"channel 'train'", c.expected});
  }
}

TEST(PipeChannel, EmptyObjectsAndEmptyEpochs) {
  const Bytes stream =
      concat({record_io_wrap({}), record_io_wrap(shard_object({"a"}, 1)), record_io_wrap({})});
  std::istringstream in(std::string(stream.begin(), stream.end()));
  RecordIOByteSource source(std::make_unique<IstreamByteSource>(in, "memory"));
  EXPECT_EQ((std::vector<std::string>{"a"}), read_case_ids(source));
  EXPECT_EQ(3, source.objects_read());

  TempDir dir;
  PipeChannel channel(options_for(dir, false));
  FakeSageMaker sagemaker(channel.fifo_path(0), {}, std::chrono::milliseconds(10));
  std::unique_ptr<ByteSource> epoch = channel.open_next_epoch();
  EXPECT_TRUE(read_case_ids(*epoch).empty());
}

}  // namespace
}  // namespace medseg

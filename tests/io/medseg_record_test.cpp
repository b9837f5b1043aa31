#include "io/medseg_record.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libdeflate.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "util/error.h"

namespace medseg {
namespace {

using testing::TempDir;

// A small case with varied values: negatives, zeros, large and tiny magnitudes.
CaseData make_case(const std::string& case_id, std::array<int64_t, 3> shape, int64_t channels,
                   int64_t label_channels, uint32_t seed) {
  CaseData case_data;
  case_data.case_id = case_id;
  case_data.spatial_shape = shape;
  case_data.image_channels = channels;
  case_data.label_channels = label_channels;
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> uniform(-4.0f, 4.0f);
  case_data.image.resize(static_cast<size_t>(channels * case_data.voxels_per_channel()));
  for (size_t i = 0; i < case_data.image.size(); ++i) {
    case_data.image[i] = (i % 7 == 0) ? 0.0f : uniform(random);
  }
  const float specials[] = {-0.0f, 65504.0f, -65504.0f, 1e-3f, -3e-5f, 6e-8f, 1234.5f, -1.0f};
  for (size_t i = 0; i < std::size(specials) && i < case_data.image.size(); ++i) {
    case_data.image[i] = specials[i];
  }
  case_data.label.resize(static_cast<size_t>(label_channels * case_data.voxels_per_channel()));
  for (size_t i = 0; i < case_data.label.size(); ++i) case_data.label[i] = (random() % 3) == 0;
  for (int row = 0; row < 4; ++row) {
    for (int column = 0; column < 4; ++column) {
      case_data.affine[row][column] = row == column ? 1.5 + row : 0.25 * (row - column) + seed;
      case_data.original.affine[row][column] = row == column ? -1.0 : 0.5 * seed;
    }
  }
  case_data.affine[3] = {0, 0, 0, 1};
  case_data.original.affine[3] = {0, 0, 0, 1};
  case_data.original.spatial_shape = {shape[0] * 2, shape[1] + 1, shape[2] + 3};
  return case_data;
}

void expect_same_metadata(const CaseData& expected, const CaseData& actual) {
  EXPECT_EQ(expected.case_id, actual.case_id);
  EXPECT_EQ(expected.spatial_shape, actual.spatial_shape);
  EXPECT_EQ(expected.image_channels, actual.image_channels);
  EXPECT_EQ(expected.label_channels, actual.label_channels);
  EXPECT_EQ(expected.affine, actual.affine);
  EXPECT_EQ(expected.original.affine, actual.original.affine);
  EXPECT_EQ(expected.original.spatial_shape, actual.original.spatial_shape);
  EXPECT_EQ(expected.label, actual.label);
}

void expect_equal_float32(const CaseData& expected, const CaseData& actual) {
  expect_same_metadata(expected, actual);
  ASSERT_EQ(expected.image.size(), actual.image.size());
  EXPECT_EQ(0, std::memcmp(expected.image.data(), actual.image.data(),
                           expected.image.size() * sizeof(float)));
}

// float16 storage: every value is the nearest float16, i.e. within half an ulp (2^-11 relative
// for normal values, 2^-25 absolute for subnormals).
void expect_equal_float16(const CaseData& expected, const CaseData& actual) {
  expect_same_metadata(expected, actual);
  ASSERT_EQ(expected.image.size(), actual.image.size());
  for (size_t i = 0; i < expected.image.size(); ++i) {
    const float value = expected.image[i];
    ASSERT_EQ(half_to_float(float_to_half(value)), actual.image[i]) << "index " << i;
    ASSERT_LE(std::fabs(actual.image[i] - value), std::max(std::fabs(value) * 0x1p-11f, 0x1p-25f))
        << "index " << i << " value " << value;
    ASSERT_EQ(std::signbit(value), std::signbit(actual.image[i])) << "index " << i;
  }
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<CaseData> read_stream(ByteSource& source, RecordReadOptions options = {}) {
  RecordStreamReader reader(source, options);
  std::vector<CaseData> cases;
  CaseData case_data;
  while (reader.next(&case_data)) cases.push_back(std::move(case_data));
  return cases;
}

// ------------------------------------------------------------------------------------------------
// float16

TEST(MedsegRecordHalf, KnownValuesRoundToNearestEven) {
  struct Case {
    float value;
    uint16_t half;
  };
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.5f, 0xc100},
      {65504.0f, 0x7bff},   // largest finite
      {65519.99f, 0x7bff},  // below the midpoint to inf
      {65520.0f, 0x7c00},   // the midpoint rounds to even: inf
      {1e6f, 0x7c00},
      {-1e6f, 0xfc00},
      {0x1p-14f, 0x0400},    // smallest normal
      {0x1p-24f, 0x0001},    // smallest subnormal
      {0x1p-25f, 0x0000},    // tie between 0 and 2^-24: even (0)
      {0x1.8p-24f, 0x0002},  // tie between 2^-24 and 2^-23: even (2^-23)
      {1e-9f, 0x0000},
      {1.0f + 0x1p-11f, 0x3c00},    // tie: even mantissa (1.0)
      {1.0f + 0x1.8p-10f, 0x3c02},  // tie: even mantissa (1 + 2^-9)
      {1.0f + 0x1.1p-11f, 0x3c01},  // just above the tie
      {std::numeric_limits<float>::infinity(), 0x7c00},
      {-std::numeric_limits<float>::infinity(), 0xfc00},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.half, float_to_half(c.value)) << "value " << c.value;
  }
  const uint16_t nan = float_to_half(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(0x7c00, nan & 0x7c00);
  EXPECT_NE(0, nan & 0x03ff);
  EXPECT_TRUE(std::isnan(half_to_float(nan)));
}

TEST(MedsegRecordHalf, EveryHalfRoundTripsAndMidpointsRoundToEven) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> bulk(all.size());
  halves_to_floats(all.data(), bulk.data(), all.size());  // the F16C path where available
  for (uint32_t h = 0; h < 65536; ++h) {
    const float value = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(value)) {
      ASSERT_TRUE(std::isnan(bulk[h]));
      continue;
    }
    ASSERT_EQ(0, std::memcmp(&value, &bulk[h], sizeof(float))) << "half " << h;
    ASSERT_EQ(h, float_to_half(value)) << "half " << h;
  }
  // Between neighbouring positive finite halves a < b: the midpoint goes to the even one, the
  // floats just beside it to the nearer one.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const float low = half_to_float(static_cast<uint16_t>(h));
    const float high = half_to_float(static_cast<uint16_t>(h + 1));
    const float middle = low + (high - low) / 2;  // exact in float32
    const uint16_t even = (h % 2 == 0) ? h : h + 1;
    ASSERT_EQ(even, float_to_half(middle)) << "half " << h;
    ASSERT_EQ(h, float_to_half(std::nextafter(middle, low))) << "half " << h;
    ASSERT_EQ(h + 1, float_to_half(std::nextafter(middle, high))) << "half " << h;
    ASSERT_EQ(h | 0x8000u, float_to_half(-std::nextafter(middle, low))) << "half " << h;
  }
}

// ------------------------------------------------------------------------------------------------
// Round trips

TEST(MedsegRecord, RoundTripFloat32IsExact) {
  TempDir dir;
  const CaseData original = make_case("BRATS_001", {5, 6, 7}, 4, 3, 1);
  write_record_file(dir.file("a.medrec"), {original});
  MappedRecordReader reader(dir.file("a.medrec"));
  ASSERT_EQ(1u, reader.size());
  expect_equal_float32(original, reader.read(0));
  const RecordView view = reader.view(0);
  ASSERT_NE(nullptr, view.image_float32);
  EXPECT_EQ(0u, reinterpret_cast<uintptr_t>(view.image_float32) % 64) << "payload not aligned";
  EXPECT_EQ(0u, reinterpret_cast<uintptr_t>(view.label) % 64);
  EXPECT_EQ(original.image[5], view.image_float32[5]);
  EXPECT_EQ(ImageDType::kFloat32, reader.header(0).image_dtype);
  EXPECT_EQ(0u, reader.header(0).record_bytes % 64);
}

TEST(MedsegRecord, RoundTripFloat16WithinHalfPrecision) {
  TempDir dir;
  CaseData original = make_case("BRATS_002", {9, 4, 3}, 2, 3, 2);
  original.image[20] = std::numeric_limits<float>::infinity();  // kept, not refused
  write_record_file(dir.file("a.medrec"), {original}, {ImageDType::kFloat16});
  MappedRecordReader reader(dir.file("a.medrec"));
  ASSERT_EQ(1u, reader.size());
  EXPECT_EQ(ImageDType::kFloat16, reader.header(0).image_dtype);
  CaseData decoded = reader.read(0);
  EXPECT_TRUE(std::isinf(decoded.image[20]));
  original.image[20] = decoded.image[20] = 0.0f;
  expect_equal_float16(original, decoded);
  EXPECT_NE(nullptr, reader.view(0).image_float16);
}

TEST(MedsegRecord, UnlabelledCaseRoundTrips) {
  TempDir dir;
  const CaseData original = make_case("infer_only", {3, 3, 3}, 1, 0, 3);
  write_record_file(dir.file("a.medrec"), {original});
  MappedRecordReader reader(dir.file("a.medrec"));
  expect_equal_float32(original, reader.read(0));
  EXPECT_EQ(nullptr, reader.view(0).label);
}

TEST(MedsegRecord, Float16OverflowIsRefusedNamingTheCase) {
  CaseData original = make_case("hot_case", {2, 2, 2}, 1, 3, 4);
  original.image[3] = 70000.0f;
  testing::expect_client_error([&] { encode_record(original, ImageDType::kFloat16); },
                               {"hot_case", "70000", "float16", "float32"});
  EXPECT_NO_THROW(encode_record(original, ImageDType::kFloat32));
}

TEST(MedsegRecord, InconsistentCaseIsRefused) {
  CaseData original = make_case("short", {2, 2, 2}, 2, 3, 5);
  original.image.pop_back();
  testing::expect_client_error([&] { encode_record(original, ImageDType::kFloat32); },
                               {"short", "buffers"});
  original = make_case("labels", {2, 2, 2}, 2, 3, 5);
  original.label[0] = 4;
  testing::expect_client_error([&] { encode_record(original, ImageDType::kFloat32); },
                               {"labels", "0 or 1"});
}

TEST(MedsegRecord, SeveralRecordsConcatenatedShardsAndFolders) {
  TempDir dir;
  std::vector<CaseData> cases;
  for (int i = 0; i < 5; ++i) {
    cases.push_back(make_case("case_" + std::to_string(i), {3 + i, 4, 5}, 2, 3, 10 + i));
  }
  write_record_file(dir.file("a.medrec"), {cases[0], cases[1]});
  write_record_file(dir.file("b.medrec"), {cases[2]}, {ImageDType::kFloat16});
  write_record_file(dir.file("c.medrec"), {cases[3], cases[4]});
  {
    MappedRecordReader reader(dir.file("a.medrec"));
    ASSERT_EQ(2u, reader.size());
    expect_equal_float32(cases[1], reader.read(1));
  }
  // `cat` makes a valid shard.
  ASSERT_EQ(0, testing::run_shell("cd " + dir.path() +
                                  " && mkdir -p all/nested && cat a.medrec b.medrec > "
                                  "all/ab.medrec && cp c.medrec all/nested/ && echo x > "
                                  "all/manifest.json")
                   .exit_code);
  MappedRecordReader folder(dir.file("all"));
  ASSERT_EQ(2u, folder.files().size());  // manifest.json ignored
  ASSERT_EQ(5u, folder.size());
  for (size_t i = 0; i < 5; ++i) {
    if (i == 2) {
      expect_equal_float16(cases[i], folder.read(i));
    } else {
      expect_equal_float32(cases[i], folder.read(i));
    }
  }
  EXPECT_NE(folder.describe(4).find("nested/c.medrec: record 1 (case 'case_4')"), std::string::npos)
      << folder.describe(4);

  // read_into decodes into a caller's buffer.
  std::vector<float> image(static_cast<size_t>(folder.header(2).image_values()));
  std::vector<uint8_t> label(folder.header(2).label_bytes);
  folder.read_into(2, image.data(), label.data());
  EXPECT_EQ(cases[2].label, label);
  EXPECT_EQ(half_to_float(float_to_half(cases[2].image[17])), image[17]);
}

TEST(MedsegRecord, WriterIsAtomicAndAbandonedWritesLeaveNothing) {
  TempDir dir;
  {
    RecordWriter writer(dir.file("x.medrec"));
    writer.append(make_case("a", {2, 2, 2}, 1, 3, 1));
    EXPECT_FALSE(testing::file_exists(dir.file("x.medrec")));
  }  // destroyed without finish()
  EXPECT_EQ("", testing::run_shell("ls -A " + dir.path()).stdout_text);
  RecordWriter writer(dir.file("x.medrec"));
  writer.append(make_case("a", {2, 2, 2}, 1, 3, 1));
  writer.finish();
  EXPECT_EQ("x.medrec\n", testing::run_shell("ls -A " + dir.path()).stdout_text);
  EXPECT_EQ(1, writer.records_written());
}

TEST(MedsegRecord, StreamReaderOverFifoAndIstream) {
  TempDir dir;
  std::vector<CaseData> cases;
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 3; ++i) {
    cases.push_back(make_case("s" + std::to_string(i), {6, 5, 4}, 4, 3, 20 + i));
    const auto record =
        encode_record(cases.back(), i == 1 ? ImageDType::kFloat16 : ImageDType::kFloat32);
    bytes.insert(bytes.end(), record.begin(), record.end());
  }
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(0, ::mkfifo(fifo.c_str(), 0600));
  std::thread writer([&] {
    const int fd = ::open(fifo.c_str(), O_WRONLY);
    // Small, uneven writes so that reads return partial records.
    for (size_t at = 0; at < bytes.size(); at += 1000) {
      const size_t size = std::min<size_t>(1000, bytes.size() - at);
      ASSERT_EQ(static_cast<ssize_t>(size), ::write(fd, bytes.data() + at, size));
    }
    ::close(fd);
  });
  const int fd = ::open(fifo.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  FdByteSource source(fd, fifo, /*owns_fd=*/true);
  const std::vector<CaseData> read = read_stream(source);
  writer.join();
  ASSERT_EQ(3u, read.size());
  expect_equal_float32(cases[0], read[0]);
  expect_equal_float16(cases[1], read[1]);
  expect_equal_float32(cases[2], read[2]);

  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  IstreamByteSource istream_source(in, "in-memory");
  EXPECT_EQ(3u, read_stream(istream_source).size());
}

// ------------------------------------------------------------------------------------------------
// Bad input

class MedsegRecordBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    first_ = encode_record(make_case("good", {4, 4, 4}, 2, 3, 30), ImageDType::kFloat32);
    second_ = encode_record(make_case("victim", {4, 4, 4}, 2, 3, 31), ImageDType::kFloat16);
    shard_ = first_;
    shard_.insert(shard_.end(), second_.begin(), second_.end());
  }
  std::string write_shard(const std::vector<uint8_t>& bytes) {
    const std::string path = dir_.file("bad.medrec");
    testing::write_bytes(path, bytes);
    return path;
  }
  // Reads the bytes as a stream; returns how many records came out before any error.
  void read_as_stream(const std::vector<uint8_t>& bytes, RecordReadOptions options = {}) {
    std::istringstream in(std::string(bytes.begin(), bytes.end()));
    IstreamByteSource source(in, "stream 'train'");
    read_stream(source, options);
  }

  TempDir dir_;
  std::vector<uint8_t> first_, second_, shard_;
};

TEST_F(MedsegRecordBadInput, TruncatedFileNamesFileRecordAndOffset) {
  const std::string offset = "byte offset " + std::to_string(first_.size());
  for (size_t cut : {size_t{1}, size_t{100}, size_t{399}, size_t{450}, size_t{600}, size_t{800},
                     second_.size() - 1}) {
    SCOPED_TRACE("cut " + std::to_string(cut));
    std::vector<uint8_t> bytes(shard_.begin(), shard_.begin() + first_.size() + cut);
    const std::string path = write_shard(bytes);
    testing::expect_client_error([&] { MappedRecordReader reader(path); },
                                 {path, "record 1", offset, "truncated"});
    testing::expect_client_error([&] { read_as_stream(bytes); },
                                 {"stream 'train'", "record 1", offset, "truncated"});
  }
}

TEST_F(MedsegRecordBadInput, FlippedPayloadByteFailsTheChecksumOnRead) {
  std::vector<uint8_t> bytes = shard_;
  bytes[first_.size() + 700] ^= 0x10;
  const std::string path = write_shard(bytes);
  MappedRecordReader reader(path);  // indexing checks headers only
  ASSERT_EQ(2u, reader.size());
  EXPECT_NO_THROW(reader.read(0));
  testing::expect_client_error([&] { reader.read(1); },
                               {path, "record 1", "victim", "checksum mismatch"});
  testing::expect_client_error([&] { read_as_stream(bytes); },
                               {"record 1", "victim", "checksum mismatch"});
  // Switched off, the corrupt payload goes through (for salvage tools only).
  RecordReadOptions lax;
  lax.verify_payload_checksum = false;
  MappedRecordReader lax_reader(path, lax);
  EXPECT_NO_THROW(lax_reader.read(1));
}

// A CRC-valid record whose labels are not 0/1 masks was not written by medseg (issue 14: labels
// 7 or 255 trained normally): both readers refuse it, naming the case.
TEST_F(MedsegRecordBadInput, LabelValuesOtherThanZeroOrOneAreRefused) {
  std::vector<uint8_t> bytes = first_;
  const std::string path = write_shard(bytes);
  RecordHeader header;
  {
    MappedRecordReader reader(path);
    header = reader.header(0);
  }
  bytes[header.label_offset + 5] = 7;
  const size_t payload_end = header.record_bytes - kRecordTrailerBytes;
  const uint32_t crc =
      libdeflate_crc32(0, bytes.data() + header.header_bytes, payload_end - header.header_bytes);
  std::memcpy(bytes.data() + payload_end + 8, &crc, 4);  // a valid checksum for the new payload
  const std::string forged = write_shard(bytes);
  MappedRecordReader reader(forged);
  testing::expect_client_error([&] { reader.read(0); },
                               {"good", "label value 7 at voxel 5", "expected 0 or 1"});
  testing::expect_client_error([&] { read_as_stream(bytes); }, {"good", "label value 7"});
}

TEST_F(MedsegRecordBadInput, FlippedHeaderBytesAreCaughtAtIndexing) {
  for (size_t position : {size_t{45}, size_t{130}, size_t{401}, size_t{20}}) {
    SCOPED_TRACE("position " + std::to_string(position));
    std::vector<uint8_t> bytes = shard_;
    bytes[first_.size() + position] ^= 0x01;
    const std::string path = write_shard(bytes);
    testing::expect_client_error([&] { MappedRecordReader reader(path); },
                                 {path, "record 1", "checksum"});
    testing::expect_client_error([&] { read_as_stream(bytes); }, {"record 1", "checksum"});
  }
}

TEST_F(MedsegRecordBadInput, GarbageEmptyAndMissingFiles) {
  std::vector<uint8_t> garbage(5000);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 37 + 11);
  std::string path = write_shard(garbage);
  testing::expect_client_error([&] { MappedRecordReader reader(path); },
                               {path, "record 0", "bad magic"});
  testing::expect_client_error([&] { read_as_stream(garbage); }, {"record 0", "bad magic"});
  // RecordIO-wrapped data read without unwrapping gets a hint.
  std::vector<uint8_t> wrapped = {0x0a, 0x23, 0xd7, 0xce};
  wrapped.insert(wrapped.end(), shard_.begin(), shard_.end());
  testing::expect_client_error([&] { read_as_stream(wrapped); }, {"RecordWrapperType"});
  path = write_shard({});
  testing::expect_client_error([&] { MappedRecordReader reader(path); }, {path, "empty"});
  testing::expect_client_error([&] { MappedRecordReader reader(dir_.file("nope.medrec")); },
                               {"nope.medrec", "no such"});
  ASSERT_EQ(0, ::mkdir(dir_.file("empty_dir").c_str(), 0700));
  testing::expect_client_error([&] { MappedRecordReader reader(dir_.file("empty_dir")); },
                               {"empty_dir", "no record shards"});
  // An empty stream is simply no records.
  read_as_stream({});
}

TEST_F(MedsegRecordBadInput, UnsupportedVersion) {
  std::vector<uint8_t> bytes = first_;
  bytes[8] = 7;
  testing::expect_client_error([&] { MappedRecordReader reader(write_shard(bytes)); },
                               {"bad.medrec", "record 0", "unsupported record version 7"});
}

// Random damage (flips, cuts, splices) gives a ClientError or, when it hits only padding, a
// clean read; never a crash or another kind of error.
TEST_F(MedsegRecordBadInput, RandomDamageIsAlwaysAClientError) {
  std::mt19937 random(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<uint8_t> bytes = shard_;
    switch (trial % 3) {
      case 0:
        for (int flips = 1 + random() % 3; flips > 0; --flips) {
          bytes[random() % bytes.size()] ^= static_cast<uint8_t>(1 + random() % 255);
        }
        break;
      case 1:
        bytes.resize(1 + random() % (bytes.size() - 1));
        break;
      default:
        bytes.erase(bytes.begin() + random() % bytes.size());
        break;
    }
    // Every damage is caught (CRCs over the header and the payload, lengths, the end marker),
    // by both readers, as a ClientError; anything else escapes and fails the test.
    const std::string path = write_shard(bytes);
    bool mapped_refused = false, stream_refused = false;
    try {
      MappedRecordReader reader(path);
      for (size_t i = 0; i < reader.size(); ++i) reader.read(i);
    } catch (const ClientError&) {
      mapped_refused = true;
    }
    try {
      read_as_stream(bytes);
    } catch (const ClientError&) {
      stream_refused = true;
    }
    EXPECT_TRUE(mapped_refused) << "trial " << trial << " (damage kind " << trial % 3 << ")";
    EXPECT_TRUE(stream_refused) << "trial " << trial << " (damage kind " << trial % 3 << ")";
  }
}

// A header claiming an absurd payload, with a valid header CRC (as a malicious or buggy writer
// could produce), must be refused before anything is allocated.
TEST_F(MedsegRecordBadInput, AbsurdSizesAreRefusedBeforeAllocating) {
  std::vector<uint8_t> bytes = first_;
  const int64_t huge_shape[3] = {100000, 100000, 1000};
  std::memcpy(&bytes[40], huge_shape, sizeof(huge_shape));
  const int64_t channels = 4;
  std::memcpy(&bytes[64], &channels, 8);
  // Make the stored sizes consistent with the shape, as a real writer would.
  const uint64_t voxels = 100000ull * 100000ull * 1000ull;
  const uint64_t header_bytes = 448;  // round_up(400 + 4, 64)
  const uint64_t image_bytes = voxels * 4 * 4;
  const uint64_t label_offset = (header_bytes + image_bytes + 63) / 64 * 64;
  const uint64_t label_bytes = voxels * 3;
  const uint64_t record_bytes = (label_offset + label_bytes + 16 + 63) / 64 * 64;
  std::memcpy(&bytes[16], &record_bytes, 8);
  std::memcpy(&bytes[88], &image_bytes, 8);
  std::memcpy(&bytes[96], &label_offset, 8);
  std::memcpy(&bytes[104], &label_bytes, 8);
  uLong crc = ::crc32(0, bytes.data(), 396);
  crc = ::crc32(crc, bytes.data() + 400, 4);
  const uint32_t crc32_value = static_cast<uint32_t>(crc);
  std::memcpy(&bytes[396], &crc32_value, 4);
  testing::expect_client_error([&] { MappedRecordReader reader(write_shard(bytes)); },
                               {"bad.medrec", "record 0", "truncated"});
  RecordReadOptions options;
  options.max_record_bytes = uint64_t{1} << 30;
  testing::expect_client_error([&] { read_as_stream(bytes, options); },
                               {"stream 'train'", "record 0", "limit"});
}

// Case ids name output files and TensorBoard tags: a CRC-valid record whose id holds a path
// separator, a control character or bytes that are not UTF-8 is refused, naming the problem and
// showing the id escaped; the writer refuses such ids, and "..", too.
TEST_F(MedsegRecordBadInput, InvalidCaseIdsAreRefused) {
  const std::pair<const char*, const char*> variants[] = {
      {"go/d", "path separator at byte 2"},
      {"go\x01" "d", "control character at byte 2"},
      {"\xff\xfe\x80\x80", "not valid UTF-8 at byte 0"},
      {"\xc0\xafxy", "not valid UTF-8 at byte 0"},  // an overlong '/'
  };
  for (const auto& [id, problem] : variants) {
    SCOPED_TRACE(problem);
    std::vector<uint8_t> bytes = first_;
    std::memcpy(&bytes[400], id, 4);  // "good" is 4 bytes long
    uLong crc = ::crc32(0, bytes.data(), 396);
    crc = ::crc32(crc, bytes.data() + 400, 4);
    const uint32_t crc32_value = static_cast<uint32_t>(crc);
    std::memcpy(&bytes[396], &crc32_value, 4);
    testing::expect_client_error([&] { MappedRecordReader reader(write_shard(bytes)); },
                                 {"bad.medrec", "record 0", "invalid case id", problem});
    testing::expect_client_error([&] { read_as_stream(bytes); },
                                 {"stream 'train'", "invalid case id", problem});
  }
  EXPECT_NE(std::string(printable_case_id("go\x01" "d")).find("go\\x01d"), std::string::npos);
  for (const std::string& id : {std::string(".."), std::string("a\\b"), std::string()}) {
    testing::expect_client_error(
        [&] { encode_record(make_case(id, {2, 2, 2}, 1, 3, 5), ImageDType::kFloat32); },
        {"invalid case id"});
  }
  EXPECT_EQ(case_id_problem("BraTS2021_00495 \xc3\xa9t\xc3\xa9"), "");  // UTF-8 is fine
}

// ------------------------------------------------------------------------------------------------
// Python reader

TEST(MedsegRecordPython, ScriptReadsWhatTheWriterWrote) {
  if (testing::run_shell("/usr/bin/python3 -c 'import numpy' 2>&1").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with numpy is needed (apt-get install python3-numpy)";
  }
  TempDir dir;
  std::vector<CaseData> cases = {make_case("py_f32", {5, 4, 3}, 4, 3, 40),
                                 make_case("py_f16", {3, 4, 5}, 2, 0, 41)};
  RecordWriter writer(dir.file("py.medrec"));
  writer.append(cases[0]);
  writer.finish();
  write_record_file(dir.file("py16.medrec"), {cases[1]}, {ImageDType::kFloat16});
  ASSERT_EQ(0, testing::run_shell("cat " + dir.file("py.medrec") + " " + dir.file("py16.medrec") +
                                  " > " + dir.file("both.medrec"))
                   .exit_code);
  const std::string script = std::string(MEDSEG_SOURCE_DIR) + "/scripts/read_records.py";
  const testing::CommandResult summary =
      testing::run_shell("/usr/bin/python3 " + script + " " + dir.file("both.medrec") + " 2>&1");
  ASSERT_EQ(0, summary.exit_code) << summary.output;
  EXPECT_NE(summary.output.find("py_f32"), std::string::npos) << summary.output;
  EXPECT_NE(summary.output.find("float16"), std::string::npos) << summary.output;

  const std::string program =
      "import json, sys; sys.path.insert(0, '" + std::string(MEDSEG_SOURCE_DIR) +
      "/scripts'); import read_records as r; print(json.dumps([{'case_id': c['case_id'], "
      "'shape': list(c['image'].shape), 'dtype': str(c['image'].dtype), 'image': "
      "c['image'].ravel().tolist(), 'label': c['label'].ravel().tolist(), 'label_shape': "
      "list(c['label'].shape), 'affine': c['affine'].tolist(), 'original_shape': "
      "list(c['original_spatial_shape']), 'original_affine': c['original_affine'].tolist()} "
      "for c in r.iter_records(sys.argv[1])]))";
  const testing::CommandResult result = testing::run_shell(
      "/usr/bin/python3 -c \"" + program + "\" " + dir.file("both.medrec") + " 2>&1");
  ASSERT_EQ(0, result.exit_code) << result.output;
  const nlohmann::json decoded = nlohmann::json::parse(result.stdout_text);
  ASSERT_EQ(2u, decoded.size());
  for (size_t k = 0; k < 2; ++k) {
    const CaseData& c = cases[k];
    const nlohmann::json& d = decoded[k];
    EXPECT_EQ(c.case_id, d["case_id"]);
    EXPECT_EQ("float32", d["dtype"]);
    EXPECT_EQ((std::vector<int64_t>{c.image_channels, c.spatial_shape[0], c.spatial_shape[1],
                                    c.spatial_shape[2]}),
              d["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ((std::vector<int64_t>{c.label_channels, c.spatial_shape[0], c.spatial_shape[1],
                                    c.spatial_shape[2]}),
              d["label_shape"].get<std::vector<int64_t>>());
    const std::vector<float> image = d["image"].get<std::vector<float>>();
    ASSERT_EQ(c.image.size(), image.size());
    for (size_t i = 0; i < image.size(); ++i) {
      const float expected = k == 0 ? c.image[i] : half_to_float(float_to_half(c.image[i]));
      ASSERT_EQ(expected, image[i]) << c.case_id << " index " << i;
    }
    EXPECT_EQ(c.label, d["label"].get<std::vector<uint8_t>>());
    for (int row = 0; row < 4; ++row) {
      for (int column = 0; column < 4; ++column) {
        EXPECT_EQ(c.affine[row][column], d["affine"][row][column].get<double>());
        EXPECT_EQ(c.original.affine[row][column], d["original_affine"][row][column].get<double>());
      }
    }
    EXPECT_EQ(
        (std::vector<int64_t>(c.original.spatial_shape.begin(), c.original.spatial_shape.end())),
        d["original_shape"].get<std::vector<int64_t>>());
  }

  // The Python reader detects corruption too.
  std::vector<uint8_t> bytes = read_bytes(dir.file("both.medrec"));
  bytes[bytes.size() - 200] ^= 0x40;
  testing::write_bytes(dir.file("bad.medrec"), bytes);
  const testing::CommandResult bad =
      testing::run_shell("/usr/bin/python3 " + script + " " + dir.file("bad.medrec") + " 2>&1");
  EXPECT_NE(0, bad.exit_code);
  EXPECT_NE(bad.output.find("checksum"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace medseg

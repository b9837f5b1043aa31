#include "io/tensorboard_events.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace medseg {

namespace {

// Reflected CRC-32C polynomial (Castagnoli).
constexpr uint32_t kCrc32cPolynomial = 0x82f63b78u;
constexpr uint32_t kCrcMaskDelta = 0xa282ead8u;

std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t byte = 0; byte < 256; ++byte) {
    uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kCrc32cPolynomial : 0u);
    table[byte] = crc;
  }
  return table;
}

// Protobuf wire format: a field's key is (number << 3) | wire type.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_key(std::string& out, uint32_t field, WireType type) {
  put_varint(out, field << 3 | type);
}

void put_varint_field(std::string& out, uint32_t field, int64_t value) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(value));  // negative int64: ten bytes, as protobuf does
}

void put_bytes_field(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

template <typename T>
void put_fixed_field(std::string& out, uint32_t field, T value) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "fixed32 or fixed64");
  put_key(out, field, sizeof(T) == 4 ? kFixed32 : kFixed64);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts (x86-64, aarch64)
  out.append(bytes, sizeof(T));
}

// Field numbers of tensorflow's Event, Summary, Summary.Value, Summary.Image and SessionLog.
namespace event {
constexpr uint32_t kWallTime = 1, kStep = 2, kFileVersion = 3, kSummary = 5, kSessionLog = 7;
}
namespace summary {
constexpr uint32_t kValue = 1;
}
namespace value {
constexpr uint32_t kTag = 1, kSimpleValue = 2, kImage = 4;
}
namespace image {
constexpr uint32_t kHeight = 1, kWidth = 2, kColorspace = 3, kEncoded = 4;
}
namespace session_log {
constexpr uint32_t kStatus = 1;
constexpr int64_t kStart = 1;
}  // namespace session_log

std::string summary_with(const std::string& value_fields) {
  std::string summary_message;
  put_bytes_field(summary_message, summary::kValue, value_fields);
  std::string fields;
  put_bytes_field(fields, event::kSummary, summary_message);
  return fields;
}

double unix_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = crc32c_table();
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ bytes[i]) & 0xffu] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + kCrcMaskDelta;
}

TensorBoardWriter::TensorBoardWriter(const std::string& folder) {
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const auto seconds = static_cast<int64_t>(unix_seconds());
  path_ = folder + "/events.out.tfevents." + std::to_string(seconds) + "." + host + "." +
          std::to_string(getpid());
  file_ = std::fopen(path_.c_str(), "ab");
  if (file_ == nullptr) {
    throw PlatformError("cannot write the TensorBoard event file " + path_ + ": " +
                        std::strerror(errno));
  }
  std::string fields;
  put_bytes_field(fields, event::kFileVersion, "brain.Event:2");
  write_event(0, fields);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::add_scalar(const std::string& tag, int64_t step, double value) {
  std::string value_fields;
  put_bytes_field(value_fields, value::kTag, tag);
  put_fixed_field(value_fields, value::kSimpleValue, static_cast<float>(value));
  write_event(step, summary_with(value_fields));
}

void TensorBoardWriter::add_image(const std::string& tag, int64_t step, const std::string& png,
                                  int width, int height, int channels) {
  std::string image_fields;
  put_varint_field(image_fields, image::kHeight, height);
  put_varint_field(image_fields, image::kWidth, width);
  put_varint_field(image_fields, image::kColorspace, channels);
  put_bytes_field(image_fields, image::kEncoded, png);
  std::string value_fields;
  put_bytes_field(value_fields, value::kTag, tag);
  put_bytes_field(value_fields, value::kImage, image_fields);
  write_event(step, summary_with(value_fields));
}

void TensorBoardWriter::add_session_start(int64_t step) {
  std::string log_fields;
  put_varint_field(log_fields, session_log::kStatus, session_log::kStart);
  std::string fields;
  put_bytes_field(fields, event::kSessionLog, log_fields);
  write_event(step, fields);
}

void TensorBoardWriter::flush() {
  if (std::fflush(file_) != 0) {
    throw PlatformError("cannot write the TensorBoard event file " + path_ + ": " +
                        std::strerror(errno));
  }
}

void TensorBoardWriter::write_event(int64_t step, const std::string& fields) {
  std::string event_message;
  put_fixed_field(event_message, event::kWallTime, unix_seconds());
  put_varint_field(event_message, event::kStep, step);
  event_message += fields;
  // Record: uint64 length, masked CRC of the length, the data, masked CRC of the data.
  const uint64_t length = event_message.size();
  char header[12];
  std::memcpy(header, &length, 8);
  const uint32_t length_crc = masked_crc32c(header, 8);
  std::memcpy(header + 8, &length_crc, 4);
  const uint32_t data_crc = masked_crc32c(event_message.data(), event_message.size());
  std::string record(header, sizeof(header));
  record += event_message;
  record.append(reinterpret_cast<const char*>(&data_crc), 4);
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size()) {
    throw PlatformError("cannot write the TensorBoard event file " + path_ + ": " +
                        std::strerror(errno));
  }
}

}  // namespace medseg

// medseg records: the on-disk and on-stream form of preprocessed cases (one CaseData per record),
// a shard writer, a memory-mapped reader for shard files and folders of shards (File mode) and a
// sequential reader for streams (Pipe mode).
//
// Byte layout of one record (version 1). All integers little-endian, floats IEEE-754
// little-endian; offsets are from the first byte of the record.
//
//   offset size  field
//   0      8     magic, the ASCII bytes "MEDSEGRC"
//   8      4     u32 version = 1
//   12     4     u32 header_bytes = round_up(400 + case_id_bytes, 64): where the image starts
//   16     8     u64 record_bytes: the whole record, trailer included; a multiple of 64
//   24     4     u32 case_id_bytes (UTF-8, no terminator), at most 4096
//   28     4     u32 image_dtype: 1 = float16, 2 = float32
//   32     4     u32 label_dtype: 0 = uint8 (the only one)
//   36     4     u32 flags = 0 (reserved)
//   40     24    i64[3] spatial_shape X, Y, Z (each >= 1)
//   64     8     i64 image_channels (>= 1)
//   72     8     i64 label_channels (0 = unlabelled, else usually 3: TC, WT, ET)
//   80     8     u64 image_offset = header_bytes
//   88     8     u64 image_bytes = image_channels * X * Y * Z * (2 or 4)
//   96     8     u64 label_offset = round_up(image_offset + image_bytes, 64)
//   104    8     u64 label_bytes = label_channels * X * Y * Z
//   112    128   f64[16] affine, row-major 4x4, voxel -> world (mm) of this grid
//   240    24    i64[3] original spatial shape (the source NIfTI's X, Y, Z)
//   264    128   f64[16] original affine, row-major
//   392    4     u32 reserved = 0
//   396    4     u32 header_crc32: CRC-32 of bytes [0, 396) followed by the case id bytes
//   400    n     case id bytes, then zeros up to header_bytes
//   image_offset  image, C-order [C, X, Y, Z] (z fastest), then zeros up to label_offset
//   label_offset  label, C-order [L, X, Y, Z] uint8 (values 0/1), then zeros up to the trailer
//   record_bytes - 16: trailer
//          8     u64 record_bytes (again)
//          4     u32 payload_crc32: CRC-32 of bytes [header_bytes, record_bytes - 16)
//          4     end magic, the ASCII bytes "MEND"
//
// CRC-32 is zlib's (polynomial 0xEDB88320, as Python's zlib.crc32), computed with libdeflate.
// record_bytes = round_up(label_offset + label_bytes + 16, 64). Every offset is determined by the
// shape fields; readers reject records whose stored offsets disagree with them.
//
// Properties that follow:
//  - Records are self-delimiting and a multiple of 64 bytes long, so a shard file is just records
//    back to back (`cat a.medrec b.medrec > c.medrec` is a valid shard) and, in a memory-mapped
//    file, every payload is 64-byte aligned: float32 images can be used in place (zero-copy).
//  - Truncation is detected by the length fields and the trailer, corruption by the two CRCs; the
//    header CRC is checked before any length is trusted, and lengths are bounded by the bytes left
//    in the file (mapped reader) or RecordReadOptions::max_record_bytes (streams) before anything
//    is allocated.
//  - float16 images are written with round-to-nearest-even. Finite values whose magnitude would
//    round beyond float16's largest finite value (65504) are refused with a ClientError (they
//    would become infinities and poison training; such images are not normalised and should be
//    stored as float32). Infinities and NaNs in the input are kept as such. Values below 2^-24
//    round to (signed) zero; values below 2^-14 lose precision (float16 subnormals).
//
// Errors: every malformed, truncated or corrupt record raises ClientError naming the file (or
// stream), the record index and its byte offset. System failures raise PlatformError.
// Thread safety: MappedRecordReader is immutable after construction and its const methods may be
// called from any number of threads; writers and stream readers are used by one thread at a time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/byte_source.h"
#include "io/case_data.h"

namespace medseg {

inline constexpr uint32_t kRecordVersion = 1;
inline constexpr size_t kRecordFixedHeaderBytes = 400;
inline constexpr size_t kRecordTrailerBytes = 16;
inline constexpr size_t kRecordAlignment = 64;
inline constexpr size_t kMaxCaseIdBytes = 4096;
// Shard files in a folder are recognised by this suffix; other files are ignored.
inline constexpr const char* kShardFileSuffix = ".medrec";

// What is wrong with `case_id` as a case id, "" when nothing: it must be 1..kMaxCaseIdBytes bytes
// of UTF-8 without control characters, '/' or '\\', and not "." or "..", because case ids name
// output files (infer, serve), TensorBoard tags and log lines. Records are refused without one.
std::string case_id_problem(const std::string& case_id);

// `case_id` fit for a message: control and non-ASCII bytes as \xNN, at most 80 characters.
std::string printable_case_id(const std::string& case_id);

enum class ImageDType : uint32_t { kFloat16 = 1, kFloat32 = 2 };

// "float16" / "float32".
const char* image_dtype_name(ImageDType dtype);
// Parses "float16"/"fp16"/"half" or "float32"/"fp32"/"float"; ClientError naming `what` otherwise.
ImageDType parse_image_dtype(const std::string& text, const std::string& what);

// float16 <-> float32, IEEE semantics: round-to-nearest-even, overflow to +-inf, NaN stays NaN.
uint16_t float_to_half(float value);
float half_to_float(uint16_t half);
// Converts `count` float16 values; uses the CPU's F16C instructions when available.
void halves_to_floats(const uint16_t* halves, float* floats, size_t count);

// What a record says about itself, decoded and validated.
struct RecordHeader {
  std::string case_id;
  std::array<int64_t, 3> spatial_shape{0, 0, 0};
  int64_t image_channels = 0;
  int64_t label_channels = 0;
  ImageDType image_dtype = ImageDType::kFloat32;
  Affine affine = identity_affine();
  OriginalGeometry original;
  uint64_t header_bytes = 0;
  uint64_t record_bytes = 0;
  uint64_t image_offset = 0;
  uint64_t image_bytes = 0;
  uint64_t label_offset = 0;
  uint64_t label_bytes = 0;

  int64_t voxels_per_channel() const {
    return spatial_shape[0] * spatial_shape[1] * spatial_shape[2];
  }
  int64_t image_values() const { return image_channels * voxels_per_channel(); }
};

// Serialises one case. Throws ClientError when the case is inconsistent (buffer sizes that do
// not match shape and channels, an empty or over-long case id, label values other than 0/1) or
// when a float16 image would overflow (see above); the message names the case id.
std::vector<uint8_t> encode_record(const CaseData& case_data, ImageDType image_dtype);
// The same into `record` (its capacity reused: a writer encodes case after case into one buffer).
void encode_record(const CaseData& case_data, ImageDType image_dtype, std::vector<uint8_t>& record);

struct RecordWriterOptions {
  ImageDType image_dtype = ImageDType::kFloat32;  // how images are stored
};

// Appends records to a new shard file. Records go to a temporary file next to `path`
// ("<path>.tmp-<pid>-XXXXXX", not matched by kShardFileSuffix); finish() fsyncs it and renames it
// to `path`, so `path` either does not exist or holds every record. Destroying a writer without
// finish() removes the temporary file. Write failures (disk full) raise PlatformError.
class AtomicFile;

class RecordWriter {
 public:
  explicit RecordWriter(const std::string& path, RecordWriterOptions options = {});
  ~RecordWriter();
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  void append(const CaseData& case_data);
  // REQUIRES: not yet finished.
  void finish();

  int64_t records_written() const { return records_written_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  std::string path_;
  RecordWriterOptions options_;
  std::unique_ptr<AtomicFile> file_;  // null once finished
  std::vector<uint8_t> record_;       // the record being written, reused
  int64_t records_written_ = 0;
  uint64_t bytes_written_ = 0;
};

// Writes `cases` to a shard file at `path` (atomically, as RecordWriter).
void write_record_file(const std::string& path, const std::vector<CaseData>& cases,
                       RecordWriterOptions options = {});

struct RecordReadOptions {
  // Check the payload CRC when a record is read (mapped reader: the first read of each record).
  bool verify_payload_checksum = true;
  // Streams only: refuse records whose header claims more bytes than this. Mapped files are
  // bounded by their size instead.
  uint64_t max_record_bytes = uint64_t{4} << 30;
};

// A record inside a mapped file, payloads pointing into the mapping (valid while the reader
// lives). Exactly one of image_float32 / image_float16 is set, by header.image_dtype.
struct RecordView {
  const RecordHeader* header = nullptr;
  const float* image_float32 = nullptr;  // 64-byte aligned
  const uint16_t* image_float16 = nullptr;
  const uint8_t* label = nullptr;  // nullptr when label_channels == 0
};

// Maps one shard file, or every "*.medrec" file under a folder (recursively, sorted by path), and
// indexes their records by scanning headers (header CRC, lengths and trailers are checked at
// construction; payload CRCs on first read). Index i counts records across files in that order.
// Throws ClientError for a missing path, a folder without shards, or any malformed record.
class MappedRecordReader {
 public:
  explicit MappedRecordReader(const std::string& path, RecordReadOptions options = {});
  ~MappedRecordReader();
  MappedRecordReader(const MappedRecordReader&) = delete;
  MappedRecordReader& operator=(const MappedRecordReader&) = delete;

  size_t size() const { return entries_.size(); }
  const std::vector<std::string>& files() const { return file_paths_; }
  // REQUIRES: index < size() (else InternalError) for all the accessors below.
  const RecordHeader& header(size_t index) const;
  // "<file>: record <k> (case '<id>') at byte offset <n>", for messages.
  std::string describe(size_t index) const;

  // The record's payload in place (checksum verified first when configured).
  RecordView view(size_t index) const;
  // Decodes the image into `out` (header(index).image_values() floats) and, when `label_out` is
  // not null, the label into it (label_channels * voxels bytes).
  void read_into(size_t index, float* out, uint8_t* label_out) const;
  // The whole case, decoded to float32.
  CaseData read(size_t index) const;

 private:
  struct MappedFile {
    std::string path;
    const uint8_t* data = nullptr;
    size_t size = 0;
  };
  struct Entry {
    size_t file = 0;
    uint64_t offset = 0;
    size_t index_in_file = 0;
    RecordHeader header;
  };

  void map_and_index(const std::string& path);
  const Entry& entry(size_t index) const;
  void prefault(const Entry& entry) const;
  void verify_payload(size_t index) const;

  RecordReadOptions options_;
  std::vector<std::string> file_paths_;
  std::vector<MappedFile> files_;
  std::vector<Entry> entries_;
  std::unique_ptr<std::atomic<bool>[]> verified_;
};

// Reads records one after another from a stream that cannot seek (a FIFO in Pipe mode, a pipe,
// an std::istream), with no look-ahead past the current record. The source must outlive it.
class RecordStreamReader {
 public:
  explicit RecordStreamReader(ByteSource& source, RecordReadOptions options = {});

  // Reads the next record into *out and returns true, or returns false when the stream ends
  // exactly at a record boundary. A stream ending inside a record, or a malformed record, raises
  // ClientError naming the source, the record index and its byte offset in the stream (*out is
  // then unspecified). *out's buffers are reused: pass the same CaseData to avoid allocations.
  bool next(CaseData* out);

  int64_t records_read() const { return records_read_; }
  uint64_t bytes_read() const { return offset_; }

 private:
  void read_exactly(void* buffer, size_t size, uint64_t record_offset, uint64_t record_bytes);

  ByteSource& source_;
  RecordReadOptions options_;
  int64_t records_read_ = 0;
  uint64_t offset_ = 0;
  std::vector<uint8_t> header_buffer_;
  std::vector<uint16_t> half_buffer_;
};

}  // namespace medseg

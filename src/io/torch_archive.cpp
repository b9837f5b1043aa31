#include "io/torch_archive.h"

#include <ATen/core/Tensor.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>

#include <cstring>
#include <vector>

#include "util/error.h"

namespace medseg {
namespace {

uint64_t little_endian(const uint8_t* bytes, int count) {
  uint64_t value = 0;
  for (int i = count - 1; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

// What follows an opcode.
enum class Argument {
  kNone,
  kFixed,         // `width` bytes
  kLength,        // a `width`-byte length, then that many bytes
  kLine,          // text up to a newline
  kTwoLines,      // GLOBAL, INST: module and name lines
  kFrame,         // FRAME: an 8-byte length of the opcodes that follow (not skipped)
  kPut,           // a `width`-byte memo index that defines an entry
  kGet,           // a `width`-byte memo index that reads one
  kPutLine,       // PUT: a decimal memo index on a line
  kGetLine,       // GET
  kMemoize,       // MEMOIZE: defines the next memo entry
  kStop,
  kUnknown,
};

struct Opcode {
  Argument argument = Argument::kUnknown;
  int width = 0;
};

Opcode opcode_of(uint8_t code) {
  switch (code) {
    case 'K': case 0x80: case 0x82: return {Argument::kFixed, 1};
    case 'M': case 0x83: return {Argument::kFixed, 2};
    case 'J': case 0x84: return {Argument::kFixed, 4};
    case 'G': return {Argument::kFixed, 8};
    case 'q': return {Argument::kPut, 1};
    case 'r': return {Argument::kPut, 4};
    case 'h': return {Argument::kGet, 1};
    case 'j': return {Argument::kGet, 4};
    case 'U': case 'C': case 0x8c: case 0x8a: return {Argument::kLength, 1};
    case 'T': case 'X': case 'B': case 0x8b: return {Argument::kLength, 4};
    case 0x8d: case 0x8e: case 0x96: return {Argument::kLength, 8};
    case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': return {Argument::kLine, 0};
    case 'p': return {Argument::kPutLine, 0};
    case 'g': return {Argument::kGetLine, 0};
    case 'c': case 'i': return {Argument::kTwoLines, 0};
    case 0x95: return {Argument::kFrame, 8};
    case 0x94: return {Argument::kMemoize, 0};
    case '.': return {Argument::kStop, 0};
    case '(': case '0': case '1': case '2': case 'N': case 'R': case 'Q': case ']': case 'a':
    case 'b': case 'd': case '}': case 'e': case 'l': case ')': case 't': case 's': case 'u':
    case 'o': case 0x81: case 0x85: case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f:
    case 0x90: case 0x91: case 0x92: case 0x93: case 0x97: case 0x98:
      return {Argument::kNone, 0};
    default: return {Argument::kUnknown, 0};
  }
}

std::string at_offset(size_t offset) { return " at byte " + std::to_string(offset); }

}  // namespace

std::string pickle_problem(const uint8_t* data, size_t size) {
  uint64_t memo_entries = 0;  // indices 0 .. memo_entries - 1 are defined
  size_t at = 0;
  const auto line_end = [&](size_t from) -> size_t {
    const void* newline = from < size ? std::memchr(data + from, '\n', size - from) : nullptr;
    return newline ? static_cast<size_t>(static_cast<const uint8_t*>(newline) - data)
                   : std::string::npos;
  };
  const auto check_put = [&](uint64_t index, size_t where) -> std::string {
    if (index > memo_entries) {
      return "memo index " + std::to_string(index) + at_offset(where) + " skips entries (" +
             std::to_string(memo_entries) + " defined so far)";
    }
    if (index == memo_entries) ++memo_entries;
    return "";
  };
  const auto check_get = [&](uint64_t index, size_t where) -> std::string {
    if (index >= memo_entries) {
      return "memo index " + std::to_string(index) + at_offset(where) + " was never defined";
    }
    return "";
  };
  while (at < size) {
    const size_t start = at;
    const Opcode op = opcode_of(data[at++]);
    if (op.argument == Argument::kStop || op.argument == Argument::kUnknown) return "";
    std::string problem;
    switch (op.argument) {
      case Argument::kNone:
        break;
      case Argument::kMemoize:
        ++memo_entries;
        break;
      case Argument::kFixed:
      case Argument::kPut:
      case Argument::kGet:
      case Argument::kLength:
      case Argument::kFrame: {
        if (size - at < static_cast<size_t>(op.width)) {
          return "the pickle ends inside the opcode" + at_offset(start);
        }
        const uint64_t value = little_endian(data + at, op.width);
        at += static_cast<size_t>(op.width);
        if (op.argument == Argument::kPut) problem = check_put(value, start);
        if (op.argument == Argument::kGet) problem = check_get(value, start);
        if ((op.argument == Argument::kLength || op.argument == Argument::kFrame) &&
            value > size - at) {
          return "a length of " + std::to_string(value) + " bytes" + at_offset(start) +
                 ", past the end of the pickle (" + std::to_string(size - at) + " bytes left)";
        }
        if (op.argument == Argument::kLength) at += static_cast<size_t>(value);
        break;
      }
      case Argument::kLine:
      case Argument::kPutLine:
      case Argument::kGetLine:
      case Argument::kTwoLines: {
        size_t end = line_end(at);
        if (end != std::string::npos && op.argument == Argument::kTwoLines) end = line_end(end + 1);
        if (end == std::string::npos) return "an unterminated text argument" + at_offset(start);
        if (op.argument == Argument::kPutLine || op.argument == Argument::kGetLine) {
          const std::string digits(reinterpret_cast<const char*>(data + at), end - at);
          if (digits.empty() || digits.size() > 18 ||
              digits.find_first_not_of("0123456789") != std::string::npos) {
            return "a memo index that is not a number" + at_offset(start);
          }
          const uint64_t index = std::stoull(digits);
          problem = op.argument == Argument::kPutLine ? check_put(index, start)
                                                      : check_get(index, start);
        }
        at = end + 1;
        break;
      }
      default:
        break;
    }
    if (!problem.empty()) return problem;
  }
  return "the pickle ends without STOP";
}

void check_zip_directory(const caffe2::serialize::ReadAdapterInterface& in,
                         const std::string& subject) {
  const uint64_t file_bytes = in.size();
  const auto refuse = [&](const std::string& what) {
    throw ClientError(subject + " is not a PyTorch file written by medseg or torch.save: " +
                      what + " (a damaged or hand-made file)");
  };
  const auto read = [&](uint64_t offset, size_t count) {
    std::vector<uint8_t> bytes(count);
    if (offset > file_bytes || count > file_bytes - offset ||
        in.read(offset, bytes.data(), count, "zip directory") != count) {
      refuse("its zip directory points past the end of the file (" + std::to_string(file_bytes) +
             " bytes)");
    }
    return bytes;
  };
  // The end-of-central-directory record: 22 bytes and a comment of up to 65535 at the end.
  constexpr size_t kEnd = 22;
  if (file_bytes < kEnd) refuse("it is too short for a zip archive");
  const size_t tail_bytes = static_cast<size_t>(std::min<uint64_t>(file_bytes, kEnd + 65535));
  const std::vector<uint8_t> tail = read(file_bytes - tail_bytes, tail_bytes);
  size_t end = std::string::npos;
  for (size_t i = tail_bytes - kEnd + 1; i-- > 0;) {
    if (std::memcmp(tail.data() + i, "PK\x05\x06", 4) == 0) {
      end = i;
      break;
    }
  }
  if (end == std::string::npos) refuse("it has no zip end-of-central-directory record");
  const uint64_t end_offset = file_bytes - tail_bytes + end;
  uint64_t entries = little_endian(tail.data() + end + 10, 2);
  uint64_t directory_bytes = little_endian(tail.data() + end + 12, 4);
  uint64_t directory_offset = little_endian(tail.data() + end + 16, 4);
  if (entries == 0xFFFF || directory_bytes == 0xFFFFFFFF || directory_offset == 0xFFFFFFFF) {
    // zip64: a 20-byte locator just before the record points at the zip64 end record.
    if (end_offset < 20) refuse("its zip64 locator is missing");
    const std::vector<uint8_t> locator = read(end_offset - 20, 20);
    if (std::memcmp(locator.data(), "PK\x06\x07", 4) != 0) refuse("its zip64 locator is missing");
    const std::vector<uint8_t> end64 = read(little_endian(locator.data() + 8, 8), 56);
    if (std::memcmp(end64.data(), "PK\x06\x06", 4) != 0) {
      refuse("its zip64 end-of-central-directory record is missing");
    }
    entries = little_endian(end64.data() + 32, 8);
    directory_bytes = little_endian(end64.data() + 40, 8);
    directory_offset = little_endian(end64.data() + 48, 8);
  }
  constexpr uint64_t kEntryHeader = 46;
  if (directory_offset > file_bytes || directory_bytes > file_bytes - directory_offset ||
      entries > directory_bytes / kEntryHeader) {
    refuse("its zip directory claims " + std::to_string(entries) + " entries in " +
           std::to_string(directory_bytes) + " bytes at byte " + std::to_string(directory_offset) +
           " of a " + std::to_string(file_bytes) + "-byte file");
  }
  const std::vector<uint8_t> directory = read(directory_offset, directory_bytes);
  uint64_t at = 0;
  for (uint64_t entry = 0; entry < entries; ++entry) {
    if (directory_bytes - at < kEntryHeader ||
        std::memcmp(directory.data() + at, "PK\x01\x02", 4) != 0) {
      refuse("its zip directory entry " + std::to_string(entry) + " is damaged");
    }
    const uint8_t* header = directory.data() + at;
    uint64_t compressed = little_endian(header + 20, 4);
    uint64_t uncompressed = little_endian(header + 24, 4);
    const uint64_t name_bytes = little_endian(header + 28, 2);
    const uint64_t extra_bytes = little_endian(header + 30, 2);
    const uint64_t comment_bytes = little_endian(header + 32, 2);
    const uint64_t entry_bytes = kEntryHeader + name_bytes + extra_bytes + comment_bytes;
    if (entry_bytes > directory_bytes - at) {
      refuse("its zip directory entry " + std::to_string(entry) + " runs past the directory");
    }
    // zip64 sizes live in the extra field 0x0001: uncompressed, then compressed, where the
    // 32-bit fields hold 0xFFFFFFFF.
    for (uint64_t extra = 0; extra + 4 <= extra_bytes;) {
      const uint8_t* field = header + kEntryHeader + name_bytes + extra;
      const uint64_t id = little_endian(field, 2), length = little_endian(field + 2, 2);
      if (extra + 4 + length > extra_bytes) break;
      if (id == 1) {
        uint64_t used = 0;
        if (uncompressed == 0xFFFFFFFF && used + 8 <= length) {
          uncompressed = little_endian(field + 4 + used, 8);
          used += 8;
        }
        if (compressed == 0xFFFFFFFF && used + 8 <= length) {
          compressed = little_endian(field + 4 + used, 8);
        }
      }
      extra += 4 + length;
    }
    if (uncompressed > file_bytes || compressed > file_bytes) {
      const std::string name(reinterpret_cast<const char*>(header + kEntryHeader), name_bytes);
      refuse("its zip entry '" + name.substr(0, 200) + "' claims " +
             std::to_string(std::max(uncompressed, compressed)) +
             " bytes, more than the whole file (" + std::to_string(file_bytes) + " bytes)");
    }
    at += entry_bytes;
  }
}

void check_torch_archive(caffe2::serialize::PyTorchStreamReader& reader, uint64_t archive_bytes,
                         const std::string& subject) {
  for (const std::string& name : reader.getAllRecords()) {
    const uint64_t bytes = reader.getRecordSize(name);
    if (bytes > archive_bytes) {
      throw ClientError(subject + ": its record '" + name + "' claims " + std::to_string(bytes) +
                        " bytes, more than the whole file (" + std::to_string(archive_bytes) +
                        " bytes): a damaged or hand-made archive, expected one written by "
                        "torch.save or medseg");
    }
    const std::string suffix = ".pkl";
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    const auto [record, size] = reader.getRecord(name);
    const std::string problem = pickle_problem(static_cast<const uint8_t*>(record.get()), size);
    if (!problem.empty()) {
      throw ClientError(subject + ": its record '" + name + "' is not a valid pickle (" + problem +
                        "): a damaged or hand-made archive, expected one written by torch.save "
                        "or medseg");
    }
  }
}

std::string shape_text(c10::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

std::string tensor_storage_problem(const at::Tensor& tensor) {
  if (!tensor.defined()) return "an undefined tensor";
  if (tensor.layout() != at::kStrided || !tensor.has_storage()) {
    return "a tensor that is not a plain dense one";
  }
  if (tensor.numel() == 0) return "";
  const int64_t offset = tensor.storage_offset();
  if (offset < 0) return "a negative storage offset " + std::to_string(offset);
  // The last element's index: offset + sum((size - 1) x stride), all checked for overflow.
  constexpr uint64_t kLimit = uint64_t{1} << 62;
  if (static_cast<uint64_t>(offset) > kLimit) return "a storage offset past 2^62 elements";
  uint64_t last = static_cast<uint64_t>(offset);
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    const int64_t size = tensor.size(d);
    const int64_t stride = tensor.stride(d);
    if (stride < 0) return "a negative stride " + std::to_string(stride);
    const uint64_t reach = static_cast<uint64_t>(size - 1);
    if (stride != 0 && reach > (kLimit - last) / static_cast<uint64_t>(stride)) {
      return "sizes and strides that reach past 2^62 elements";
    }
    last += reach * static_cast<uint64_t>(stride);
  }
  const uint64_t item = tensor.dtype().itemsize();
  const uint64_t storage_bytes = tensor.storage().nbytes();
  if (item == 0 || last >= storage_bytes / item) {
    return "a tensor of " + std::to_string(tensor.numel()) + " elements whose last one is element " +
           std::to_string(last) + " of a storage holding " +
           std::to_string(item ? storage_bytes / item : 0) + " (a damaged file)";
  }
  return "";
}

}  // namespace medseg

#include "train/checkpoint_store.h"

#include <fcntl.h>
#include <libdeflate.h>
#include <signal.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <utility>

#include "io/torch_archive.h"
#include "util/error.h"
#include "util/file_io.h"

namespace medseg {
namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'M', 'E', 'D', 'S', 'E', 'G', 'C', 'K'};
constexpr char kEndMarker[8] = {'C', 'K', 'P', 'T', 'D', 'O', 'N', 'E'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kHeaderSize = 32;
constexpr size_t kTrailerSize = 16;
constexpr const char* kNamePrefix = "checkpoint-";
constexpr const char* kNameSuffix = ".ckpt";
constexpr const char* kTemporaryPrefix = ".checkpoint-";
constexpr const char* kTemporaryMarker = ".tmp-";
constexpr int kStepDigits = 10;
// A temporary file untouched this long is stale even if a process with the pid in its name runs
// (pids repeat across containers): a live writer appends to its file continuously.
constexpr int64_t kStaleTemporarySeconds = 600;

void put_u32(char* out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
void put_u64(char* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((value >> (8 * i)) & 0xff);
}
uint32_t get_u32(const char* in) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i)
    value |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}
uint64_t get_u64(const char* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value |= static_cast<uint64_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return value;
}

std::string errno_text(int error_number) { return std::strerror(error_number); }

// ---- names ----

bool all_digits(const std::string& text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The step of a canonical checkpoint file name ("checkpoint-0000000042.ckpt"), else nullopt.
std::optional<int64_t> step_of_name(const std::string& name) {
  const std::string prefix = kNamePrefix, suffix = kNameSuffix;
  if (name.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  const std::string digits =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (!all_digits(digits) || digits.size() > 18) return std::nullopt;
  const int64_t step = std::stoll(digits);
  if (CheckpointStore::file_name(step) != name) return std::nullopt;  // e.g. "checkpoint-7.ckpt"
  return step;
}

// The writer's pid of a temporary file name (".checkpoint-...ckpt.tmp-<pid>"); -1 when the name is
// a temporary file's without a readable pid; nullopt when it is not a temporary file's.
std::optional<long> writer_pid_of_temporary(const std::string& name) {
  const std::string prefix = kTemporaryPrefix;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const size_t marker = name.rfind(kTemporaryMarker);
  if (marker == std::string::npos) return std::nullopt;
  const std::string digits = name.substr(marker + std::strlen(kTemporaryMarker));
  if (!all_digits(digits) || digits.size() > 9) return -1;
  return std::stol(digits);
}

struct DirectoryScan {
  std::vector<std::pair<int64_t, std::string>> checkpoints;  // (step, path), unordered
  std::vector<std::pair<long, std::string>> temporaries;     // (writer pid or -1, path)
};

// Lists the directory; an absent directory is an empty one.
DirectoryScan scan_directory(const std::string& directory) {
  DirectoryScan scan;
  std::error_code error;
  if (!fs::exists(directory, error)) return scan;
  if (!fs::is_directory(directory, error)) {
    throw PlatformError("checkpoint directory " + directory + " exists but is not a directory");
  }
  fs::directory_iterator it(directory, error);
  if (error) {
    throw PlatformError("cannot list checkpoint directory " + directory + ": " + error.message());
  }
  for (const fs::directory_iterator end; it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    std::error_code type_error;
    if (!it->is_regular_file(type_error)) continue;
    if (const auto step = step_of_name(name)) {
      scan.checkpoints.emplace_back(*step, it->path().string());
    } else if (const auto pid = writer_pid_of_temporary(name)) {
      scan.temporaries.emplace_back(*pid, it->path().string());
    }
  }
  if (error) {
    throw PlatformError("cannot list checkpoint directory " + directory + ": " + error.message());
  }
  return scan;
}

// ---- reading and validating ----

uint64_t size_of(const ReadOnlyFile& file) { return static_cast<uint64_t>(file.size()); }

// Reads exactly `length` bytes at `offset`; false when the file ends first.
bool read_exactly(const ReadOnlyFile& file, uint64_t offset, char* out, size_t length) {
  return file.read_at(static_cast<int64_t>(offset), static_cast<int64_t>(length), out) ==
         static_cast<int64_t>(length);
}

struct Layout {
  uint32_t crc = 0;
  uint64_t payload_bytes = 0;
};

// Checks everything but the CRC: magic, version, step, file size and end marker. Returns the
// defect ("" when none) and fills `layout`.
std::string check_layout(const ReadOnlyFile& file, int64_t step_from_name, Layout* layout) {
  if (size_of(file) < kHeaderSize + kTrailerSize) {
    return "truncated: " + std::to_string(size_of(file)) + " bytes, less than a header and trailer";
  }
  char header[kHeaderSize];
  if (!read_exactly(file, 0, header, kHeaderSize)) return "truncated while reading the header";
  if (std::memcmp(header, kMagic, sizeof kMagic) != 0) {
    return "not a medseg checkpoint (no MEDSEGCK magic)";
  }
  const uint32_t version = get_u32(header + 8);
  if (version != kFormatVersion) {
    return "checkpoint format version " + std::to_string(version) + ", this medseg reads version " +
           std::to_string(kFormatVersion);
  }
  layout->crc = get_u32(header + 12);
  layout->payload_bytes = get_u64(header + 16);
  const int64_t header_step = static_cast<int64_t>(get_u64(header + 24));
  if (header_step != step_from_name) {
    return "holds step " + std::to_string(header_step) + " but is named for step " +
           std::to_string(step_from_name);
  }
  const uint64_t expected_size = kHeaderSize + layout->payload_bytes + kTrailerSize;
  if (layout->payload_bytes > size_of(file) || size_of(file) != expected_size) {
    return "truncated or padded: " + std::to_string(size_of(file)) + " bytes, the header says " +
           std::to_string(expected_size);
  }
  char trailer[kTrailerSize];
  if (!read_exactly(file, size_of(file) - kTrailerSize, trailer, kTrailerSize)) {
    return "truncated while reading the end marker";
  }
  if (std::memcmp(trailer, kEndMarker, sizeof kEndMarker) != 0 ||
      get_u64(trailer + 8) != layout->payload_bytes) {
    return "end marker missing (incomplete write)";
  }
  return "";
}

// Checks the payload's CRC, reading it in chunks (a reused buffer: faulting in a fresh buffer the
// size of the payload costs more than reading and summing it). "" when it matches.
std::string check_payload_crc(const ReadOnlyFile& file, const Layout& layout) {
  constexpr size_t kChunk = size_t{4} << 20;
  std::unique_ptr<char[]> chunk(new char[kChunk]);
  uint32_t crc = 0;
  for (uint64_t done = 0; done < layout.payload_bytes;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, layout.payload_bytes - done));
    if (!read_exactly(file, kHeaderSize + done, chunk.get(), n)) return "truncated while reading";
    crc = libdeflate_crc32(crc, chunk.get(), n);
    done += n;
  }
  if (crc != layout.crc) return "CRC mismatch: the payload is corrupt";
  return "";
}

// The whole validation (CRC included when `check_crc`). "" when valid.
std::string check_file(const std::string& path, int64_t step_from_name, bool check_crc) {
  const ReadOnlyFile file(path, "checkpoint");
  Layout layout;
  std::string defect = check_layout(file, step_from_name, &layout);
  if (!defect.empty() || !check_crc) return defect;
  return check_payload_crc(file, layout);
}

// ---- writing ----

// A checkpoint being written: an AtomicFile (temporary name stamped with this writer's PID so that
// a later run can tell its leftovers from a live writer's) with the header, payload and trailer.
// append() is what LibTorch's archive writer calls. It never throws and never reports a short
// write: LibTorch's PyTorchStreamWriter, told of a failed write, throws, then throws again from its
// destructor (which finishes the zip) and the process terminates. So the first failure is kept,
// later bytes are dropped, and commit() rethrows it once LibTorch is done.
class CheckpointWriter {
 public:
  CheckpointWriter(std::string path, std::string temporary_path)
      : file_(std::move(path), std::move(temporary_path)), buffer_(kBufferBytes) {
    std::memset(buffer_.data(), 0, kHeaderSize);  // the header, rewritten by commit()
    buffered_ = kHeaderSize;
  }

  size_t append(const void* data, size_t length) noexcept {
    if (failure_ || length == 0) return length;
    crc_ = libdeflate_crc32(crc_, data, length);
    payload_bytes_ += length;
    if (buffered_ + length <= buffer_.size()) {
      std::memcpy(buffer_.data() + buffered_, data, length);
      buffered_ += length;
      return length;
    }
    // Large pieces (tensor data) go straight to the file, no copy.
    if (flush()) write(data, length);
    return length;
  }

  // Appends the end marker, fills in the header and renames the file into place (AtomicFile:
  // fsync, rename, directory fsync). Throws the first failure, a PlatformError naming the file.
  void commit(int64_t global_step) {
    char trailer[kTrailerSize];
    std::memcpy(trailer, kEndMarker, sizeof kEndMarker);
    put_u64(trailer + 8, payload_bytes_);
    if (flush()) write(trailer, kTrailerSize);
    char header[kHeaderSize] = {};
    std::memcpy(header, kMagic, sizeof kMagic);
    put_u32(header + 8, kFormatVersion);
    put_u32(header + 12, crc_);
    put_u64(header + 16, payload_bytes_);
    put_u64(header + 24, static_cast<uint64_t>(global_step));
    rethrow_failure();
    file_.write_at(0, header, kHeaderSize);
    file_.commit();
  }

  // The first write failure, if any (an I/O failure names the cause better than LibTorch's own
  // error about it).
  void rethrow_failure() const {
    if (failure_) std::rethrow_exception(failure_);
  }
  uint64_t file_bytes() const { return kHeaderSize + payload_bytes_ + kTrailerSize; }

 private:
  static constexpr size_t kBufferBytes = size_t{1} << 20;

  bool write(const void* data, size_t length) noexcept {
    try {
      file_.write(data, length);
      return true;
    } catch (...) {
      failure_ = std::current_exception();
      return false;
    }
  }

  bool flush() noexcept {
    if (failure_) return false;
    const bool ok = write(buffer_.data(), buffered_);
    buffered_ = 0;
    return ok;
  }

  AtomicFile file_;
  std::vector<char> buffer_;
  size_t buffered_ = 0;
  uint32_t crc_ = 0;
  uint64_t payload_bytes_ = 0;
  std::exception_ptr failure_;
};

void ensure_directory(const std::string& directory) {
  std::error_code error;
  if (fs::exists(directory, error)) {
    if (!fs::is_directory(directory, error)) {
      throw PlatformError("checkpoint directory " + directory +
                          " exists but is not a directory; remove it or configure another "
                          "checkpoint directory");
    }
    return;
  }
  fs::create_directories(directory, error);
  if (error) {
    throw PlatformError("cannot create checkpoint directory " + directory + ": " + error.message());
  }
}

bool process_is_running(long pid) {
  if (pid <= 0) return false;
  if (pid == ::getpid()) return false;  // this process writes one checkpoint at a time
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

bool recently_modified(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return false;
  return std::time(nullptr) - status.st_mtime < kStaleTemporarySeconds;
}

// Removes the temporary files of writers that are gone: they never become checkpoints.
void remove_stray_temporary_files(const DirectoryScan& scan) {
  for (const auto& [pid, path] : scan.temporaries) {
    if (process_is_running(pid) && recently_modified(path)) continue;  // another writer's
    if (::unlink(path.c_str()) == 0) {
      spdlog::warn("removed {}, an incomplete checkpoint left by an interrupted writer", path);
    } else if (errno != ENOENT) {
      spdlog::warn("cannot remove stray checkpoint temporary file {}: {}", path, errno_text(errno));
    }
  }
}

}  // namespace

CheckpointStore::CheckpointStore(std::string directory, int keep)
    : directory_(std::move(directory)), keep_(keep) {
  if (keep_ < 1) {
    throw InternalError("CheckpointStore: keep must be at least 1, got " + std::to_string(keep_));
  }
  if (directory_.empty()) throw InternalError("CheckpointStore: empty checkpoint directory");
}

std::string CheckpointStore::file_name(int64_t global_step) {
  std::string digits = std::to_string(global_step);
  if (digits.size() < static_cast<size_t>(kStepDigits)) {
    digits.insert(0, kStepDigits - digits.size(), '0');
  }
  return kNamePrefix + digits + kNameSuffix;
}

std::string CheckpointStore::path_for(int64_t global_step) const {
  return (fs::path(directory_) / file_name(global_step)).string();
}

CheckpointWriteStats CheckpointStore::save(int64_t global_step,
                                           torch::serialize::OutputArchive& archive) {
  if (global_step < 0) {
    throw InternalError("CheckpointStore::save: negative global step " +
                        std::to_string(global_step));
  }
  const auto start = std::chrono::steady_clock::now();
  ensure_directory(directory_);
  const std::string path = path_for(global_step);
  const std::string temporary =
      (fs::path(directory_) /
       (std::string(".") + file_name(global_step) + kTemporaryMarker + std::to_string(::getpid())))
          .string();
  uint64_t file_bytes = 0;
  try {
    CheckpointWriter writer(path, temporary);
    try {
      archive.save_to([&writer](const void* data, size_t length) -> size_t {
        return writer.append(data, length);
      });
    } catch (...) {
      writer.rethrow_failure();  // an I/O failure first: it names the cause
      throw;
    }
    writer.commit(global_step);
    file_bytes = writer.file_bytes();
  } catch (const PlatformError& error) {
    throw PlatformError("cannot write checkpoint " + path + " (" + error.what() +
                        "); earlier checkpoints in " + directory_ + " are untouched");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double megabytes = static_cast<double>(file_bytes) / 1e6;
  spdlog::info("checkpoint step {}: {:.1f} MB in {:.2f} s ({:.0f} MB/s) -> {}", global_step,
               megabytes, seconds, seconds > 0 ? megabytes / seconds : 0.0, path);
  prune(global_step);
  return {path, static_cast<int64_t>(file_bytes), seconds};
}

void CheckpointStore::prune(int64_t just_written_step) const {
  DirectoryScan scan;
  try {
    scan = scan_directory(directory_);
  } catch (const Error& error) {
    spdlog::warn("not pruning checkpoints: {}", error.what());
    return;
  }
  std::sort(scan.checkpoints.begin(), scan.checkpoints.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  int kept = 1;  // the one just written
  for (const auto& [step, path] : scan.checkpoints) {
    if (step >= just_written_step) continue;  // never this one, never newer ones
    bool complete_looking = false;
    try {
      complete_looking = check_file(path, step, /*check_crc=*/false).empty();
    } catch (const Error&) {
    }
    if (complete_looking && kept < keep_) {
      ++kept;
      continue;
    }
    if (::unlink(path.c_str()) != 0) {
      spdlog::warn("cannot delete old checkpoint {}: {}", path, errno_text(errno));
    } else {
      spdlog::info("deleted old checkpoint {}", path);
    }
  }
  remove_stray_temporary_files(scan);
}

std::optional<CheckpointInfo> CheckpointStore::newest_complete() const {
  DirectoryScan scan = scan_directory(directory_);
  remove_stray_temporary_files(scan);
  std::sort(scan.checkpoints.begin(), scan.checkpoints.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [step, path] : scan.checkpoints) {
    std::string defect;
    try {
      defect = check_file(path, step, /*check_crc=*/true);
    } catch (const Error& error) {
      defect = error.what();
    }
    if (!defect.empty()) {
      spdlog::warn("skipping checkpoint {}: {}", path, defect);
      continue;
    }
    std::error_code error;
    const auto bytes = fs::file_size(path, error);
    return CheckpointInfo{path, step, error ? 0 : static_cast<int64_t>(bytes)};
  }
  return std::nullopt;
}

std::vector<CheckpointInfo> CheckpointStore::list() const {
  DirectoryScan scan = scan_directory(directory_);
  std::sort(scan.checkpoints.begin(), scan.checkpoints.end());
  std::vector<CheckpointInfo> result;
  for (const auto& [step, path] : scan.checkpoints) {
    try {
      const ReadOnlyFile file(path, "checkpoint");
      Layout layout;
      if (check_layout(file, step, &layout).empty()) {
        result.push_back({path, step, static_cast<int64_t>(size_of(file))});
      }
    } catch (const Error&) {
    }
  }
  return result;
}

void CheckpointStore::load(const CheckpointInfo& info, torch::serialize::InputArchive& archive,
                           std::optional<c10::Device> device) const {
  const std::string& path = info.path;
  const auto step = step_of_name(fs::path(path).filename().string());
  if (!step) {
    throw ClientError(path + ": not a checkpoint file name (expected " +
                      file_name(info.global_step) + ")");
  }
  // One open file for validating and loading: a checkpoint renamed over this one meanwhile
  // cannot mix in.
  const ReadOnlyFile file(path, "checkpoint");
  Layout layout;
  std::string defect = check_layout(file, *step, &layout);
  if (defect.empty()) defect = check_payload_crc(file, layout);
  if (!defect.empty()) throw ClientError("checkpoint " + path + " is unusable: " + defect);
  // LibTorch reads the payload straight from the file into its tensors' storage. The callback
  // runs inside miniz's C code, so it reports failures by a short count, never by throwing.
  const uint64_t payload_bytes = layout.payload_bytes;
  std::string read_failure;
  auto read = [&](uint64_t position, void* out, size_t length) -> size_t {
    if (position >= payload_bytes) return 0;
    length = static_cast<size_t>(std::min<uint64_t>(length, payload_bytes - position));
    try {
      if (read_exactly(file, kHeaderSize + position, static_cast<char*>(out), length))
        return length;
      read_failure = "the file shrank while loading";
    } catch (const std::exception& error) {
      read_failure = error.what();
    }
    return 0;
  };
  auto size = [payload_bytes]() -> size_t { return static_cast<size_t>(payload_bytes); };
  // The same reads as one of LibTorch's readers, for the size checks before the load.
  struct PayloadReader final : caffe2::serialize::ReadAdapterInterface {
    std::function<size_t(uint64_t, void*, size_t)> read_payload;
    size_t bytes = 0;
    size_t size() const override { return bytes; }
    size_t read(uint64_t position, void* out, size_t length, const char*) const override {
      return read_payload(position, out, length);
    }
  };
  auto payload = std::make_shared<PayloadReader>();
  payload->read_payload = read;
  payload->bytes = static_cast<size_t>(payload_bytes);
  try {
    check_zip_directory(*payload, "checkpoint " + path);
    caffe2::serialize::PyTorchStreamReader reader(payload);
    check_torch_archive(reader, payload_bytes, "checkpoint " + path);
    // c10::optional is not std::optional in LibTorch 1.13.
    archive.load_from(read, size, device ? c10::optional<c10::Device>(*device) : c10::nullopt);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    if (!read_failure.empty()) {
      throw PlatformError("cannot load checkpoint " + path + ": " + read_failure);
    }
    // c10::Error, and the torch::jit::ErrorReport (TorchScript's parser on the archive's code
    // files) or std::runtime_error LibTorch throws for some damaged archives.
    const c10::Error* c10_error = dynamic_cast<const c10::Error*>(&error);
    std::string cause = c10_error ? c10_error->what_without_backtrace() : error.what();
    cause.erase(0, std::min(cause.size(), cause.find_first_not_of(" \n")));
    throw ClientError("checkpoint " + path + " does not hold a readable LibTorch archive: " +
                      cause.substr(0, cause.find('\n')));
  }
}

void write_string(torch::serialize::OutputArchive& archive, const std::string& key,
                  const std::string& value) {
  archive.write(key, c10::IValue(value));
}

std::string read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  if (!archive.try_read(key, value)) {
    throw ClientError("checkpoint has no '" + key +
                      "' entry (written by another medseg version or another program?)");
  }
  if (!value.isString()) {
    throw ClientError("checkpoint entry '" + key + "' is a " + value.tagKind() +
                      ", expected a string");
  }
  return value.toStringRef();
}

void write_int64(torch::serialize::OutputArchive& archive, const std::string& key, int64_t value) {
  archive.write(key, c10::IValue(value));
}

int64_t read_int64(torch::serialize::InputArchive& archive, const std::string& key) {
  c10::IValue value;
  if (!archive.try_read(key, value)) {
    throw ClientError("checkpoint has no '" + key +
                      "' entry (written by another medseg version or another program?)");
  }
  if (!value.isInt()) {
    throw ClientError("checkpoint entry '" + key + "' is a " + value.tagKind() +
                      ", expected an integer");
  }
  return value.toInt();
}

}  // namespace medseg

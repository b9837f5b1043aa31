#include "io/pipe_channel.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>
#include <utility>

#include "util/error.h"

namespace medseg {
namespace {

constexpr uint32_t kLengthMask = (uint32_t{1} << 29) - 1;

std::string hex32(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof(text), "0x%08x", value);
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RecordIOByteSource

RecordIOByteSource::RecordIOByteSource(std::unique_ptr<ByteSource> inner)
    : inner_(std::move(inner)) {}

void RecordIOByteSource::read_exact(void* buffer, size_t size, const char* what) {
  const size_t got = read_fully(*inner_, buffer, size);
  offset_ += got;
  if (got < size) {
    throw ClientError(inner_->name() + ": the stream ended inside a RecordIO " + what +
                      " at byte offset " + std::to_string(offset_) +
                      " (truncated Pipe-mode stream)");
  }
}

bool RecordIOByteSource::next_frame() {
  uint8_t frame[8];
  const uint64_t frame_offset = offset_;
  const size_t first = inner_->read_some(frame, sizeof(frame));
  if (first == 0) {
    if (in_multipart_) {
      throw ClientError(inner_->name() +
                        ": the stream ended inside a multi-part RecordIO "
                        "object (no end part) at byte offset " +
                        std::to_string(offset_) + " (truncated Pipe-mode stream)");
    }
    return false;
  }
  offset_ += first;
  read_exact(frame + first, sizeof(frame) - first, "frame header");
  uint32_t magic;
  uint32_t lrec;
  std::memcpy(&magic, frame, 4);
  std::memcpy(&lrec, frame + 4, 4);
  const std::string context =
      inner_->name() + ": RecordIO frame at byte offset " + std::to_string(frame_offset);
  if (magic != kRecordIOMagic) {
    throw ClientError(context + " has magic " + hex32(magic) + ", expected " +
                      hex32(kRecordIOMagic) +
                      "; is the channel's RecordWrapperType really RecordIO?");
  }
  const uint32_t flag = lrec >> 29;
  const bool expects_continuation = flag == 2 || flag == 3;
  if (flag > 3 || expects_continuation != in_multipart_) {
    throw ClientError(context + " has continuation flag " + std::to_string(flag) +
                      (in_multipart_ ? " inside a multi-part object (expected 2 or 3)"
                                     : " outside a multi-part object (expected 0 or 1)"));
  }
  in_multipart_ = flag == 1 || flag == 2;
  if (flag == 0 || flag == 3) ++objects_read_;
  frame_remaining_ = lrec & kLengthMask;
  frame_padding_ = static_cast<uint32_t>((4 - frame_remaining_ % 4) % 4);
  return true;
}

size_t RecordIOByteSource::read_some(void* buffer, size_t size) {
  if (size == 0 || ended_) return 0;
  while (frame_remaining_ == 0) {
    if (frame_padding_ > 0) {
      uint8_t padding[4];
      read_exact(padding, frame_padding_, "frame's padding");
      frame_padding_ = 0;
    }
    if (!next_frame()) {
      ended_ = true;
      return 0;
    }
  }
  const size_t wanted = static_cast<size_t>(std::min<uint64_t>(size, frame_remaining_));
  const size_t got = inner_->read_some(buffer, wanted);
  if (got == 0) {
    throw ClientError(inner_->name() +
                      ": the stream ended inside a RecordIO frame's payload at "
                      "byte offset " +
                      std::to_string(offset_) + " (" + std::to_string(frame_remaining_) +
                      " bytes missing; truncated Pipe-mode stream)");
  }
  offset_ += got;
  frame_remaining_ -= got;
  return got;
}

// ---------------------------------------------------------------------------------------------
// PipeChannel

PipeChannel::PipeChannel(PipeChannelOptions options) : options_(std::move(options)) {
  if (options_.channel.empty()) throw ClientError("Pipe mode: the channel name is empty");
}

std::string PipeChannel::fifo_path(int epoch) const {
  return options_.data_dir + "/" + options_.channel + "_" + std::to_string(epoch);
}

std::unique_ptr<ByteSource> PipeChannel::open_next_epoch() {
  using Clock = std::chrono::steady_clock;
  const std::string path = fifo_path(next_epoch_);
  const std::string name = "channel '" + options_.channel + "' (FIFO " + path + ")";
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options_.open_timeout_seconds));
  const auto poll_interval = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(options_.poll_interval_seconds, 0.001)));
  auto timed_out = [&](const std::string& what) {
    return ClientError(name + ": " + what + " within " +
                       std::to_string(options_.open_timeout_seconds) +
                       " s; is the channel configured with TrainingInputMode=Pipe and is its "
                       "name spelt as in the training job?");
  };

  // 1. Wait for the FIFO to exist.
  struct stat info {};
  while (::stat(path.c_str(), &info) != 0) {
    if (errno != ENOENT) throw_system_error("cannot stat " + path);
    if (Clock::now() >= deadline) throw timed_out("the FIFO did not appear");
    std::this_thread::sleep_for(poll_interval);
  }
  if (!S_ISFIFO(info.st_mode) && !S_ISREG(info.st_mode)) {
    throw ClientError(name + ": exists but is neither a FIFO nor a regular file");
  }

  // 2. Open without blocking (a blocking open of a FIFO would wait for a writer forever), then
  // wait for the writer's first data or hang-up. Linux reports POLLHUP on a FIFO only once a
  // writer has connected since the open, so an absent writer is a plain timeout here.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw_system_error("cannot open " + path);
  auto source = std::make_unique<FdByteSource>(fd, name, /*owns_fd=*/true);
  if (S_ISFIFO(info.st_mode)) {
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      struct pollfd request {
        fd, POLLIN, 0
      };
      const int ready =
          ::poll(&request, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1000)));
      if (ready < 0 && errno != EINTR) throw_system_error("cannot poll " + path);
      if (ready > 0) break;
      if (Clock::now() >= deadline) throw timed_out("no writer connected to the FIFO");
    }
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    throw_system_error("cannot make " + path + " blocking");
  }
  ++next_epoch_;
  if (options_.record_io) return std::make_unique<RecordIOByteSource>(std::move(source));
  return source;
}

// ---------------------------------------------------------------------------------------------
// PipeTee

PipeTee::PipeTee(std::unique_ptr<ByteSource> inner, std::vector<std::string> outputs,
                 double open_timeout_seconds)
    : inner_(std::move(inner)),
      outputs_(std::move(outputs)),
      open_timeout_seconds_(open_timeout_seconds) {
  for (const std::string& output : outputs_) {
    std::error_code ignored;
    std::filesystem::create_directories(std::filesystem::path(output).parent_path(), ignored);
    std::filesystem::remove(output, ignored);  // a dead run's
    if (::mkfifo(output.c_str(), 0600) != 0) throw_system_error("cannot create the FIFO " + output);
  }
}

PipeTee::~PipeTee() {
  for (const int fd : fds_) ::close(fd);
  std::error_code ignored;
  for (const std::string& output : outputs_) std::filesystem::remove(output, ignored);
}

void PipeTee::open_outputs() {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(open_timeout_seconds_));
  for (const std::string& output : outputs_) {
    int fd = -1;
    // Without O_NONBLOCK the open would wait for a reader forever; with it, ENXIO until one comes.
    while ((fd = ::open(output.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
      if (errno != ENXIO && errno != EINTR) throw_system_error("cannot open the FIFO " + output);
      if (Clock::now() >= deadline) {
        throw PlatformError("the worker reading " + output + " did not open it within " +
                            std::to_string(open_timeout_seconds_) + " s");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    fds_.push_back(fd);
  }
}

size_t PipeTee::read_some(void* buffer, size_t size) {
  if (fds_.size() < outputs_.size()) open_outputs();
  const size_t got = inner_->read_some(buffer, size);
  // A reader gone: EPIPE from write, not a SIGPIPE that would end the process.
  sigset_t block, previous;
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &previous);
  for (size_t i = 0; i < fds_.size(); ++i) {
    const char* data = static_cast<const char*>(buffer);
    for (size_t done = 0; done < got;) {
      const ssize_t n = ::write(fds_[i], data + done, got - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int saved = errno;
        // Drop the SIGPIPE this write raised while it was blocked.
        const struct timespec zero {0, 0};
        sigtimedwait(&block, nullptr, &zero);
        pthread_sigmask(SIG_SETMASK, &previous, nullptr);
        errno = saved;
        throw_system_error("cannot pass " + inner_->name() + " on to the worker reading " +
                           outputs_[i] + " (did it stop?)");
      }
      done += static_cast<size_t>(n);
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return got;
}

}  // namespace medseg

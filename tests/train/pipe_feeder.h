// Plays SageMaker's part in Pipe mode for the tests that train from a Pipe-mode channel.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace medseg::testing {

// Plays SageMaker's Pipe mode for one channel: FIFO <dir>/train_<n>, n = 0, 1, ...; each is
// created once the previous one was read to its end or closed by its reader, waits for a reader
// (the feeder stops when none comes within `patience` or when it is destroyed) and streams
// `payload` in RecordIO frames of at most 1 MiB (objects split into start/middle/end parts).
class PipeFeeder {
 public:
  PipeFeeder(std::string dir, std::string payload,
             std::chrono::milliseconds patience = std::chrono::seconds(20))
      : dir_(std::move(dir)), payload_(std::move(payload)), patience_(patience),
        thread_([this] { run(); }) {}
  ~PipeFeeder() {
    stop_ = true;
    thread_.join();
  }
  int fifos_read() const { return fifos_read_; }

 private:
  void run() {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, nullptr);  // EPIPE when a reader closes early
    for (int n = 0; !stop_; ++n) {
      const std::string fifo = dir_ + "/train_" + std::to_string(n);
      ::unlink(fifo.c_str());  // an earlier container's (a fresh container has none)
      if (::mkfifo(fifo.c_str(), 0600) != 0) return;
      int fd = -1;
      const auto deadline = std::chrono::steady_clock::now() + patience_;
      while (fd < 0 && !stop_ && std::chrono::steady_clock::now() < deadline) {
        fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // ENXIO until a reader opens
        if (fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (fd < 0) {
        ::unlink(fifo.c_str());  // the container ends: its FIFOs go with it
        return;
      }
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      write_frames(fd);
      ::close(fd);
      ++fifos_read_;
      ::unlink(fifo.c_str());
    }
  }

  void write_frames(int fd) {
    constexpr size_t kPart = 1 << 20;
    const size_t parts = (payload_.size() + kPart - 1) / kPart;
    for (size_t i = 0; i < parts && !stop_; ++i) {
      const std::string part = payload_.substr(i * kPart, kPart);
      const uint32_t flag = parts == 1 ? 0 : i == 0 ? 1 : i + 1 == parts ? 3 : 2;
      const uint32_t header[2] = {0xced7230a, static_cast<uint32_t>(part.size()) | (flag << 29)};
      std::string frame(reinterpret_cast<const char*>(header), sizeof(header));
      frame += part;
      frame.append((4 - part.size() % 4) % 4, '\0');
      for (size_t done = 0; done < frame.size();) {
        const ssize_t n = ::write(fd, frame.data() + done, frame.size() - done);
        if (n <= 0) return;  // the reader closed early: SageMaker moves on to the next FIFO
        done += static_cast<size_t>(n);
      }
    }
  }

  std::string dir_;
  std::string payload_;
  std::chrono::milliseconds patience_;
  std::atomic<bool> stop_{false};
  std::atomic<int> fifos_read_{0};
  std::thread thread_;
};

}  // namespace medseg::testing

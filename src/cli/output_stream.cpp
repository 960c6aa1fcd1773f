#include "output_stream.hpp"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace acc::cli {

namespace {

// One write of what `fd` takes now, waiting for it to take some; nullopt when it never will (the
// reader is gone: EPIPE).
std::optional<std::size_t> write_some(int fd, std::string_view text) {
  while (true) {
    const ssize_t written = ::write(fd, text.data(), text.size());
    if (written >= 0) return static_cast<std::size_t>(written);
    if (errno == EAGAIN) {  // someone made the shared terminal or pipe non-blocking
      pollfd writable{fd, POLLOUT, 0};
      poll(&writable, 1, -1);
    } else if (errno != EINTR) {
      return std::nullopt;
    }
  }
}

std::string format_bytes(std::size_t bytes) {
  if (bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

void write_all(int fd, std::string_view text) {
  while (!text.empty())
    if (const auto written = write_some(fd, text))
      text.remove_prefix(*written);
    else
      return;
}

struct OutputStream::Shared {
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::string> queue;
  std::size_t waiting_bytes = 0;  // queued, and being written
  std::size_t dropped_since_note = 0;
  std::size_t dropped_in_all = 0;
  Clock::time_point last_progress;  // when a write last took bytes, or the stream last became busy
  bool closing = false;
  bool reader_gone = false;  // a write failed (EPIPE): nothing more can be written
};

OutputStream::OutputStream(int fd, std::string name, std::size_t max_waiting)
    : name_(std::move(name)), max_waiting_(max_waiting), shared_(std::make_shared<Shared>()) {
  thread_ = std::thread(write_queued, fd, shared_);
}

OutputStream::~OutputStream() {
  bool idle;
  {
    const std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->closing = true;
    idle = shared_->waiting_bytes == 0;
  }
  shared_->wake.notify_one();
  if (idle)
    thread_.join();
  else
    thread_.detach();
}

void OutputStream::write(std::string lines) {
  if (lines.empty()) return;
  const auto line_count = static_cast<std::size_t>(std::count(lines.begin(), lines.end(), '\n'));
  {
    const std::lock_guard<std::mutex> lock(shared_->mutex);
    if (shared_->reader_gone) return;  // not dropped for being slow: nobody will read it
    if (shared_->waiting_bytes + lines.size() > max_waiting_) {
      shared_->dropped_since_note += line_count;
      shared_->dropped_in_all += line_count;
      return;
    }
    if (shared_->waiting_bytes == 0) shared_->last_progress = Clock::now();
    if (shared_->dropped_since_note > 0) {
      std::string note = "acc launch: " + std::to_string(shared_->dropped_since_note) +
                         " line(s) dropped here: " + name_ + " was not read fast enough (at most " +
                         format_bytes(max_waiting_) + " wait to be written)\n";
      shared_->waiting_bytes += note.size();
      shared_->queue.push_back(std::move(note));
      shared_->dropped_since_note = 0;
    }
    shared_->waiting_bytes += lines.size();
    shared_->queue.push_back(std::move(lines));
  }
  shared_->wake.notify_one();
}

bool OutputStream::idle() const { return waiting_bytes() == 0; }

OutputStream::Clock::duration OutputStream::stalled_for() const {
  const std::lock_guard<std::mutex> lock(shared_->mutex);
  if (shared_->waiting_bytes == 0) return Clock::duration::zero();
  return Clock::now() - shared_->last_progress;
}

std::size_t OutputStream::waiting_bytes() const {
  const std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->waiting_bytes;
}

std::size_t OutputStream::dropped_lines() const {
  const std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->dropped_in_all;
}

void OutputStream::write_queued(int fd, std::shared_ptr<Shared> shared) {
  std::unique_lock<std::mutex> lock(shared->mutex);
  while (true) {
    shared->wake.wait(lock, [&] { return !shared->queue.empty() || shared->closing; });
    if (shared->queue.empty()) return;
    const std::string chunk = std::move(shared->queue.front());
    shared->queue.pop_front();
    lock.unlock();
    bool reader_gone = false;
    for (std::string_view rest = chunk; !rest.empty();) {
      const auto written = write_some(fd, rest);
      if (!written) {
        reader_gone = true;
        break;
      }
      rest.remove_prefix(*written);
      const std::lock_guard<std::mutex> progress(shared->mutex);
      shared->last_progress = Clock::now();
    }
    lock.lock();
    shared->waiting_bytes -= chunk.size();
    if (reader_gone) {
      shared->reader_gone = true;
      for (const std::string& left : shared->queue) shared->waiting_bytes -= left.size();
      shared->queue.clear();
    }
  }
}

}  // namespace acc::cli

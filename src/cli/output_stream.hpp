// acc launch's stdout or stderr, written by a thread of its own so that the launcher never waits on
// whoever reads its output: while a reader is slow or has stopped, the ranks are still reaped and
// signals still handled. What waits to be written is bounded; beyond that whole lines are dropped,
// counted, and a note says how many where they are missing once the reader catches up.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace acc::cli {

// Writes all of `text`, waiting as long as `fd` needs: for what runs before any rank does, and for
// OutputStream's thread. Output nobody reads any more (EPIPE) is dropped.
void write_all(int fd, std::string_view text);

class OutputStream {
 public:
  using Clock = std::chrono::steady_clock;
  // Waiting bytes beyond which lines are dropped: a few seconds of a chatty job, little memory.
  static constexpr std::size_t kDefaultMaxWaiting = 4 << 20;

  // `name` ("stdout") is what the notes call it. Starts the thread, which inherits the caller's
  // signal mask: create it after the launcher has blocked the signals it watches.
  OutputStream(int fd, std::string name, std::size_t max_waiting = kDefaultMaxWaiting);
  // Leaves a thread still blocked in write() behind, to end with the process.
  ~OutputStream();
  OutputStream(const OutputStream&) = delete;
  OutputStream& operator=(const OutputStream&) = delete;

  // Queues `lines` (whole lines, each ending in '\n') and returns at once; drops them when more than
  // the bound is waiting, and discards them once the reader is gone (EPIPE).
  void write(std::string lines);

  // Nothing waits to be written.
  bool idle() const;
  // How long the reader has taken nothing while something waits (zero when idle).
  Clock::duration stalled_for() const;
  std::size_t waiting_bytes() const;
  std::size_t dropped_lines() const;  // in all
  const std::string& name() const { return name_; }

 private:
  struct Shared;
  static void write_queued(int fd, std::shared_ptr<Shared> shared);

  std::string name_;
  std::size_t max_waiting_;
  std::shared_ptr<Shared> shared_;  // also held by the thread, which may outlive this object
  std::thread thread_;
};

}  // namespace acc::cli

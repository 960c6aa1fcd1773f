// Copies a rank's output to the launcher's own, whole lines at a time, each behind a prefix
// such as "[rank 3] " (acc launch --tee), and with --log_dir also to a file, byte for byte.
#pragma once

#include "output_stream.hpp"

#include <string>

namespace acc::cli {

// Where a copy of everything the rank writes goes: a file the forwarder does not own. A write that
// fails is reported once, on `errors`, and the copy stops there.
struct LogCopy {
  int fd = -1;  // none
  std::string path;
  OutputStream* errors = nullptr;
};

class LineForwarder {
 public:
  // Takes ownership of `source` (the read end of the rank's pipe) and makes it non-blocking.
  LineForwarder(int source, OutputStream& destination, std::string prefix, LogCopy copy = {});
  ~LineForwarder();
  LineForwarder(const LineForwarder&) = delete;
  LineForwarder& operator=(const LineForwarder&) = delete;

  int source() const { return source_; }
  bool is_open() const { return source_ >= 0; }

  // One read of what the pipe holds; at its end, prints the last unfinished line and closes it.
  void forward_available();
  // Forwards everything the pipe still holds without waiting for more, then closes it.
  void finish();

 private:
  // Returns false once there is nothing more to read now.
  bool read_once();
  void close_source();

  int source_;
  OutputStream& destination_;
  std::string prefix_;
  LogCopy copy_;
  std::string unfinished_line_;  // text after the last newline so far
};

}  // namespace acc::cli

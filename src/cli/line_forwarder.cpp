#include "line_forwarder.hpp"

#include "rank_logs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace acc::cli {
namespace {

// A line longer than this is printed in pieces, each behind its own prefix, so that a rank that
// never ends its line (a progress bar redrawn with \r) cannot make the launcher's memory grow.
constexpr std::size_t kMaxLineLength = 64 * 1024;
constexpr std::size_t kReadSize = 64 * 1024;

}  // namespace

LineForwarder::LineForwarder(int source, OutputStream& destination, std::string prefix, LogCopy copy)
    : source_(source), destination_(destination), prefix_(std::move(prefix)), copy_(std::move(copy)) {
  fcntl(source_, F_SETFL, fcntl(source_, F_GETFL) | O_NONBLOCK);
}

LineForwarder::~LineForwarder() { close_source(); }

void LineForwarder::forward_available() {
  if (is_open()) read_once();
}

void LineForwarder::finish() {
  while (is_open() && read_once()) {
  }
  close_source();
}

bool LineForwarder::read_once() {
  char buffer[kReadSize];
  const ssize_t count = read(source_, buffer, sizeof buffer);
  if (count < 0 && errno == EINTR) return true;
  if (count < 0 && errno == EAGAIN) return false;
  if (count <= 0) {  // end of stream, or a broken pipe that will give nothing more
    close_source();
    return false;
  }

  // The file gets what the rank wrote as it wrote it: no prefix, long lines whole.
  if (copy_.fd >= 0)
    if (const int error = append_all(copy_.fd, buffer, static_cast<std::size_t>(count))) {
      if (copy_.errors)
        copy_.errors->write("acc launch: cannot write " + copy_.path + ": " + std::strerror(error) +
                            "; the rest of this output is not copied there\n");
      copy_.fd = -1;
    }
  unfinished_line_.append(buffer, static_cast<std::size_t>(count));
  std::string lines;
  std::size_t start = 0;
  while (true) {
    const std::size_t newline = unfinished_line_.find('\n', start);
    const std::size_t end = newline == std::string::npos ? unfinished_line_.size() : newline;
    if (newline == std::string::npos && end - start < kMaxLineLength) break;
    const std::size_t length = std::min(end - start, kMaxLineLength);
    lines += prefix_;
    lines.append(unfinished_line_, start, length);
    lines += '\n';
    start += length + (start + length == newline ? 1 : 0);
  }
  unfinished_line_.erase(0, start);
  destination_.write(std::move(lines));
  return true;
}

void LineForwarder::close_source() {
  if (!unfinished_line_.empty()) {
    destination_.write(prefix_ + unfinished_line_ + '\n');
    unfinished_line_.clear();
  }
  if (source_ >= 0) close(source_);
  source_ = -1;
}

}  // namespace acc::cli

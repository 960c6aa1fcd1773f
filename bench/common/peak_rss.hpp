// This process's resident memory and its peak (Linux's /proc/self/status VmRSS and VmHWM), with a
// peak that can be restarted (/proc/self/clear_refs "5"), so that one phase of a program is
// measured on its own. For the memory tests and benchmarks.
#pragma once

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>

namespace peak_rss {

// The bytes of a "<field>: <n> kB" line of /proc/self/status.
inline int64_t status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  throw std::runtime_error("/proc/self/status has no " + field + " (not Linux?)");
}

inline int64_t current() { return status_bytes("VmRSS"); }
inline int64_t peak() { return status_bytes("VmHWM"); }

// From here on peak() is the highest resident memory since this call.
inline void restart() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  if (!clear) throw std::runtime_error("cannot write /proc/self/clear_refs to restart the peak (Linux 4.0 or newer)");
}

}  // namespace peak_rss

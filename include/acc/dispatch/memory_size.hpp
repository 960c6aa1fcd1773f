// Memory budgets as Python Accelerate's max_memory spells them: bytes as a number, or a string
// with a unit, "20GiB" (2^30), "500MB" (10^6), "1.5GB"; a lowercase final b of KB/MB/GB/TB counts
// bits ("8Gb" = 10^9 bytes), as Accelerate's convert_file_size_to_int reads it.
//
//   acc::MaxMemory budgets{{"0", "20GiB"}, {"cpu", "64GiB"}, {"disk", 500'000'000'000}};
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace acc {

// "20GiB" -> 21474836480; an acc::Error naming the text and the accepted forms for anything else.
ACC_DECL uint64_t parse_memory_size(std::string_view text);

// 1610612736 -> "1.5 GiB"; sizes under 1 KiB in bytes ("512 bytes"). For messages.
ACC_DECL std::string format_memory_size(uint64_t bytes);

// A number of bytes, given as a number or as a string parse_memory_size reads.
class MemorySize {
 public:
  MemorySize(int bytes) : MemorySize(static_cast<long long>(bytes)) {}      // NOLINT: implicit, as Python's
  MemorySize(long bytes) : MemorySize(static_cast<long long>(bytes)) {}     // NOLINT
  ACC_DECL MemorySize(long long bytes);                                     // NOLINT
  MemorySize(unsigned long long bytes) : bytes_(bytes) {}                   // NOLINT
  MemorySize(unsigned long bytes) : bytes_(bytes) {}                        // NOLINT
  MemorySize(const char* text) : bytes_(parse_memory_size(text)) {}         // NOLINT
  MemorySize(const std::string& text) : bytes_(parse_memory_size(text)) {}  // NOLINT
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_;
};

// Each device's budget: "0", "1", ... (or "cuda:0") for GPUs, "cpu", "disk".
using MaxMemory = std::map<std::string, MemorySize>;

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/memory_size.ipp>
#endif

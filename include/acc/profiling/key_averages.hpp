// The events of a recorded window, and their key averages: torch's prof.key_averages().table(...).
#pragma once

#include <acc/detail/linkage.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace acc {

// One operator, annotation, kernel or allocation that the profiler recorded.
struct ProfiledEvent {
  enum class Kind { op, user_annotation, kernel, memory };
  std::string name;
  Kind kind = Kind::op;
  uint64_t thread = 0;  // a CPU thread, or for a kernel its CUDA stream
  int device_index = -1;
  int64_t start_ns = 0;
  int64_t duration_ns = 0;
  std::vector<std::vector<int64_t>> input_shapes;  // with record_shapes
  std::vector<std::string> input_types;            // with record_shapes
  uint64_t flops = 0;                              // with with_flops
  int64_t bytes = 0;                               // of an allocation (negative: a free)
  uint64_t correlation_id = 0;
};

// The events of one name, summed.
struct KeyAverage {
  std::string key;
  int64_t count = 0;
  int64_t self_cpu_time_total_ns = 0;  // less the time of the operators called inside
  int64_t cpu_time_total_ns = 0;
  int64_t self_cuda_time_total_ns = 0;  // of kernels
  uint64_t flops = 0;
};

class KeyAverages {
 public:
  // Groups CPU events by name (ProfilerStep#3 as ProfilerStep*, as torch does) and kernels by
  // name; allocations are left out. Rows in order of first appearance.
  explicit KeyAverages(const std::vector<ProfiledEvent>& events);

  const std::vector<KeyAverage>& rows() const { return rows_; }
  // The row of `key`, or nullptr.
  const KeyAverage* find(std::string_view key) const;

  // torch's table: sort_by one of self_cpu_time_total, cpu_time_total, self_cuda_time_total, count;
  // at most row_limit rows, all of them when it is negative.
  std::string table(std::string_view sort_by = "self_cpu_time_total", int64_t row_limit = 100) const;

 private:
  std::vector<KeyAverage> rows_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/profiling/impl/key_averages.ipp>
#endif

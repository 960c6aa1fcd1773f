// Where a device map puts a module: a GPU (by index), the CPU, or disk. Read from Accelerate's
// spellings ("0" or "cuda:0", "cpu", "disk"), ordered as infer_auto_device_map fills devices: the
// GPUs by index, then the CPU, then disk.
//
//   acc::Placement gpu = 1, cpu = "cpu", disk = "disk";
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <c10/core/Device.h>

#include <string>
#include <string_view>

namespace acc {

class Placement {
 public:
  enum class Kind { gpu, cpu, disk };

  ACC_DECL Placement(int gpu_index);                                         // NOLINT: implicit, as Python's 0
  Placement(const char* text) : Placement(std::string_view(text)) {}         // NOLINT
  Placement(const std::string& text) : Placement(std::string_view(text)) {}  // NOLINT
  ACC_DECL explicit Placement(std::string_view text);
  static Placement cpu() { return Placement(Kind::cpu, 0); }
  static Placement disk() { return Placement(Kind::disk, 0); }

  Kind kind() const { return kind_; }
  bool is_gpu() const { return kind_ == Kind::gpu; }
  int gpu_index() const { return index_; }
  // "0", "cpu", "disk": the spelling Placement reads and max_memory's key.
  ACC_DECL std::string to_string() const;
  // 0, 'cpu', 'disk': as in Python's printed device map.
  ACC_DECL std::string python() const;
  // The device computations placed here run on: cuda:i for a GPU, the CPU for "cpu"; disk has none.
  ACC_DECL c10::Device device() const;

  friend bool operator==(const Placement& a, const Placement& b) { return a.kind_ == b.kind_ && a.index_ == b.index_; }
  friend bool operator!=(const Placement& a, const Placement& b) { return !(a == b); }
  friend bool operator<(const Placement& a, const Placement& b) {
    return a.kind_ != b.kind_ ? a.kind_ < b.kind_ : a.index_ < b.index_;
  }

 private:
  Placement(Kind kind, int index) : kind_(kind), index_(index) {}
  Kind kind_;
  int index_;
};

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/placement.ipp>
#endif

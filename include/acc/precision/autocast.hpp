// Autocast scopes. AutocastGuard: RAII autocast for one device type; it enables autocast to a
// dtype, restores the previous state on exit, and clears the cast cache when the outermost scope
// closes. AutocastTo<dtype> and NoAutocast are the forward scopes precision policies name (see
// include/acc/precision/precision.hpp): made from the device the forward runs on.
#pragma once

#include <acc/detail/torch_compat.hpp>

#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace acc {

class AutocastGuard {
 public:
  // enabled == false makes a scope that changes nothing (full precision).
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype, bool enabled = true)
      : device_(device), active_(enabled) {
    if (!active_) return;
    previous_enabled_ = compat::autocast_enabled(device_);
    previous_dtype_ = compat::autocast_dtype(device_);
    compat::set_autocast_enabled(device_, true);
    compat::set_autocast_dtype(device_, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    compat::set_autocast_enabled(device_, previous_enabled_);
    compat::set_autocast_dtype(device_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool active_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

// The forward scope of mixed precision: autocast to Dtype on the forward's device.
template <c10::ScalarType Dtype>
class AutocastTo : public AutocastGuard {
 public:
  explicit AutocastTo(c10::Device device) : AutocastGuard(device.type(), Dtype) {}
};

// The forward scope of a precision that computes in the parameters' dtype: changes nothing.
struct NoAutocast {
  explicit NoAutocast(c10::Device) {}
};

}  // namespace acc

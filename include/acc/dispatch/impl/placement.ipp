// The bodies of dispatch/placement.hpp.
#pragma once

#include <acc/dispatch/placement.hpp>

#include <cctype>

namespace acc {

namespace detail {

[[noreturn]] inline void bad_placement(std::string_view text, const std::string& why) {
  throw Error("device '" + std::string(text) + "' " + why +
              "; a device map and max_memory name a GPU by its index (\"0\", \"1\", ... or \"cuda:0\"), \"cpu\" or "
              "\"disk\"");
}

}  // namespace detail

ACC_DECL Placement::Placement(int gpu_index) : kind_(Kind::gpu), index_(gpu_index) {
  if (gpu_index < 0) detail::bad_placement(std::to_string(gpu_index), "is a negative GPU index");
}

ACC_DECL Placement::Placement(std::string_view text) : kind_(Kind::cpu), index_(0) {
  if (text == "cpu") return;
  if (text == "disk") {
    kind_ = Kind::disk;
    return;
  }
  std::string_view index = text;
  if (index.substr(0, 5) == "cuda:") index.remove_prefix(5);
  if (index.empty() || index.size() > 4) detail::bad_placement(text, "is not a device");
  for (const char c : index)
    if (!std::isdigit(static_cast<unsigned char>(c))) detail::bad_placement(text, "is not a device");
  kind_ = Kind::gpu;
  index_ = std::stoi(std::string(index));
}

ACC_DECL std::string Placement::to_string() const {
  switch (kind_) {
    case Kind::gpu:
      return std::to_string(index_);
    case Kind::cpu:
      return "cpu";
    case Kind::disk:
      break;
  }
  return "disk";
}

ACC_DECL std::string Placement::python() const { return is_gpu() ? to_string() : "'" + to_string() + "'"; }

ACC_DECL c10::Device Placement::device() const {
  if (kind_ == Kind::disk)
    throw Error("\"disk\" holds weights but runs nothing: a disk-offloaded module runs on the execution device");
  return is_gpu() ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index_)) : c10::Device(c10::kCPU);
}

}  // namespace acc

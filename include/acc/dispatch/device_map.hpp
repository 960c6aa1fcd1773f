// acc::DeviceMap: where each part of a model goes, as Accelerate's device_map: an ordered map from a
// module's name (a prefix of the parameter names; "" is the whole model) to a Placement. A name
// is placed by its longest prefix in the map, counted in whole components ("blocks.1" covers
// "blocks.1.fc.weight", not "blocks.10"). infer_auto_device_map computes one; dispatch_model
// applies one. Prints as Python prints Accelerate's dict:
//
//   acc::DeviceMap map{{"", 0}, {"blocks.6", "cpu"}, {"blocks.7", "disk"}};
//   std::cout << map;  // {'': 0, 'blocks.6': 'cpu', 'blocks.7': 'disk'}
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/dispatch/placement.hpp>

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

class DeviceMap {
 public:
  using Entry = std::pair<std::string, Placement>;

  DeviceMap() = default;
  DeviceMap(std::initializer_list<Entry> entries) {
    for (const auto& [name, placement] : entries) set(name, placement);
  }

  // Places `module` (replacing its entry if it has one, else appending one).
  ACC_DECL void set(const std::string& module, Placement placement);
  // The placement of a module, parameter or buffer name: that of its longest prefix in the map.
  ACC_DECL std::optional<Placement> find(std::string_view name) const;
  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  ACC_DECL std::string to_string() const;

  friend bool operator==(const DeviceMap& a, const DeviceMap& b) { return a.entries_ == b.entries_; }
  friend bool operator!=(const DeviceMap& a, const DeviceMap& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& out, const DeviceMap& map) { return out << map.to_string(); }

 private:
  std::vector<Entry> entries_;
};

namespace detail {

// Whether `prefix` names `name` or a module above it, in whole components ("" is above all).
inline bool is_name_prefix(std::string_view prefix, std::string_view name) {
  return prefix.empty() ||
         (name.substr(0, prefix.size()) == prefix && (name.size() == prefix.size() || name[prefix.size()] == '.'));
}

}  // namespace detail
}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/device_map.ipp>
#endif

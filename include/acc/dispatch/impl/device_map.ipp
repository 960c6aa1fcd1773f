// The bodies of dispatch/device_map.hpp.
#pragma once

#include <acc/dispatch/device_map.hpp>

namespace acc {

ACC_DECL void DeviceMap::set(const std::string& module, Placement placement) {
  for (auto& entry : entries_)
    if (entry.first == module) {
      entry.second = placement;
      return;
    }
  entries_.emplace_back(module, placement);
}

ACC_DECL std::optional<Placement> DeviceMap::find(std::string_view name) const {
  const Entry* best = nullptr;
  for (const auto& entry : entries_)
    if (detail::is_name_prefix(entry.first, name) && (!best || entry.first.size() > best->first.size())) best = &entry;
  if (!best) return std::nullopt;
  return best->second;
}

ACC_DECL std::string DeviceMap::to_string() const {
  std::string text = "{";
  for (const auto& [name, placement] : entries_) {
    if (text.size() > 1) text += ", ";
    text += "'" + name + "': " + placement.python();
  }
  return text + "}";
}

}  // namespace acc

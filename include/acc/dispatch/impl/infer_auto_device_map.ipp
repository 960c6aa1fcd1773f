// The bodies of dispatch/infer_auto_device_map.hpp.
#pragma once

#include <acc/dispatch/infer_auto_device_map.hpp>
#include <acc/dispatch/module_units.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>

namespace acc {

namespace detail {

using TensorKey = const c10::TensorImpl*;

// One thing to place: a unit with its nested units, or (after a split) its own tensors alone.
struct PlacementItem {
  std::size_t unit;
  bool own_only;
};

class AutoDeviceMap {
 public:
  AutoDeviceMap(const std::shared_ptr<torch::nn::Module>& model, const MaxMemory& max_memory,
                const DeviceMapOptions& options)
      : model_(model), units_(model_units(model)), no_split_(options.no_split.begin(), options.no_split.end()) {
    for (const auto& [name, size] : max_memory) {
      const Placement placement(std::string_view{name});
      if (!budgets_.emplace(placement, size.bytes()).second)
        throw Error("max_memory names device " + placement.to_string() + " twice ('" + name +
                    "' and another spelling)");
    }
    // GPUs, cpu, disk. A device with no room holds nothing, and the model runs on the first that
    // has some: balanced_low_0 leaves GPU 0 empty when the other GPUs hold the whole model.
    for (const auto& [placement, bytes] : budgets_)
      if (bytes > 0) devices_.push_back(placement);
    if (devices_.empty() || devices_.front() == Placement::disk())
      throw Error(
          "max_memory names no device to run the model on: give a GPU (\"0\") or \"cpu\" a budget above 0; "
          "\"disk\" only holds weights, which run on the first GPU, else the CPU");
    main_devices_.push_back(devices_.front());
    if (devices_.front().is_gpu() && budgets_.count(Placement::cpu())) main_devices_.push_back(Placement::cpu());
    check_no_split();
    for (std::size_t u = 0; u < units_.size(); ++u)
      for (const auto& t : units_[u].tensors) tensor_bytes_[t.tensor.unsafeGetTensorImpl()] = tensor_bytes(t.tensor);
    for (const auto& item : model->named_modules()) module_names_.push_back(item.key());
  }

  DeviceMap compute() {
    // The model's own tensors first, on the execution device, with every unit tied to them.
    std::deque<PlacementItem> queue{{0, true}};
    for (const auto child : units_[0].children) queue.push_back({child, false});
    std::size_t device = 0;
    std::vector<std::pair<std::size_t, Placement>> placed;  // unit -> where its item went, in order
    while (!queue.empty()) {
      const auto group = tied_group(queue);
      const auto needed = unplaced_bytes(group, queue);
      const auto forced = placed_device_of(group, queue);
      const std::size_t target = forced ? index_of(*forced) : device;
      if (fits(target, needed, queue, group)) {
        for (const auto position : group) {
          const auto& item = queue[position];
          placed.emplace_back(item.unit, devices_[target]);
          for (const auto key : keys(item)) placement_of_.emplace(key, devices_[target]);
        }
        used_[target] += needed;
        for (auto it = group.rbegin(); it != group.rend(); ++it) queue.erase(queue.begin() + *it);
        continue;
      }
      if (split_one(group, queue)) continue;
      if (forced || device + 1 == devices_.size()) does_not_fit(queue, group, needed, target);
      ++device;
    }
    return cleaned(placed);
  }

 private:
  std::vector<TensorKey> keys(const PlacementItem& item) const {
    std::vector<TensorKey> out;
    collect_keys(item.unit, item.own_only, out);
    return out;
  }
  void collect_keys(std::size_t unit, bool own_only, std::vector<TensorKey>& out) const {
    for (const auto& t : units_[unit].tensors) out.push_back(t.tensor.unsafeGetTensorImpl());
    if (!own_only)
      for (const auto child : units_[unit].children) collect_keys(child, false, out);
  }
  uint64_t bytes_of(const std::vector<TensorKey>& tensors) const {
    const std::set<TensorKey> unique(tensors.begin(), tensors.end());
    uint64_t bytes = 0;
    for (const auto key : unique) bytes += tensor_bytes_.at(key);
    return bytes;
  }
  bool splittable(const PlacementItem& item) const {
    const auto& unit = units_[item.unit];
    return !item.own_only && !unit.children.empty() && !no_split_.count(unit.class_name);
  }
  // The largest item that is never split further: what an offloaded unit's weights take on the
  // execution device while it runs (Accelerate's max_layer_size).
  uint64_t largest_atomic(const PlacementItem& item) const {
    if (!splittable(item)) return bytes_of(keys(item));
    uint64_t largest = bytes_of(keys({item.unit, true}));
    for (const auto child : units_[item.unit].children) largest = std::max(largest, largest_atomic({child, false}));
    return largest;
  }
  // What a main device keeps free for the largest unit still to place (`placing`, the positions
  // being placed now, not counted: placed here, they are never offloaded, as in Accelerate).
  uint64_t reserve(std::size_t device, const std::deque<PlacementItem>& queue,
                   const std::vector<std::size_t>& placing) const {
    if (std::find(main_devices_.begin(), main_devices_.end(), devices_[device]) == main_devices_.end()) return 0;
    uint64_t largest = 0;
    for (std::size_t i = 0; i < queue.size(); ++i)
      if (queue[i].unit != 0 && std::find(placing.begin(), placing.end(), i) == placing.end())
        largest = std::max(largest, largest_atomic(queue[i]));
    return largest;
  }
  bool fits(std::size_t device, uint64_t bytes, const std::deque<PlacementItem>& queue,
            const std::vector<std::size_t>& placing) const {
    const auto budget = budgets_.at(devices_[device]);
    const auto taken = used_.count(device) ? used_.at(device) : 0;
    const auto kept = reserve(device, queue, placing);
    return kept <= budget && taken <= budget - kept && bytes <= budget - kept - taken;
  }
  // The front item and every queued item that shares a tensor with it, transitively (positions).
  std::vector<std::size_t> tied_group(const std::deque<PlacementItem>& queue) const {
    std::vector<std::size_t> group{0};
    auto tensors = keys(queue[0]);
    std::set<TensorKey> seen(tensors.begin(), tensors.end());
    for (bool grew = true; grew;) {
      grew = false;
      for (std::size_t i = 1; i < queue.size(); ++i) {
        if (std::find(group.begin(), group.end(), i) != group.end()) continue;
        const auto theirs = keys(queue[i]);
        if (std::none_of(theirs.begin(), theirs.end(), [&](TensorKey k) { return seen.count(k) > 0; })) continue;
        group.push_back(i);
        seen.insert(theirs.begin(), theirs.end());
        grew = true;
      }
    }
    std::sort(group.begin(), group.end());
    return group;
  }
  std::vector<TensorKey> group_keys(const std::vector<std::size_t>& group,
                                    const std::deque<PlacementItem>& queue) const {
    std::vector<TensorKey> out;
    for (const auto position : group) collect_keys(queue[position].unit, queue[position].own_only, out);
    return out;
  }
  uint64_t unplaced_bytes(const std::vector<std::size_t>& group, const std::deque<PlacementItem>& queue) const {
    auto tensors = group_keys(group, queue);
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](TensorKey k) { return placement_of_.count(k); }),
                  tensors.end());
    return bytes_of(tensors);
  }
  // Where a tensor of the group already went with an earlier unit (the group must follow it);
  // the model's own tensors always go to the execution device.
  std::optional<Placement> placed_device_of(const std::vector<std::size_t>& group,
                                            const std::deque<PlacementItem>& queue) const {
    if (queue[group.front()].unit == 0) return devices_.front();
    for (const auto key : group_keys(group, queue)) {
      const auto found = placement_of_.find(key);
      if (found != placement_of_.end()) return found->second;
    }
    return std::nullopt;
  }
  std::size_t index_of(const Placement& placement) const {
    return static_cast<std::size_t>(std::find(devices_.begin(), devices_.end(), placement) - devices_.begin());
  }
  // Replaces the first splittable item of the group by its own tensors and its nested units.
  bool split_one(const std::vector<std::size_t>& group, std::deque<PlacementItem>& queue) const {
    for (const auto position : group) {
      if (!splittable(queue[position])) continue;
      const auto unit = queue[position].unit;
      queue[position].own_only = true;
      const auto& children = units_[unit].children;
      std::vector<PlacementItem> nested;
      for (const auto child : children) nested.push_back({child, false});
      queue.insert(queue.begin() + static_cast<std::ptrdiff_t>(position) + 1, nested.begin(), nested.end());
      return true;
    }
    return false;
  }

  [[noreturn]] void does_not_fit(const std::deque<PlacementItem>& queue, const std::vector<std::size_t>& group,
                                 uint64_t needed, std::size_t device) const {
    std::vector<TensorKey> all;
    collect_keys(0, false, all);
    std::string what = queue[group.front()].unit == 0 ? "the model's own parameters and buffers (outside every unit)"
                                                      : "unit '" + units_[queue[group.front()].unit].name + "'";
    if (group.size() > 1) {
      what += " with the units sharing (tied) tensors with it:";
      for (std::size_t i = 1; i < group.size(); ++i) what += " '" + units_[queue[group[i]].unit].name + "'";
    }
    std::string budgets;
    for (std::size_t d = 0; d < devices_.size(); ++d) {
      budgets += (d ? ", " : "") + devices_[d].to_string() + " " + format_memory_size(budgets_.at(devices_[d]));
      const auto kept = reserve(d, queue, group);
      if (kept) budgets += " (" + format_memory_size(kept) + " of it kept for the largest unit)";
    }
    throw Error("the model does not fit in max_memory: it takes " + format_memory_size(bytes_of(all)) + " (" +
                std::to_string(bytes_of(all)) + " bytes, tied tensors counted once) and the budgets are " + budgets +
                "; " + what + " (" + format_memory_size(needed) + ") has no room on any device from " +
                devices_[device].to_string() + " on. Raise a budget, or give \"disk\" one for the rest");
  }

  void check_no_split() const {
    std::set<std::string> classes;
    for (const auto& item : model_->named_modules()) classes.insert(item.value()->name());
    for (const auto& name : no_split_)
      if (!classes.count(name)) {
        std::string present;
        for (const auto& c : classes) present += (present.empty() ? "" : ", ") + c;
        throw Error("no_split names class '" + name + "', which no module of the model is (its classes: " + present +
                    "); name classes as Module::name() gives them");
      }
    for (const auto& item : model_->named_modules()) {
      if (!no_split_.count(item.value()->name())) continue;
      const bool is_unit = std::any_of(units_.begin() + 1, units_.end(),
                                       [&](const ModelUnit& u) { return u.module.get() == item.value().get(); });
      const bool holds_units = std::any_of(units_.begin() + 1, units_.end(), [&](const ModelUnit& u) {
        return u.name != item.key() && is_name_prefix(item.key(), u.name);
      });
      if (!is_unit && holds_units)
        throw Error("no_split names class '" + item.value()->name() + "', but its module '" + item.key() +
                    "' is not a unit while it holds units, which would be placed apart: declare it with acc::Unit");
    }
  }

  // Accelerate's clean_device_map: entries under a module that all go to the same device become
  // one entry for it, where no tensor under it belongs to a unit outside it (those stay with theirs).
  DeviceMap cleaned(const std::vector<std::pair<std::size_t, Placement>>& placed) const {
    std::vector<DeviceMap::Entry> entries;
    for (const auto& [unit, placement] : placed) entries.emplace_back(units_[unit].name, placement);
    clean("", entries);
    DeviceMap map;
    for (const auto& [name, placement] : entries) map.set(name, placement);
    return map;
  }
  void clean(const std::string& prefix, std::vector<DeviceMap::Entry>& entries) const {
    std::vector<std::size_t> under;
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (is_name_prefix(prefix, entries[i].first)) under.push_back(i);
    const bool same = std::all_of(under.begin(), under.end(),
                                  [&](std::size_t i) { return entries[i].second == entries[under.front()].second; });
    if (under.size() > 1 && same && holds_only_its_units(prefix)) {
      const auto placement = entries[under.front()].second;
      for (auto it = under.rbegin(); it != under.rend(); ++it) entries.erase(entries.begin() + *it);
      entries.insert(entries.begin() + under.front(), {prefix, placement});
      return;
    }
    for (const auto& name : module_names_) {
      const auto last_dot = name.rfind('.');
      const bool child =
          !name.empty() && (last_dot == std::string::npos ? prefix.empty() : name.substr(0, last_dot) == prefix);
      if (child) clean(name, entries);
    }
  }
  bool holds_only_its_units(const std::string& prefix) const {
    for (const auto& unit : units_)
      for (const auto& t : unit.tensors)
        if (is_name_prefix(prefix, t.name) && !is_name_prefix(prefix, unit.name)) return false;
    return true;
  }

  std::shared_ptr<torch::nn::Module> model_;
  std::vector<ModelUnit> units_;
  std::vector<std::string> module_names_;  // named_modules(), the model's "" first
  std::set<std::string> no_split_;
  std::map<Placement, uint64_t> budgets_;
  std::vector<Placement> devices_;
  std::vector<Placement> main_devices_;
  std::map<TensorKey, uint64_t> tensor_bytes_;
  std::map<TensorKey, Placement> placement_of_;
  std::map<std::size_t, uint64_t> used_;
};

}  // namespace detail

ACC_DECL DeviceMap infer_auto_device_map(const std::shared_ptr<torch::nn::Module>& model, const MaxMemory& max_memory,
                                         const DeviceMapOptions& options) {
  if (!model) throw Error("acc::infer_auto_device_map: the model holder is empty");
  return detail::AutoDeviceMap(model, max_memory, options).compute();
}

}  // namespace acc

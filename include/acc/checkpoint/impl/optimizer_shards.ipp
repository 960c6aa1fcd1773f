// The bodies of optimizer_shards.hpp.
#pragma once

#include <acc/checkpoint/optimizer_shards.hpp>
#include <acc/detail/crc32c.hpp>
#include <acc/error.hpp>

#include <ATen/ops/equal.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <c10/util/ArrayRef.h>
#include <torch/serialize/output-archive.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>

namespace acc::detail {

namespace dealing {

// A parameter's optimizer state (or a parameter group's options): libtorch writes each entry as
// one value of its archive.
using Entries = std::map<std::string, c10::IValue>;

inline Entries entries_of(torch::serialize::InputArchive& archive) {
  Entries entries;
  for (const auto& key : archive.keys()) {
    c10::IValue value;
    archive.read(key, value);
    entries.emplace(key, std::move(value));
  }
  return entries;
}

inline void write_entries(const Entries& entries, torch::serialize::OutputArchive& archive) {
  for (const auto& [key, value] : entries) archive.write(key, value);
}

// What save_optimizer wrote on one rank: libtorch's archive (the parameter groups list the keys of
// their parameters' states) and each group's options.
struct SavedOptimizer {
  c10::IValue version;
  std::vector<std::vector<std::optional<Entries>>> states;  // by group, by parameter; none before a step
  std::vector<Entries> options;                             // libtorch's "options" of each group
  std::vector<Entries> acc_options;                         // save_optimizer's, which load_optimizer reads
};

inline SavedOptimizer read_saved(torch::serialize::InputArchive& archive) {
  SavedOptimizer saved;
  archive.read("pytorch_version", saved.version);
  torch::serialize::InputArchive groups, states;
  archive.read("param_groups", groups);
  archive.read("state", states);
  at::Tensor group_count;
  groups.read("param_groups/size", group_count);
  for (int64_t g = 0; g < group_count.item<int64_t>(); ++g) {
    torch::serialize::InputArchive group, options, acc_options;
    groups.read("param_groups/" + std::to_string(g), group);
    at::Tensor size;
    group.read("params/size", size);
    auto& params = saved.states.emplace_back();
    for (int64_t p = 0; p < size.item<int64_t>(); ++p) {
      c10::IValue key;
      group.read("params/" + std::to_string(p), key);
      torch::serialize::InputArchive state;
      if (states.try_read(key.toStringRef(), state))
        params.emplace_back(entries_of(state));
      else
        params.emplace_back();
    }
    group.read("options", options);
    saved.options.push_back(entries_of(options));
    archive.read("acc/param_group_options/" + std::to_string(g), acc_options);
    saved.acc_options.push_back(entries_of(acc_options));
  }
  return saved;
}

// Tensors, numbers, flags and text: what this deals out. Other kinds (lists, objects) might hold
// per-element state it cannot see.
inline void check_dealable(const c10::IValue& value, const std::string& what) {
  if (!(value.isTensor() || value.isInt() || value.isDouble() || value.isBool() || value.isString() || value.isNone()))
    throw Error(what + " is a " + value.tagKind() +
                ", which cannot be dealt out to another number of processes (only tensors and numbers can); resume "
                "with as many processes as saved it");
}

// Whether two ranks saved the same value: tensors element by element, the others by value.
inline bool same_value(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() && b.isTensor()) {
    const auto& x = a.toTensor();
    const auto& y = b.toTensor();
    return x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() && at::equal(x.cpu(), y.cpu());
  }
  return !a.isTensor() && !b.isTensor() && a == b;
}

// A copied value as DealtOptimizerState::copied lists it.
inline std::string copied_text(const c10::IValue& value) {
  std::ostringstream text;
  if (value.isTensor()) {
    const auto tensor = value.toTensor().cpu().contiguous();
    text << tensor.scalar_type() << tensor.sizes() << " crc32c "
         << crc32c_extend(0, tensor.data_ptr(), tensor.numel() * tensor.element_size());
  } else if (value.isDouble()) {
    text << std::hexfloat << value.toDouble();
  } else {
    text << value;
  }
  return text.str();
}

// The part [first, last) of a unit's flat parameter that shard `index` holds, padding left out.
inline std::pair<int64_t, int64_t> slice_of(const CheckpointMetadata::FlatUnit& unit, int64_t index) {
  const int64_t first = std::min(index * unit.shard_numel, unit.numel);
  return {first, std::min(first + unit.shard_numel, unit.numel)};
}

// The saved shards (the ranks 0 .. shards - 1, whose files hold them) that overlap this rank's
// slices, in order; at least one, for the state that is not per element. An acc::Error when the
// saved units are not this model's.
inline std::vector<int64_t> saved_shards_needed(const std::vector<CheckpointMetadata::FlatUnit>& saved,
                                                const std::vector<OptimizerShard>& here) {
  if (saved.size() != here.size())
    throw Error("it holds the optimizer state of " + std::to_string(saved.size()) + " FSDP units and this model has " +
                std::to_string(here.size()) + "; prepare the model with the same units");
  std::set<int64_t> needed;
  for (std::size_t u = 0; u < saved.size(); ++u) {
    const auto& mine = here[u].unit;
    if (saved[u].name != mine.name || saved[u].numel != mine.numel)
      throw Error("its FSDP unit " + std::to_string(u) + " is '" + saved[u].name + "' of " +
                  std::to_string(saved[u].numel) + " parameter elements, and this model's is '" + mine.name + "' of " +
                  std::to_string(mine.numel) + "; prepare the model with the same units");
    const auto [first, last] = slice_of(mine, here[u].index);
    for (int64_t shard = first / saved[u].shard_numel; shard * saved[u].shard_numel < last; ++shard)
      needed.insert(shard);
  }
  if (needed.empty()) needed.insert(0);  // every slice of this rank is padding
  return {needed.begin(), needed.end()};
}

}  // namespace dealing

ACC_DECL std::vector<CheckpointMetadata::FlatUnit> units_of(const std::vector<OptimizerShard>& here) {
  std::vector<CheckpointMetadata::FlatUnit> units;
  for (const auto& shard : here) units.push_back(shard.unit);
  return units;
}

ACC_DECL DealtOptimizerState
deal_optimizer_state(const std::vector<CheckpointMetadata::FlatUnit>& saved, const std::vector<OptimizerShard>& here,
                     const torch::optim::Optimizer& optimizer,
                     const std::function<torch::serialize::InputArchive(int64_t rank)>& saved_archive) {
  using dealing::Entries;
  const auto needed = dealing::saved_shards_needed(saved, here);
  std::vector<dealing::SavedOptimizer> files;
  for (const auto shard : needed) {
    auto archive = saved_archive(shard);
    files.push_back(dealing::read_saved(archive));
  }
  const auto shard_text = [&](std::size_t k) { return "rank " + std::to_string(needed[k]) + "'s"; };
  const auto& groups = optimizer.param_groups();
  for (std::size_t k = 0; k < files.size(); ++k) {
    if (files[k].states.size() != groups.size())
      throw Error(shard_text(k) + " optimizer state has " + std::to_string(files[k].states.size()) +
                  " parameter groups, and this optimizer has " + std::to_string(groups.size()));
    for (std::size_t g = 0; g < groups.size(); ++g)
      if (files[k].states[g].size() != groups[g].params().size())
        throw Error(shard_text(k) + " optimizer state has " + std::to_string(files[k].states[g].size()) +
                    " parameters in group " + std::to_string(g) + ", and this optimizer has " +
                    std::to_string(groups[g].params().size()));
  }

  // libtorch's archive again (optim/serialize.h), with this rank's states: keys are numbers, as
  // libtorch 2.2 and later read them back.
  std::ostringstream copied;
  torch::serialize::OutputArchive out;
  const auto unit = out.compilation_unit();
  torch::serialize::OutputArchive states(unit), param_groups(unit);
  int64_t next_key = 0;
  param_groups.write("param_groups/size", at::scalar_tensor(static_cast<int64_t>(groups.size()), at::kLong));
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const auto& params = groups[g].params();
    torch::serialize::OutputArchive group(unit);
    group.write("params/size", at::scalar_tensor(static_cast<int64_t>(params.size()), at::kLong));
    for (std::size_t p = 0; p < params.size(); ++p) {
      const auto key = std::to_string(++next_key);
      group.write("params/" + std::to_string(p), c10::IValue(key));
      const auto& param = params[p];
      std::optional<std::size_t> of_unit;
      for (std::size_t u = 0; u < here.size(); ++u)
        if (here[u].tensor.unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) of_unit = u;
      const auto what = "parameter " + std::to_string(p) + " of group " + std::to_string(g) +
                        (of_unit ? " (FSDP unit '" + here[*of_unit].unit.name + "')" : std::string());
      std::size_t with_state = 0;
      for (const auto& file : files) with_state += file.states[g][p].has_value();
      if (with_state == 0) continue;  // not stepped yet
      if (with_state != files.size())
        throw Error("the optimizer state of " + what + " is in some of the saved ranks' files and not in others");

      Entries dealt;
      const auto& first = *files.front().states[g][p];
      for (const auto& [name, value] : first) {
        const auto entry = "the optimizer state '" + name + "' of " + what;
        std::vector<const c10::IValue*> values;
        for (std::size_t k = 0; k < files.size(); ++k) {
          const auto& entries = *files[k].states[g][p];
          const auto found = entries.find(name);
          if (found == entries.end() || entries.size() != first.size())
            throw Error(entry + ": " + shard_text(k) + " file has other entries than " + shard_text(0));
          values.push_back(&found->second);
        }
        // One element per element of the unit's flat parameter: each saved shard's part of this
        // rank's slice, zeros where the slice is padding.
        const auto per_element = [&](const c10::IValue* v) {
          return of_unit && v->isTensor() && v->toTensor().dim() == 1 &&
                 v->toTensor().size(0) == saved[*of_unit].shard_numel;
        };
        if (per_element(values.front())) {
          const auto& from = saved[*of_unit];
          const auto& to = here[*of_unit];
          auto slice = at::zeros({to.unit.shard_numel}, value.toTensor().options().device(param.device()));
          const auto [first_element, last_element] = dealing::slice_of(to.unit, to.index);
          for (std::size_t k = 0; k < files.size(); ++k) {
            if (!per_element(values[k]) || values[k]->toTensor().scalar_type() != value.toTensor().scalar_type())
              throw Error(entry + " is of another shape or dtype in " + shard_text(k) + " file than in " +
                          shard_text(0));
            const auto [saved_first, saved_last] = dealing::slice_of(from, needed[k]);
            const int64_t begin = std::max(first_element, saved_first), end = std::min(last_element, saved_last);
            if (begin < end)
              slice.narrow(0, begin - first_element, end - begin)
                  .copy_(values[k]->toTensor().narrow(0, begin - saved_first, end - begin));
          }
          dealt.emplace(name, slice);
          continue;
        }
        // Not per element (a step count, or the state of a parameter held whole): the same on every rank.
        dealing::check_dealable(value, entry);
        for (std::size_t k = 1; k < files.size(); ++k)
          if (!dealing::same_value(value, *values[k]))
            throw Error(entry + " differs between " + shard_text(0) + " file and " + shard_text(k) +
                        ", and it must be the same on every rank (they step together)");
        dealt.emplace(name, value.isTensor() ? c10::IValue(value.toTensor().to(param.device())) : value);
        copied << g << "." << p << "." << name << "=" << dealing::copied_text(value) << "\n";
      }
      torch::serialize::OutputArchive state(unit);
      dealing::write_entries(dealt, state);
      states.write(key, state);
    }
    // Every rank has the same options: the first file's.
    torch::serialize::OutputArchive options(unit), acc_options(unit);
    dealing::write_entries(files.front().options[g], options);
    group.write("options", options);
    param_groups.write("param_groups/" + std::to_string(g), group);
    dealing::write_entries(files.front().acc_options[g], acc_options);
    out.write("acc/param_group_options/" + std::to_string(g), acc_options);
  }
  out.write("pytorch_version", files.front().version);
  out.write("state", states);
  out.write("param_groups", param_groups);

  // An archive is read from bytes: written, then read back (the tensors stay on their devices).
  std::ostringstream bytes;
  out.save_to(bytes);
  std::istringstream in(bytes.str());
  DealtOptimizerState dealt;
  dealt.archive.load_from(in);
  dealt.copied = copied.str();
  return dealt;
}

}  // namespace acc::detail

// The bodies of checkpoint/model_files.hpp.
#pragma once

#include <acc/checkpoint/model_files.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/files.hpp>

#include <cstdint>
#include <map>

namespace acc {

ACC_DECL void save_model_files(const std::vector<std::pair<std::string, at::Tensor>>& state,
                               const std::filesystem::path& dir, const ShardSize& max_shard_size) {
  std::vector<uint64_t> bytes;
  uint64_t total = 0;
  for (const auto& entry : state) {
    bytes.push_back(static_cast<uint64_t>(entry.second.numel()) * entry.second.element_size());
    total += bytes.back();
  }
  const auto plan = weights::plan_shards(bytes, static_cast<uint64_t>(max_shard_size.bytes()));
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;
  for (std::size_t s = 0; s < plan.size(); ++s) {
    names.push_back(plan.size() == 1 ? weights::kSingleFile : weights::shard_file_name(s, plan.size()));
    for (const auto i : plan[s]) weight_map[state[i].first] = names.back();
  }
  std::filesystem::create_directories(dir);
  detail::require_free_space(dir, total, "save_model('" + dir.string() + "')");
  weights::write_model_files(
      dir, names,
      [&](std::size_t s, const std::filesystem::path& staged) {
        std::vector<std::pair<std::string, at::Tensor>> tensors;
        for (const auto i : plan[s]) tensors.push_back(state[i]);
        safetensors::save_file(tensors, staged, {{"format", "pt"}});
      },
      plan.size() > 1 ? weights::index_json(total, weight_map) : std::string());
}

}  // namespace acc

// The bodies of checkpoint/tp_sharded_state.hpp.
#pragma once

#include <acc/checkpoint/checkpoint_io.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/tp_sharded_state.hpp>
#include <acc/detail/files.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/error.hpp>
#include <acc/nn/split_layers.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace acc::tp::detail {

namespace {

std::string describe_cut(const nn::ShardLayout& layout) {
  return "[" + std::to_string(layout.dim) + ", " + std::to_string(layout.parts) + "]";
}

// A file written beside its final name (where checkpoint_io stages a save), then renamed over it
// and the rename made durable: a save killed halfway leaves the previous checkpoint's file whole,
// and the next save removes what it left.
template <class Write>
void write_replacing(const std::filesystem::path& file, Write&& write) {
  acc::detail::remove_stale_staging(file);
  const auto staged = acc::detail::staging_path(file, ::getpid());
  write(staged);
  std::error_code error;
  std::filesystem::rename(staged, file, error);
  if (error) {
    std::filesystem::remove(staged, error);
    throw Error("cannot move the saved '" + staged.string() + "' to '" + file.string() + "': " + error.message());
  }
  acc::detail::fsync_path(acc::detail::parent_directory(file));
}

}  // namespace

ACC_DECL std::filesystem::path model_shard_file(const std::filesystem::path& dir, int rank) {
  return dir / ("model_tp" + std::to_string(rank) + ".safetensors");
}

ACC_DECL std::filesystem::path optimizer_shard_file(const std::filesystem::path& dir, int rank) {
  return dir / ("optimizer_tp" + std::to_string(rank) + ".pt");
}

ACC_DECL void save_sharded_state(const torch::nn::Module& module, const torch::optim::Optimizer* optimizer,
                                 const std::filesystem::path& dir, int rank, int ranks) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) throw Error("acc::tp::save_sharded_state: cannot create '" + dir.string() + "': " + error.message());
  auto splits = nlohmann::json::object();
  for (const auto& [name, cut] : nn::split_tensors(module)) splits[name] = {cut.layout.dim, cut.layout.parts};
  const nlohmann::json shard = {{"rank", rank}, {"size", ranks}, {"splits", splits}};
  write_replacing(model_shard_file(dir, rank), [&](const std::filesystem::path& file) {
    acc::safetensors::save_file(acc::detail::module_state(module), file,
                                {{"format", "pt"}, {kShardMetadataKey, shard.dump()}});
  });
  if (!optimizer) return;
  write_replacing(optimizer_shard_file(dir, rank), [&](const std::filesystem::path& file) {
    torch::serialize::OutputArchive archive;
    acc::detail::save_optimizer(*optimizer, archive);
    acc::detail::save_archive(archive, file);
  });
}

ACC_DECL void load_sharded_state(torch::nn::Module& module, torch::optim::Optimizer* optimizer,
                                 const std::filesystem::path& dir, int rank, int ranks) {
  const auto file = model_shard_file(dir, rank);
  const auto optimizer_file = optimizer_shard_file(dir, rank);
  const std::string saved_by =
      "; load a checkpoint that acc::tp::save_sharded_state wrote on every rank of a tp group "
      "of this size, or whole weights with acc::tp::load_full_state (acc merge-weights " +
      dir.string() + " OUT joins these files into them)";
  std::error_code error;
  if (!std::filesystem::is_regular_file(file, error))
    throw Error("acc::tp::load_sharded_state: '" + file.string() + "', rank " + std::to_string(rank) +
                "'s file, does not exist" + saved_by);
  if (optimizer && !std::filesystem::is_regular_file(optimizer_file, error))
    throw Error("acc::tp::load_sharded_state: '" + optimizer_file.string() +
                "' does not exist: the checkpoint was saved without the optimizer; load it without one");
  const auto contents = acc::safetensors::load_file(file);
  const auto metadata = contents.metadata.find(kShardMetadataKey);
  const auto shard = metadata == contents.metadata.end()
                         ? nlohmann::json()
                         : nlohmann::json::parse(metadata->second, nullptr, /*allow_exceptions=*/false);
  if (!shard.is_object() || !shard.contains("rank") || !shard["rank"].is_number_integer() || !shard.contains("size") ||
      !shard["size"].is_number_integer() || !shard.contains("splits") || !shard["splits"].is_object())
    throw Error("acc::tp::load_sharded_state: '" + file.string() + "' has no valid \"" + kShardMetadataKey +
                "\" in its metadata: it is not a tensor-parallel shard" + saved_by);
  if (shard["rank"].get<int64_t>() != rank || shard["size"].get<int64_t>() != ranks)
    throw Error("acc::tp::load_sharded_state: '" + file.string() + "' holds rank " +
                std::to_string(shard["rank"].get<int64_t>()) + " of a tp group of " +
                std::to_string(shard["size"].get<int64_t>()) + ", and this process is rank " + std::to_string(rank) +
                " of " + std::to_string(ranks) + saved_by);
  // The same plan: each split tensor cut as when it was saved, and no other.
  std::map<std::string, std::string> saved, own;
  for (const auto& [name, cut] : shard["splits"].items())
    saved[name] = cut.is_array() && cut.size() == 2 && cut[0].is_number_integer() && cut[1].is_number_integer()
                      ? describe_cut({cut[0].get<int64_t>(), cut[1].get<int64_t>()})
                      : cut.dump();
  for (const auto& [name, cut] : nn::split_tensors(module)) own[name] = describe_cut(cut.layout);
  for (const auto& [name, cut] : own)
    if (saved[name] != cut)
      throw Error("acc::tp::load_sharded_state: '" + name + "' is split " + cut + " ([dim, parts]) in this model but " +
                  (saved[name].empty() ? std::string("whole") : saved[name]) + " in '" + file.string() +
                  "': split the model with the plan it was saved with");
  for (const auto& [name, cut] : saved)
    if (!own.count(name))
      throw Error("acc::tp::load_sharded_state: '" + name + "' is split " + cut + " in '" + file.string() +
                  "' but whole in this model: split the model with the plan it was saved with");
  std::optional<torch::serialize::InputArchive> archive;  // read before the model changes
  if (optimizer) archive = acc::detail::load_archive(optimizer_file);
  try {
    acc::detail::load_module_state(module, contents.tensors);
  } catch (const Error& e) {
    throw Error("acc::tp::load_sharded_state: '" + file.string() + "': " + e.what());
  }
  if (optimizer) acc::detail::read_from(optimizer_file, [&] { acc::detail::load_optimizer(*optimizer, *archive); });
}

}  // namespace acc::tp::detail

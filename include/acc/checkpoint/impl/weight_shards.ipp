// The bodies of checkpoint/weight_shards.hpp (nlohmann/json stays here).
#pragma once

#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/files.hpp>

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <system_error>

namespace acc {

namespace detail {

inline std::string shard_size_forms() {
  return "give bytes as an integer, or an integer with a unit: KB, MB, GB (powers of 1000) or KiB, MiB, GiB "
         "(powers of 1024), e.g. \"10GB\" or \"500MiB\"";
}

}  // namespace detail

ACC_DECL int64_t parse_shard_size(std::string_view text) {
  const auto fail = [&](const std::string& why) -> int64_t {
    throw Error("max_shard_size '" + std::string(text) + "' " + why + "; " + detail::shard_size_forms());
  };
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0) return fail("does not start with a number");
  std::string unit(text.substr(digits));
  // transformers: a lowercase final "b" counts bits ("10Gb"), except in the binary units.
  const bool bits = !unit.empty() && unit.back() == 'b' && unit.size() == 2;
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::toupper(c); });
  int64_t multiplier = 0;
  if (unit.empty())
    multiplier = 1;
  else if (unit == "KB")
    multiplier = 1000;
  else if (unit == "MB")
    multiplier = 1000'000;
  else if (unit == "GB")
    multiplier = 1000'000'000;
  else if (unit == "KIB")
    multiplier = int64_t{1} << 10;
  else if (unit == "MIB")
    multiplier = int64_t{1} << 20;
  else if (unit == "GIB")
    multiplier = int64_t{1} << 30;
  else
    return fail("has the unknown unit '" + std::string(text.substr(digits)) + "'");
  int64_t number = 0;
  for (std::size_t i = 0; i < digits; ++i)
    if (__builtin_mul_overflow(number, 10, &number) || __builtin_add_overflow(number, text[i] - '0', &number))
      return fail("is too large");
  int64_t bytes = 0;
  if (__builtin_mul_overflow(number, multiplier, &bytes)) return fail("is too large");
  if (bits) bytes /= 8;
  if (bytes < 1) return fail("is less than one byte");
  return bytes;
}

ACC_DECL ShardSize::ShardSize(long bytes) : bytes_(bytes) {
  if (bytes < 1)
    throw Error("max_shard_size " + std::to_string(bytes) + " is not a size in bytes; " + detail::shard_size_forms());
}

ACC_DECL ShardSize::ShardSize(std::string_view text) : bytes_(parse_shard_size(text)) {}

namespace weights {

ACC_DECL std::string shard_file_name(std::size_t index, std::size_t count) {
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

ACC_DECL std::vector<std::vector<std::size_t>> plan_shards(const std::vector<uint64_t>& bytes, uint64_t max_bytes) {
  std::vector<std::vector<std::size_t>> shards;
  uint64_t filled = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (shards.empty() || (!shards.back().empty() && filled + bytes[i] > max_bytes)) {
      shards.emplace_back();
      filled = 0;
    }
    shards.back().push_back(i);
    filled += bytes[i];
  }
  if (shards.empty()) shards.emplace_back();  // a model without tensors: one empty file
  return shards;
}

ACC_DECL std::string index_json(uint64_t total_size, const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = nlohmann::ordered_json::object();
  for (const auto& [name, file] : weight_map) index["weight_map"][name] = file;
  return index.dump(2) + "\n";
}

ACC_DECL Index read_index(const std::filesystem::path& file) {
  const auto fail = [&](const std::string& why) -> Index {
    throw Error("safetensors index '" + file.string() + "': " + why);
  };
  std::ifstream in(file);
  if (!in) return fail("cannot open it");
  const auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return fail("it is not valid JSON");
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object())
    return fail("it has no \"weight_map\" object naming the file of each tensor");
  Index index;
  if (json.contains("metadata") && json["metadata"].is_object() && json["metadata"].contains("total_size") &&
      json["metadata"]["total_size"].is_number_unsigned())
    index.total_size = json["metadata"]["total_size"].get<uint64_t>();
  std::set<std::string> files;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) return fail("weight_map[\"" + name + "\"] is not a file name");
    auto shard_name = shard.get<std::string>();
    if (shard_name.empty() || shard_name.find('/') != std::string::npos || shard_name == "." || shard_name == "..")
      return fail("weight_map[\"" + name + "\"] is '" + shard_name + "', not a file beside the index");
    files.insert(shard_name);
    index.weight_map.emplace(name, std::move(shard_name));
  }
  index.files.assign(files.begin(), files.end());
  return index;
}

ACC_DECL std::vector<std::filesystem::path> model_files(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    if (!std::filesystem::exists(path, ec))
      throw Error("'" + path.string() + "' does not exist; give a .safetensors file or a directory holding " +
                  kSingleFile + " or " + kIndexFile);
    if (path.filename().string().size() > 5 &&
        path.filename().string().compare(path.filename().string().size() - 5, 5, ".json") == 0)
      return model_files(path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path());
    return {path};
  }
  if (std::filesystem::exists(path / kSingleFile, ec)) return {path / kSingleFile};
  if (!std::filesystem::exists(path / kIndexFile, ec))
    throw Error("directory '" + path.string() + "' holds neither " + kSingleFile + " nor " + kIndexFile +
                "; give the directory save_model wrote, or a .safetensors file");
  std::vector<std::filesystem::path> files;
  for (const auto& name : read_index(path / kIndexFile).files) files.push_back(path / name);
  return files;
}

namespace detail {

// "model-00001-of-00003.safetensors": a shard of some save.
inline bool is_shard_file_name(const std::string& name) {
  unsigned a = 0, b = 0;
  int end = 0;
  return name.size() == 32 && std::sscanf(name.c_str(), "model-%5u-of-%5u.safetensors%n", &a, &b, &end) == 2 &&
         end == 32;
}

// Removes `<file>.tmp-<pid>` staging files of processes that no longer run (killed saves).
inline void remove_dead_staging(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    const auto at = name.rfind(".tmp-");
    if (at == std::string::npos) continue;
    const auto stem = name.substr(0, at), digits = name.substr(at + 5);
    if (stem != kSingleFile && stem != kIndexFile && !is_shard_file_name(stem)) continue;
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::filesystem::remove(entry.path(), ec);
  }
}

}  // namespace detail

ACC_DECL void write_model_files(const std::filesystem::path& dir, const std::vector<std::string>& names,
                                const std::function<void(std::size_t, const std::filesystem::path&)>& write,
                                const std::string& index) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  detail::remove_dead_staging(dir);
  const auto staged = [&](const std::string& name) { return dir / (name + ".tmp-" + std::to_string(::getpid())); };
  std::vector<std::string> written;  // staged so far, removed on failure
  const bool sharded = names.size() > 1;
  try {
    for (std::size_t i = 0; i < names.size(); ++i) {
      written.push_back(names[i]);
      write(i, staged(names[i]));
    }
    if (sharded) {
      written.push_back(kIndexFile);
      acc::detail::write_synced(staged(kIndexFile), index);
    }
  } catch (...) {
    std::error_code ec;
    for (const auto& name : written) fs::remove(staged(name), ec);
    throw;
  }
  // Every file is staged. A loader takes model.safetensors first, then the index: an old index
  // goes before shards of the same names are replaced, the new index comes after all of them, and
  // an old model.safetensors (which hides the new index) goes last.
  std::error_code ec;
  if (sharded) {
    fs::remove(dir / kIndexFile, ec);
    acc::detail::fsync_path(dir);
  }
  for (const auto& name : written) fs::rename(staged(name), dir / name);
  acc::detail::fsync_path(dir);
  const std::set<std::string> keep(names.begin(), names.end());
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto name = entry.path().filename().string();
    if (keep.count(name) || (sharded && name == kIndexFile)) continue;
    if (name == kSingleFile || name == kIndexFile || detail::is_shard_file_name(name)) fs::remove(entry.path(), ec);
  }
  acc::detail::fsync_path(dir);
}

}  // namespace weights

ACC_DECL std::string ShardedStateLayout::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = format;
  j["world_size"] = world_size;
  j["rank"] = rank;
  j["units"] = nlohmann::ordered_json::array();
  for (const auto& u : units) {
    nlohmann::ordered_json unit;
    unit["name"] = u.name;
    unit["key"] = u.key;
    unit["dtype"] = u.dtype;
    unit["world_size"] = u.world_size;
    unit["padded_numel"] = u.padded_numel;
    unit["shard_numel"] = u.shard_numel;
    unit["members"] = nlohmann::ordered_json::array();
    for (const auto& m : u.members)
      unit["members"].push_back({{"name", m.name}, {"shape", m.shape}, {"offset", m.offset}, {"numel", m.numel}});
    j["units"].push_back(std::move(unit));
  }
  j["order"] = order;
  j["whole"] = whole;
  return j.dump();
}

ACC_DECL ShardedStateLayout ShardedStateLayout::from_json(const std::string& text, const std::string& origin) {
  const auto fail = [&](const std::string& why) {
    throw Error(origin + ": its sharded state layout (__metadata__ \"" + metadata_key + "\") " + why);
  };
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) fail("is not a JSON object");
  const auto integer = [&](const nlohmann::json& object, const char* key, int64_t minimum) {
    if (!object.contains(key) || !object[key].is_number_integer() || object[key].get<int64_t>() < minimum)
      fail("has no integer \"" + std::string(key) + "\" of at least " + std::to_string(minimum));
    return object[key].get<int64_t>();
  };
  const auto text_of = [&](const nlohmann::json& object, const char* key) {
    if (!object.contains(key) || !object[key].is_string()) fail("has no string \"" + std::string(key) + "\"");
    return object[key].get<std::string>();
  };
  const auto names = [&](const char* key) {
    std::vector<std::string> out;
    if (!json.contains(key) || !json[key].is_array()) fail("has no list \"" + std::string(key) + "\"");
    for (const auto& n : json[key]) {
      if (!n.is_string()) fail("\"" + std::string(key) + "\" holds something other than names");
      out.push_back(n.get<std::string>());
    }
    return out;
  };
  ShardedStateLayout layout;
  layout.format = integer(json, "format", 1);
  if (layout.format > current_format)
    fail("has format " + std::to_string(layout.format) + ", newer than this acc reads (" +
         std::to_string(current_format) + ")");
  layout.world_size = integer(json, "world_size", 1);
  layout.rank = integer(json, "rank", 0);
  if (layout.rank >= layout.world_size)
    fail("names rank " + std::to_string(layout.rank) + " of " + std::to_string(layout.world_size));
  if (!json.contains("units") || !json["units"].is_array()) fail("has no list \"units\"");
  for (const auto& u : json["units"]) {
    if (!u.is_object()) fail("has a unit that is not an object");
    Unit unit;
    unit.name = text_of(u, "name");
    unit.key = text_of(u, "key");
    unit.dtype = text_of(u, "dtype");
    unit.world_size = integer(u, "world_size", 1);
    unit.padded_numel = integer(u, "padded_numel", 0);
    unit.shard_numel = integer(u, "shard_numel", 0);
    int64_t covered = 0;
    if ((unit.world_size != 1 && unit.world_size != layout.world_size) ||
        __builtin_mul_overflow(unit.shard_numel, unit.world_size, &covered) || covered != unit.padded_numel)
      fail("gives unit '" + unit.name + "' " + std::to_string(unit.padded_numel) + " elements, not " +
           std::to_string(unit.world_size) + " shards of " + std::to_string(unit.shard_numel));
    if (!u.contains("members") || !u["members"].is_array()) fail("has no members for unit '" + unit.name + "'");
    for (const auto& m : u["members"]) {
      if (!m.is_object()) fail("has a member of unit '" + unit.name + "' that is not an object");
      Member member;
      member.name = text_of(m, "name");
      member.offset = integer(m, "offset", 0);
      member.numel = integer(m, "numel", 0);
      if (!m.contains("shape") || !m["shape"].is_array()) fail("has no shape for '" + member.name + "'");
      int64_t numel = 1;
      for (const auto& d : m["shape"]) {
        if (!d.is_number_unsigned() || __builtin_mul_overflow(numel, d.get<int64_t>(), &numel))
          fail("has a bad shape for '" + member.name + "'");
        member.shape.push_back(d.get<int64_t>());
      }
      if (numel != member.numel || member.offset > unit.padded_numel - member.numel)
        fail("places '" + member.name + "' outside unit '" + unit.name + "' or gives it a numel unlike its shape");
      unit.members.push_back(std::move(member));
    }
    layout.units.push_back(std::move(unit));
  }
  layout.order = names("order");
  layout.whole = names("whole");
  return layout;
}

ACC_DECL std::string sharded_state_file(std::size_t model, int64_t rank) {
  return (model == 0 ? std::string("model") : "model_" + std::to_string(model)) + "_rank" + std::to_string(rank) +
         ".safetensors";
}

}  // namespace acc

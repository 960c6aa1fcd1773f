// The bodies of metadata.hpp: acc_state.json written and read (nlohmann/json stays here).
#pragma once

#include <acc/checkpoint/metadata.hpp>

#include <nlohmann/json.hpp>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <system_error>

namespace acc {

namespace detail {

// Reads one manifest's values, each checked; a failure names the file, the key and the range.
class ManifestReader {
 public:
  explicit ManifestReader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw DamagedCheckpoint("'" + file_.string() + "': " + key + " " + problem);
  }

  const nlohmann::json& at(const nlohmann::json& object, const std::string& name, const std::string& key) const {
    if (!object.is_object()) fail(key, "is " + shown(object) + ", not an object");
    const auto it = object.find(name);
    if (it == object.end()) fail(key + (key.empty() ? "" : ".") + name, "is missing");
    return *it;
  }

  int64_t integer(const nlohmann::json& value, const std::string& key, int64_t min, int64_t max) const {
    // nlohmann keeps a non-negative integer as unsigned: compare it as one (it may exceed int64).
    const bool in_range =
        value.is_number_integer() &&
        (value.is_number_unsigned() ? value.get<uint64_t>() <= static_cast<uint64_t>(max) &&
                                          (min <= 0 || value.get<uint64_t>() >= static_cast<uint64_t>(min))
                                    : value.get<int64_t>() >= min && value.get<int64_t>() <= max);
    if (!in_range)
      fail(key,
           "is " + shown(value) + "; allowed: an integer from " + std::to_string(min) + " to " + std::to_string(max));
    return value.get<int64_t>();
  }

  uint64_t unsigned_integer(const nlohmann::json& value, const std::string& key) const {
    if (!value.is_number_unsigned())
      fail(key, "is " + shown(value) + "; allowed: an integer from 0 to " +
                    std::to_string(std::numeric_limits<uint64_t>::max()));
    return value.get<uint64_t>();
  }

  std::string text(const nlohmann::json& value, const std::string& key) const {
    if (!value.is_string()) fail(key, "is " + shown(value) + "; allowed: a string");
    return value.get<std::string>();
  }

  std::string file_name(const nlohmann::json& value, const std::string& key) const {
    auto name = text(value, key);
    if (!is_plain_file_name(name))
      fail(key,
           "is " + shown(value) + "; allowed: the name of a file in the checkpoint directory (no '/', '.' or '..')");
    return name;
  }

  std::vector<std::string> file_names(const nlohmann::json& value, const std::string& key) const {
    if (!value.is_array()) fail(key, "is " + shown(value) + "; allowed: a list of file names");
    std::vector<std::string> names;
    for (std::size_t i = 0; i < value.size(); ++i)
      names.push_back(file_name(value[i], key + "[" + std::to_string(i) + "]"));
    return names;
  }

  const nlohmann::json& array(const nlohmann::json& value, const std::string& key) const {
    if (!value.is_array()) fail(key, "is " + shown(value) + "; allowed: a list");
    return value;
  }

  // A value as the message shows it: its JSON, cut short.
  static std::string shown(const nlohmann::json& value) {
    constexpr std::size_t longest = 60;
    auto text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return text.size() > longest ? text.substr(0, longest) + "..." : text;
  }

 private:
  std::filesystem::path file_;
};

inline uint32_t parse_crc32c(const ManifestReader& reader, const nlohmann::json& value, const std::string& key) {
  const auto text = reader.text(value, key);
  if (text.size() != 8 || text.find_first_not_of("0123456789abcdef") != std::string::npos)
    reader.fail(key, "is " + ManifestReader::shown(value) + "; allowed: 8 lowercase hexadecimal digits");
  return static_cast<uint32_t>(std::stoul(text, nullptr, 16));
}

}  // namespace detail

ACC_DECL std::string crc32c_text(uint32_t crc) {
  char text[9];
  std::snprintf(text, sizeof text, "%08" PRIx32, crc);
  return text;
}

ACC_DECL bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find_first_of(std::string("/\0", 2)) == std::string::npos;
}

ACC_DECL std::string CheckpointMetadata::to_json() const {
  nlohmann::ordered_json j;
  j["format"] = format;
  j["library_version"] = library_version;
  j["torch_version"] = torch_version;
  j["optimizer_format"] = optimizer_format;
  j["world_size"] = world_size;
  if (tp_size != 1) j["tp_size"] = tp_size;
  j["strategy"] = strategy;
  j["layout"] = layout;
  j["precision"] = precision;
  j["sampler"] = sampler;
  j["step"] = step;
  j["models"] = models;
  j["state_dict_type"] = state_dict_type;
  j["optimizers"] = optimizers;
  j["schedulers"] = schedulers;
  j["scaler"] = scaler ? nlohmann::ordered_json(*scaler) : nlohmann::ordered_json(nullptr);
  j["custom_objects"] = custom_objects;
  j["random_states"] = random_states;
  j["gradients"] = gradients;
  j["data_loaders"] = nlohmann::ordered_json::array();
  for (const auto& d : data_loaders) {
    auto positions = nlohmann::ordered_json::array();
    for (const auto& [epoch, batches] : d.positions) positions.push_back({{"epoch", epoch}, {"batches", batches}});
    j["data_loaders"].push_back(
        {{"seed", d.seed}, {"batch_size", d.batch_size}, {"dataset_size", d.dataset_size}, {"positions", positions}});
  }
  j["flat_units"] = nlohmann::ordered_json::array();
  for (const auto& u : flat_units)
    j["flat_units"].push_back(
        {{"name", u.name}, {"numel", u.numel}, {"shard_numel", u.shard_numel}, {"shards", u.shards}});
  j["files"] = nlohmann::ordered_json::object();
  for (const auto& [name, file] : files) j["files"][name] = {{"size", file.size}, {"crc32c", crc32c_text(file.crc32c)}};
  return j.dump(2) + "\n";
}

ACC_DECL std::string CheckpointMetadata::strategy_mismatch(std::string_view strategy_name,
                                                           std::string_view strategy_layout) const {
  if (layout.empty() ? strategy == strategy_name : layout == strategy_layout) return {};
  if (layout.empty())
    return "the checkpoint was saved with strategy " + strategy + ", and this Accelerator uses " +
           std::string(strategy_name);
  return "the checkpoint was saved with strategy " + strategy + ", whose files hold the " + layout +
         " layout, and this Accelerator uses " + std::string(strategy_name) + ", which reads the " +
         std::string(strategy_layout) + " layout";
}

ACC_DECL CheckpointMetadata CheckpointMetadata::read(const std::filesystem::path& dir) {
  const auto file = dir / file_name;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error("checkpoint directory '" + dir.string() + "' does not exist");
  std::ifstream in(file);
  if (!in)
    throw DamagedCheckpoint(
        "'" + file.string() +
        "' is missing: not a checkpoint, or one whose save did not finish (save_state writes this file last)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
  } catch (const nlohmann::json::exception& e) {
    throw DamagedCheckpoint("'" + file.string() + "' is not a valid checkpoint description: " + e.what());
  }
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const detail::ManifestReader r(file);
  CheckpointMetadata m;
  m.format = r.integer(r.at(j, "format", ""), "format", 0, kMax);
  if (m.format != current_format)
    throw Error("'" + file.string() + "' has format " + std::to_string(m.format) + "; this accelerate-cpp reads " +
                std::to_string(current_format) + " (format 1, of earlier versions, has no checksums: save it again)");
  m.library_version = r.text(r.at(j, "library_version", ""), "library_version");
  m.torch_version = r.text(r.at(j, "torch_version", ""), "torch_version");
  m.optimizer_format = r.integer(r.at(j, "optimizer_format", ""), "optimizer_format", 0, kMax);
  m.world_size = r.integer(r.at(j, "world_size", ""), "world_size", 1, 1 << 20);
  if (j.contains("tp_size")) m.tp_size = r.integer(j.at("tp_size"), "tp_size", 1, 1 << 20);
  m.strategy = r.text(r.at(j, "strategy", ""), "strategy");
  if (j.contains("layout")) m.layout = r.text(j.at("layout"), "layout");
  m.precision = r.text(r.at(j, "precision", ""), "precision");
  m.sampler = r.text(r.at(j, "sampler", ""), "sampler");
  m.step = r.integer(r.at(j, "step", ""), "step", 0, kMax);
  m.models = r.file_names(r.at(j, "models", ""), "models");
  if (j.contains("state_dict_type")) {
    m.state_dict_type = r.text(j.at("state_dict_type"), "state_dict_type");
    if (m.state_dict_type != "FULL_STATE_DICT" && m.state_dict_type != "SHARDED_STATE_DICT")
      r.fail("state_dict_type", "is " + detail::ManifestReader::shown(j.at("state_dict_type")) +
                                    "; allowed: \"FULL_STATE_DICT\", \"SHARDED_STATE_DICT\"");
  }
  m.optimizers = r.file_names(r.at(j, "optimizers", ""), "optimizers");
  m.schedulers = r.file_names(r.at(j, "schedulers", ""), "schedulers");
  if (const auto& scaler = r.at(j, "scaler", ""); !scaler.is_null()) m.scaler = r.file_name(scaler, "scaler");
  m.custom_objects = r.file_names(r.at(j, "custom_objects", ""), "custom_objects");
  m.random_states = r.file_names(r.at(j, "random_states", ""), "random_states");
  m.gradients = r.file_names(r.at(j, "gradients", ""), "gradients");
  const auto per_rank = static_cast<std::size_t>(m.world_size);
  if (m.random_states.size() != per_rank)
    r.fail("random_states", "lists " + std::to_string(m.random_states.size()) + " files; allowed: one per process (" +
                                std::to_string(m.world_size) + ", world_size)");
  if (!m.gradients.empty() && m.gradients.size() != per_rank)
    r.fail("gradients", "lists " + std::to_string(m.gradients.size()) + " files; allowed: none, or one per process (" +
                            std::to_string(m.world_size) + ", world_size)");
  const auto& loaders = r.array(r.at(j, "data_loaders", ""), "data_loaders");
  for (std::size_t i = 0; i < loaders.size(); ++i) {
    const auto key = "data_loaders[" + std::to_string(i) + "]";
    DataLoader loader;
    loader.seed = r.unsigned_integer(r.at(loaders[i], "seed", key), key + ".seed");
    loader.batch_size = r.integer(r.at(loaders[i], "batch_size", key), key + ".batch_size", 1, kMax);
    loader.dataset_size = r.integer(r.at(loaders[i], "dataset_size", key), key + ".dataset_size", -1, kMax);
    // A rank has at most every batch of an epoch; a stream's length is unknown.
    const int64_t most_batches = loader.dataset_size < 0 ? kMax
                                                         : loader.dataset_size / loader.batch_size +
                                                               (loader.dataset_size % loader.batch_size != 0);
    const auto& positions = r.array(r.at(loaders[i], "positions", key), key + ".positions");
    if (positions.size() != per_rank)
      r.fail(key + ".positions", "lists " + std::to_string(positions.size()) + "; allowed: one per process (" +
                                     std::to_string(m.world_size) + ", world_size)");
    for (std::size_t p = 0; p < positions.size(); ++p) {
      const auto at = key + ".positions[" + std::to_string(p) + "]";
      const auto epoch = r.integer(r.at(positions[p], "epoch", at), at + ".epoch", 0, kMax);
      const auto batches = r.integer(r.at(positions[p], "batches", at), at + ".batches", 0, most_batches);
      loader.positions.emplace_back(epoch, batches);
    }
    m.data_loaders.push_back(std::move(loader));
  }
  if (j.contains("flat_units")) {  // recorded since FSDP checkpoints resume with another number of processes
    const auto& units = r.array(j.at("flat_units"), "flat_units");
    for (std::size_t i = 0; i < units.size(); ++i) {
      const auto key = "flat_units[" + std::to_string(i) + "]";
      FlatUnit unit;
      unit.name = r.text(r.at(units[i], "name", key), key + ".name");
      unit.numel = r.integer(r.at(units[i], "numel", key), key + ".numel", 1, kMax);
      unit.shards = r.integer(r.at(units[i], "shards", key), key + ".shards", 1, m.world_size);
      if (m.world_size % unit.shards != 0)
        r.fail(key + ".shards", "is " + std::to_string(unit.shards) + "; allowed: a divisor of world_size (" +
                                    std::to_string(m.world_size) + ")");
      // Each slice is numel / shards rounded up: the layout fsdp/flat_unit.hpp makes.
      const int64_t slice = unit.numel / unit.shards + (unit.numel % unit.shards != 0);
      unit.shard_numel = r.integer(r.at(units[i], "shard_numel", key), key + ".shard_numel", slice, slice);
      m.flat_units.push_back(std::move(unit));
    }
  }
  const auto& files = r.at(j, "files", "");
  if (!files.is_object()) r.fail("files", "is " + detail::ManifestReader::shown(files) + "; allowed: an object");
  for (const auto& [name, record] : files.items()) {
    const auto key = "files[" + detail::ManifestReader::shown(name) + "]";
    if (!is_plain_file_name(name))
      r.fail("files", "names " + detail::ManifestReader::shown(name) +
                          "; allowed: names of files in the checkpoint directory (no '/', '.' or '..')");
    m.files[name] = {r.unsigned_integer(r.at(record, "size", key), key + ".size"),
                     detail::parse_crc32c(r, r.at(record, "crc32c", key), key + ".crc32c")};
  }
  return m;
}

ACC_DECL std::string encode_file_records(const std::map<std::string, CheckpointFile>& files) {
  std::ostringstream out;
  for (const auto& [name, file] : files) out << name << '\t' << file.size << '\t' << file.crc32c << '\n';
  return out.str();
}

ACC_DECL std::map<std::string, CheckpointFile> decode_file_records(const std::string& text) {
  std::map<std::string, CheckpointFile> files;
  std::istringstream in(text);
  std::string name;
  CheckpointFile file;
  while (std::getline(in, name, '\t') && in >> file.size >> file.crc32c && in.ignore()) files[name] = file;
  return files;
}

}  // namespace acc

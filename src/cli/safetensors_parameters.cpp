#include "safetensors_parameters.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

namespace acc::cli {
namespace {

namespace fs = std::filesystem;
using Result = std::variant<SafetensorsParameters, std::string>;

// The format caps the header at 100 MB; a larger length means the file is not safetensors.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

// A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON mapping
// each tensor's name to its dtype, shape and data offsets (and "__metadata__" to strings).
std::variant<std::uint64_t, std::string> count_in_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return file.string() + " cannot be opened; give a .safetensors file, an index or a folder holding them";
  unsigned char length_bytes[8];
  if (!in.read(reinterpret_cast<char*>(length_bytes), sizeof length_bytes))
    return file.string() + " is not a safetensors file: it is shorter than the 8-byte header length";
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = header_length << 8 | length_bytes[i];
  if (header_length == 0 || header_length > kMaxHeaderBytes)
    return file.string() + " is not a safetensors file: its header length " + std::to_string(header_length) +
           " is not from 1 to 100000000 bytes";
  std::string header(header_length, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_length)))
    return file.string() + " is not a safetensors file: it ends inside its " + std::to_string(header_length) +
           "-byte header";
  const auto json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return file.string() + " is not a safetensors file: its header is not a JSON object";
  std::uint64_t count = 0;
  for (const auto& [name, tensor] : json.items()) {
    if (name == "__metadata__") continue;
    if (!tensor.is_object() || !tensor.contains("shape") || !tensor["shape"].is_array())
      return file.string() + ": tensor '" + name + "' has no shape in the header";
    std::uint64_t elements = 1;
    for (const auto& size : tensor["shape"]) {
      if (!size.is_number_unsigned()) return file.string() + ": tensor '" + name + "' has a shape that is not sizes";
      const auto extent = size.get<std::uint64_t>();
      if (extent != 0 && elements > std::numeric_limits<std::uint64_t>::max() / extent)
        return file.string() + ": tensor '" + name + "' has more elements than 2^64";
      elements *= extent;
    }
    count += elements;
  }
  return count;
}

// A sharded model: the index's weight_map says which file beside it holds each tensor.
Result count_in_index(const fs::path& index) {
  std::ifstream in(index);
  if (!in) return index.string() + " cannot be opened";
  const auto json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object() ||
      json["weight_map"].empty())
    return index.string() + " is not a safetensors index: it has no \"weight_map\" object naming the shard files";
  std::set<std::string> shards;
  for (const auto& [name, shard] : json["weight_map"].items()) {
    if (!shard.is_string()) return index.string() + ": weight_map[\"" + name + "\"] is not a file name";
    shards.insert(shard.get<std::string>());
  }
  SafetensorsParameters total;
  for (const auto& shard : shards) {
    const auto count = count_in_file(index.parent_path() / shard);
    if (const auto* error = std::get_if<std::string>(&count))
      return *error + " (a shard named by " + index.string() + ")";
    total.count += std::get<std::uint64_t>(count);
    ++total.files;
  }
  return total;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Result count_safetensors_parameters(const std::string& path) {
  const fs::path model(path);
  std::error_code error;
  if (fs::is_directory(model, error)) {
    if (fs::exists(model / "model.safetensors"))
      return count_safetensors_parameters((model / "model.safetensors").string());
    if (fs::exists(model / "model.safetensors.index.json"))
      return count_in_index(model / "model.safetensors.index.json");
    return path +
           " holds neither model.safetensors nor model.safetensors.index.json; give the model's folder, "
           "file or index";
  }
  if (!fs::exists(model, error))
    return path + " does not exist; give a .safetensors file, an index or a folder holding them";
  if (ends_with(path, ".json")) return count_in_index(model);
  const auto count = count_in_file(model);
  if (const auto* message = std::get_if<std::string>(&count)) return *message;
  return SafetensorsParameters{std::get<std::uint64_t>(count), 1};
}

}  // namespace acc::cli

#include "merge_weights_command.hpp"

#include "config_command.hpp"
#include "launch.hpp"

#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/crc32c.hpp>
#include <acc/detail/files.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace acc::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage =
    R"(usage: acc merge-weights CHECKPOINT_DIR OUTPUT_DIR [--max_shard_size SIZE] [--model I]

Merges the model that save_state wrote with fsdp_state_dict_type SHARDED_STATE_DICT (each
process's shards in CHECKPOINT_DIR/model_rank<r>.safetensors), or that acc::tp::save_sharded_state
wrote (each tensor-parallel rank's slices in CHECKPOINT_DIR/model_tp<r>.safetensors, joined as
acc::tp::full_state joins them), into full weights in OUTPUT_DIR, as
save_model writes them: model.safetensors or, with --max_shard_size when the weights are larger,
model-00001-of-0000N.safetensors ... and model.safetensors.index.json. load_model, Python's
safetensors and transformers read them. It needs no GPU and no libtorch: each tensor is copied
from the processes' files a piece at a time, after every file's size and CRC-32C are checked
against acc_state.json.

  CHECKPOINT_DIR         a directory save_state wrote (it holds acc_state.json), or
                         acc::tp::save_sharded_state (it holds model_tp0.safetensors)
  OUTPUT_DIR             where the weights go (created; an earlier save's weights there are
                         replaced)
  --max_shard_size SIZE  files of at most SIZE: bytes, or an integer with KB, MB, GB (powers of
                         1000) or KiB, MiB, GiB (powers of 1024), e.g. 5GB (default: one file)
  --model I              which prepared model to merge, counted from 0 (default 0)
  -h, --help             show this help
)";
constexpr const char* kShortUsage =
    "usage: acc merge-weights CHECKPOINT_DIR OUTPUT_DIR [--max_shard_size SIZE] "
    "[--model I] (acc merge-weights --help)";

struct Failure {
  std::string message;
};
[[noreturn]] void fail(const std::string& message) { throw Failure{message}; }

uint64_t element_size(const std::string& dtype, const std::string& where) {
  static const std::map<std::string, uint64_t> sizes = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                                                        {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}};
  const auto found = sizes.find(dtype);
  if (found == sizes.end()) fail(where + " has dtype '" + dtype + "', which merge-weights does not know");
  return found->second;
}

// A safetensors file's header: tensors with absolute byte offsets in the file.
struct Header {
  struct Tensor {
    std::string dtype;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
  };
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors;
};

Header read_header(const fs::path& file) {
  const auto name = "'" + file.string() + "'";
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(name + " cannot be opened");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  unsigned char length_bytes[8];
  if (file_size < 8 || !in.read(reinterpret_cast<char*>(length_bytes), 8))
    fail(name + " is not a safetensors file: it is shorter than the 8-byte header length");
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | length_bytes[i];
  if (length > 100'000'000 || length > file_size - 8)
    fail(name + " is not a safetensors file (or is truncated): its header length is " + std::to_string(length));
  std::string text(length, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(length))) fail(name + " ends inside its header");
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) fail(name + " is not a safetensors file: its header is not a JSON object");
  Header header;
  const uint64_t data_start = 8 + length;
  for (const auto& [key, value] : json.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(name + ": __metadata__ is not an object");
      for (const auto& [k, v] : value.items())
        if (v.is_string()) header.metadata[k] = v.get<std::string>();
      continue;
    }
    const auto where = name + ": tensor '" + key + "'";
    if (!value.is_object() || !value.contains("dtype") || !value["dtype"].is_string() || !value.contains("shape") ||
        !value["shape"].is_array() || !value.contains("data_offsets") || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2 || !value["data_offsets"][0].is_number_unsigned() ||
        !value["data_offsets"][1].is_number_unsigned())
      fail(where + " is not described by dtype, shape and data_offsets");
    Header::Tensor tensor;
    tensor.dtype = value["dtype"].get<std::string>();
    uint64_t bytes = element_size(tensor.dtype, where);
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned() || __builtin_mul_overflow(bytes, d.get<uint64_t>(), &bytes))
        fail(where + " has a bad shape");
      tensor.shape.push_back(d.get<int64_t>());
    }
    const auto begin = value["data_offsets"][0].get<uint64_t>(), end = value["data_offsets"][1].get<uint64_t>();
    if (begin > end || end - begin != bytes || end > file_size - data_start)
      fail(where + " has data_offsets that do not fit its shape or the file (truncated?)");
    tensor.begin = data_start + begin;
    tensor.end = data_start + end;
    header.tensors.emplace(key, std::move(tensor));
  }
  return header;
}

// Bytes of one rank's file.
struct Piece {
  std::size_t rank;
  uint64_t offset, size;
};
struct OutputTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  std::vector<Piece> pieces;
};

// What the checkpoint's sharded files hold, checked, and where each full tensor's bytes lie.
std::vector<OutputTensor> plan_tensors(const fs::path& checkpoint, std::size_t model, int64_t world_size,
                                       std::vector<fs::path>& files, const nlohmann::json& manifest) {
  std::vector<Header> headers;
  std::vector<ShardedStateLayout> layouts;
  for (int64_t r = 0; r < world_size; ++r) {
    const auto name = sharded_state_file(model, r);
    const auto file = checkpoint / name;
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      fail("'" + file.string() + "' is missing: the checkpoint was saved by " + std::to_string(world_size) +
           " processes, each writing its shards (copy every process's files into one directory)");
    if (manifest.contains("files") && manifest["files"].contains(name) &&
        manifest["files"][name].value("size", uint64_t{0}) != fs::file_size(file, ec))
      fail("'" + file.string() + "' is " + std::to_string(fs::file_size(file, ec)) + " bytes but was saved with " +
           std::to_string(manifest["files"][name].value("size", uint64_t{0})) + " (truncated or overwritten)");
    // The CRC-32C acc_state.json recorded: a file altered since the save is named, not merged.
    if (manifest.contains("files") && manifest["files"].contains(name) && manifest["files"][name].contains("crc32c") &&
        manifest["files"][name]["crc32c"].is_string()) {
      const auto recorded = manifest["files"][name]["crc32c"].get<std::string>();
      std::ifstream in(file, std::ios::binary);
      std::vector<char> buffer(std::size_t{1} << 22);
      uint32_t crc = 0;
      while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        crc = acc::detail::crc32c_extend(crc, buffer.data(), static_cast<std::size_t>(in.gcount()));
      }
      char text[9];
      std::snprintf(text, sizeof text, "%08x", static_cast<unsigned>(crc));
      if (recorded != text)
        fail("'" + file.string() + "' has CRC-32C " + text + " but was saved with " + recorded +
             " (altered or damaged since the save)");
    }
    headers.push_back(read_header(file));
    const auto found = headers.back().metadata.find(ShardedStateLayout::metadata_key);
    if (found == headers.back().metadata.end())
      fail("'" + file.string() + "' has no \"" + ShardedStateLayout::metadata_key +
           "\" in its __metadata__: it is not a file of a SHARDED_STATE_DICT checkpoint");
    try {
      layouts.push_back(ShardedStateLayout::from_json(found->second, "'" + file.string() + "'"));
    } catch (const acc::Error& e) {
      fail(e.what());
    }
    const auto& layout = layouts.back();
    if (layout.rank != r || layout.world_size != world_size)
      fail("'" + file.string() + "' says it is rank " + std::to_string(layout.rank) + " of " +
           std::to_string(layout.world_size) + ", not rank " + std::to_string(r) + " of " + std::to_string(world_size) +
           " (files of another checkpoint?)");
    files.push_back(file);
  }
  const auto& layout = layouts.front();
  for (std::size_t r = 1; r < layouts.size(); ++r)
    if (layouts[r].units.size() != layout.units.size() || layouts[r].order != layout.order)
      fail("'" + files[r].string() + "' describes other units than '" + files[0].string() +
           "' (files of different checkpoints?)");

  std::map<std::string, OutputTensor> by_name;
  for (const auto& name : layout.whole) {
    const auto found = headers[0].tensors.find(name);
    if (found == headers[0].tensors.end())
      fail("'" + files[0].string() + "' lacks '" + name + "', which its layout says it holds whole");
    const auto& t = found->second;
    by_name[name] = {name, t.dtype, t.shape, t.end - t.begin, {{0, t.begin, t.end - t.begin}}};
  }
  for (const auto& unit : layout.units) {
    const auto element = element_size(unit.dtype, "unit '" + unit.name + "'");
    std::vector<uint64_t> starts;  // where each rank's shard of the unit starts in its file
    for (std::size_t r = 0; r < headers.size(); ++r) {
      const auto found = headers[r].tensors.find(unit.key);
      if (found == headers[r].tensors.end()) fail("'" + files[r].string() + "' lacks the shard '" + unit.key + "'");
      const auto& t = found->second;
      if (t.dtype != unit.dtype || t.end - t.begin != static_cast<uint64_t>(unit.shard_numel) * element)
        fail("'" + files[r].string() + "': shard '" + unit.key + "' is not " + std::to_string(unit.shard_numel) +
             " elements of " + unit.dtype + " as its layout says");
      starts.push_back(t.begin);
    }
    for (const auto& m : unit.members) {
      OutputTensor out{m.name, unit.dtype, m.shape, static_cast<uint64_t>(m.numel) * element, {}};
      if (unit.world_size == 1) {
        out.pieces.push_back({0, starts[0] + static_cast<uint64_t>(m.offset) * element, out.bytes});
      } else {
        for (int64_t at = m.offset; at < m.offset + m.numel;) {
          const auto rank = static_cast<std::size_t>(at / unit.shard_numel);
          const int64_t within = at - static_cast<int64_t>(rank) * unit.shard_numel;
          const int64_t take = std::min(m.offset + m.numel - at, unit.shard_numel - within);
          out.pieces.push_back(
              {rank, starts[rank] + static_cast<uint64_t>(within) * element, static_cast<uint64_t>(take) * element});
          at += take;
        }
      }
      by_name[m.name] = std::move(out);
    }
  }
  std::vector<OutputTensor> tensors;
  for (const auto& name : layout.order) {
    const auto found = by_name.find(name);
    if (found == by_name.end())
      fail("'" + files[0].string() + "': its layout lists '" + name +
           "' but neither a unit nor the whole entries hold it");
    tensors.push_back(std::move(found->second));
  }
  return tensors;
}

// The tensor-parallel files of `dir` (model_tp0.safetensors ...): each split tensor, [dim, parts] in
// the files' metadata, joined from the ranks' slices as acc::tp::full_state joins them (dimension
// dim seen as `parts` blocks, each the ranks' slices in rank order), the others taken from rank 0.
std::vector<OutputTensor> plan_tp_tensors(const fs::path& dir, std::vector<fs::path>& files) {
  const auto shard_of = [](const Header& header, const fs::path& file) {
    const auto found = header.metadata.find("acc_tp_shard");
    const auto shard = found == header.metadata.end()
                           ? nlohmann::json()
                           : nlohmann::json::parse(found->second, nullptr, /*allow_exceptions=*/false);
    if (!shard.is_object() || !shard.contains("rank") || !shard["rank"].is_number_unsigned() ||
        !shard.contains("size") || !shard["size"].is_number_unsigned() || shard["size"].get<uint64_t>() == 0 ||
        !shard.contains("splits") || !shard["splits"].is_object())
      fail("'" + file.string() +
           "' has no valid \"acc_tp_shard\" in its __metadata__: it is not a file acc::tp::save_sharded_state wrote");
    return shard;
  };
  std::vector<Header> headers;
  uint64_t ranks = 1;
  nlohmann::json splits;
  const auto first_file = (dir / "model_tp0.safetensors").string();
  for (uint64_t r = 0; r < ranks; ++r) {
    const auto file = dir / ("model_tp" + std::to_string(r) + ".safetensors");
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      fail("'" + file.string() + "' is missing: the model was saved by a tp group of " + std::to_string(ranks) +
           " ranks, each writing its slices (copy every rank's files into one directory)");
    headers.push_back(read_header(file));
    const auto shard = shard_of(headers.back(), file);
    if (r == 0) {
      ranks = shard["size"].get<uint64_t>();
      splits = shard["splits"];
    }
    if (shard["rank"].get<uint64_t>() != r || shard["size"].get<uint64_t>() != ranks)
      fail("'" + file.string() + "' says it is rank " + shard["rank"].dump() + " of " + shard["size"].dump() +
           ", not rank " + std::to_string(r) + " of " + std::to_string(ranks) + " as '" + first_file +
           "' implies (files of another checkpoint?)");
    if (shard["splits"] != splits)
      fail("'" + file.string() + "' splits other tensors than '" + first_file + "' (files of another checkpoint?)");
    if (headers.back().tensors.size() != headers.front().tensors.size())
      fail("'" + file.string() + "' holds " + std::to_string(headers.back().tensors.size()) + " tensors and '" +
           first_file + "' " + std::to_string(headers.front().tensors.size()) + " (files of different models?)");
    files.push_back(file);
  }
  // The order they were saved in (the model's): rank 0's data offsets.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, t] : headers.front().tensors) order.emplace_back(t.begin, name);
  std::sort(order.begin(), order.end());

  std::vector<OutputTensor> tensors;
  for (const auto& entry : order) {
    const auto& name = entry.second;
    const auto& first = headers.front().tensors.at(name);
    OutputTensor out{name, first.dtype, first.shape, first.end - first.begin, {}};
    if (!splits.contains(name)) {
      out.pieces.push_back({0, first.begin, out.bytes});
      tensors.push_back(std::move(out));
      continue;
    }
    const auto& cut = splits[name];
    if (!cut.is_array() || cut.size() != 2 || !cut[0].is_number_unsigned() || !cut[1].is_number_unsigned() ||
        cut[0].get<uint64_t>() >= first.shape.size() || cut[1].get<uint64_t>() == 0 ||
        first.shape[cut[0].get<std::size_t>()] % cut[1].get<int64_t>() != 0)
      fail("'" + first_file + "': the split of '" + name + "', " + cut.dump() + ", is not [dim, parts] of its shape");
    const auto dim = cut[0].get<std::size_t>();
    const auto parts = cut[1].get<uint64_t>();
    const uint64_t element = element_size(first.dtype, "'" + name + "'");
    uint64_t outer = 1, inner = element;
    for (std::size_t d = 0; d < dim; ++d) outer *= static_cast<uint64_t>(first.shape[d]);
    for (std::size_t d = dim + 1; d < first.shape.size(); ++d) inner *= static_cast<uint64_t>(first.shape[d]);
    const uint64_t chunk = static_cast<uint64_t>(first.shape[dim]) / parts * inner;  // one block's slice
    for (std::size_t r = 1; r < headers.size(); ++r) {
      const auto found = headers[r].tensors.find(name);
      if (found == headers[r].tensors.end() || found->second.shape != first.shape || found->second.dtype != first.dtype)
        fail("'" + files[r].string() + "' has no slice of '" + name +
             "' shaped as rank 0's (files of different models?)");
    }
    out.shape[dim] *= static_cast<int64_t>(ranks);
    out.bytes *= ranks;
    for (uint64_t o = 0; o < outer; ++o)
      for (uint64_t p = 0; p < parts; ++p)
        for (std::size_t r = 0; r < headers.size(); ++r)
          out.pieces.push_back({r, headers[r].tensors.at(name).begin + (o * parts + p) * chunk, chunk});
    tensors.push_back(std::move(out));
  }
  return tensors;
}

// Writes `tensors` as a safetensors file laid out as acc's save_file lays it out (larger elements
// first, then by name; the header padded to 8 bytes), copying each tensor's pieces in chunks.
void write_file(const fs::path& path, std::vector<const OutputTensor*> tensors, std::vector<std::ifstream>& ranks) {
  std::stable_sort(tensors.begin(), tensors.end(), [](const OutputTensor* a, const OutputTensor* b) {
    const auto ea = element_size(a->dtype, a->name), eb = element_size(b->dtype, b->name);
    return std::make_pair(-static_cast<int64_t>(ea), a->name) < std::make_pair(-static_cast<int64_t>(eb), b->name);
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = std::map<std::string, std::string>{{"format", "pt"}};
  uint64_t offset = 0;
  for (const auto* t : tensors) {
    header[t->name] = {{"dtype", t->dtype}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->bytes}}};
    offset += t->bytes;
  }
  auto text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
  const uint64_t size = 8 + text.size() + offset;
  acc::detail::require_free_space(acc::detail::parent_directory(path), size, "'" + path.string() + "'");
  acc::detail::SyncedFile out(path, size);
  out.write(length, 8);
  out.write(text.data(), text.size());
  std::vector<char> buffer(std::size_t{1} << 22);
  for (const auto* t : tensors)
    for (const auto& piece : t->pieces) {
      auto& in = ranks[piece.rank];
      in.clear();
      in.seekg(static_cast<std::streamoff>(piece.offset));
      for (uint64_t left = piece.size; left > 0;) {
        const auto chunk = static_cast<std::size_t>(std::min<uint64_t>(left, buffer.size()));
        if (!in.read(buffer.data(), static_cast<std::streamsize>(chunk)))
          fail("cannot read tensor '" + t->name + "' from rank " + std::to_string(piece.rank) +
               "'s file (it changed while merging?)");
        out.write(buffer.data(), chunk);
        left -= chunk;
      }
    }
  out.close();
}

// Writes the merged tensors, whose pieces come from `files` (of `writers`: "2 processes"), as
// save_model writes weights.
int write_merged(const fs::path& output, const std::vector<OutputTensor>& tensors, const std::vector<fs::path>& files,
                 std::optional<int64_t> max_shard_size, const std::string& writers) {
  std::vector<std::ifstream> ranks;
  for (const auto& file : files) {
    ranks.emplace_back(file, std::ios::binary);
    if (!ranks.back()) fail("'" + file.string() + "' cannot be opened");
  }

  std::vector<uint64_t> bytes;
  uint64_t total = 0;
  for (const auto& t : tensors) {
    bytes.push_back(t.bytes);
    total += t.bytes;
  }
  const auto plan = weights::plan_shards(bytes, max_shard_size ? static_cast<uint64_t>(*max_shard_size) : UINT64_MAX);
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;
  for (std::size_t s = 0; s < plan.size(); ++s) {
    names.push_back(plan.size() == 1 ? weights::kSingleFile : weights::shard_file_name(s, plan.size()));
    for (const auto i : plan[s]) weight_map[tensors[i].name] = names.back();
  }
  weights::write_model_files(
      output, names,
      [&](std::size_t s, const fs::path& staged) {
        std::vector<const OutputTensor*> chosen;
        for (const auto i : plan[s]) chosen.push_back(&tensors[i]);
        write_file(staged, chosen, ranks);
      },
      plan.size() > 1 ? weights::index_json(total, weight_map) : std::string());
  std::cout << "acc merge-weights: " << tensors.size() << " tensors (" << total << " bytes) of " << files.size() << " "
            << writers << " written to "
            << (output / (plan.size() == 1 ? weights::kSingleFile : weights::kIndexFile)).string()
            << (plan.size() > 1 ? " and " + std::to_string(plan.size()) + " files" : std::string()) << "\n";
  return 0;
}

int merge(const fs::path& checkpoint, const fs::path& output, std::optional<int64_t> max_shard_size,
          std::size_t model) {
  std::error_code ec;
  if (!fs::is_directory(checkpoint, ec))
    fail("checkpoint directory '" + checkpoint.string() + "' does not exist; give a directory save_state wrote");
  const auto manifest_file = checkpoint / "acc_state.json";
  std::vector<fs::path> files;
  if (!fs::exists(manifest_file, ec) && fs::exists(checkpoint / "model_tp0.safetensors", ec)) {
    if (model != 0)
      fail("--model " + std::to_string(model) + ": '" + checkpoint.string() +
           "' holds one tensor-parallel model (give 0)");
    const auto tensors = plan_tp_tensors(checkpoint, files);
    return write_merged(output, tensors, files, max_shard_size,
                        files.size() == 1 ? "tensor-parallel rank" : "tensor-parallel ranks");
  }
  std::ifstream manifest_in(manifest_file);
  if (!manifest_in)
    fail("'" + checkpoint.string() +
         "' has no acc_state.json: it is not a save_state checkpoint (nor acc::tp::save_sharded_state's: it has no "
         "model_tp0.safetensors), or its save did not finish");
  const auto manifest = nlohmann::json::parse(manifest_in, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest.contains("world_size") || !manifest["world_size"].is_number_unsigned() ||
      manifest["world_size"].get<int64_t>() < 1 || !manifest.contains("models") || !manifest["models"].is_array())
    fail("'" + manifest_file.string() + "' is not a valid checkpoint description (no world_size or models)");
  const auto type = manifest.value("state_dict_type", std::string("FULL_STATE_DICT"));
  if (type != "SHARDED_STATE_DICT")
    fail("'" + checkpoint.string() + "' holds full weights (" + type +
         "), not shards: nothing to merge; its model.safetensors is what merge-weights would make (load it with "
         "load_model, or copy it); merge-weights reads checkpoints saved with fsdp_state_dict_type "
         "SHARDED_STATE_DICT");
  const auto models = manifest["models"].size();
  if (model >= models)
    fail("--model " + std::to_string(model) + ": the checkpoint holds " + std::to_string(models) +
         (models == 1 ? " model (give 0)" : " models (give 0 to " + std::to_string(models - 1) + ")"));
  const auto tensors = plan_tensors(checkpoint, model, manifest["world_size"].get<int64_t>(), files, manifest);
  return write_merged(output, tensors, files, max_shard_size, files.size() == 1 ? "process" : "processes");
}

}  // namespace

int merge_weights_command(const std::vector<std::string>& arguments) {
  const auto usage_error = [](const std::string& message) {
    std::cerr << "acc merge-weights: " << message << "\n";
    return kExitUsage;
  };
  const auto parsed = parse_command_line(arguments, {"--max_shard_size", "--model"});
  if (const auto* error = std::get_if<UsageError>(&parsed)) return usage_error(error->message + "; " + kShortUsage);
  const CommandLine& command_line = std::get<CommandLine>(parsed);
  if (command_line.help) {
    std::cout << kUsage;
    return 0;
  }
  if (command_line.words.size() != 2)
    return usage_error(std::string(command_line.words.size() < 2
                                       ? "give a checkpoint directory and an output directory"
                                       : "unexpected argument '" + command_line.words[2] + "'") +
                       "; " + kShortUsage);
  std::optional<int64_t> max_shard_size;
  if (const auto found = command_line.flag_values.find("--max_shard_size"); found != command_line.flag_values.end()) {
    try {
      max_shard_size = parse_shard_size(found->second);
    } catch (const acc::Error& e) {
      return usage_error(std::string("--max_shard_size: ") + e.what());
    }
  }
  std::size_t model = 0;
  if (const auto found = command_line.flag_values.find("--model"); found != command_line.flag_values.end()) {
    const auto& text = found->second;
    if (text.empty() || text.size() > 6 || text.find_first_not_of("0123456789") != std::string::npos)
      return usage_error("--model '" + text + "' is not a model's number (0 for the first prepared model)");
    model = std::stoul(text);
  }
  try {
    return merge(command_line.words[0], command_line.words[1], max_shard_size, model);
  } catch (const Failure& failure) {
    std::cerr << "acc merge-weights: " << failure.message << "\n";
  } catch (const acc::Error& error) {
    std::cerr << "acc merge-weights: " << error.what() << "\n";
  } catch (const std::exception& error) {
    std::cerr << "acc merge-weights: " << error.what() << "\n";
  }
  return 1;
}

}  // namespace acc::cli

// Model weights split over several safetensors files, as Hugging Face writes them, and the layout
// of an FSDP SHARDED_STATE_DICT checkpoint. No libtorch here: the `acc` tool (acc merge-weights)
// uses it too.
//
// Sharded weights (save_model with a max_shard_size the state exceeds):
//   model-00001-of-00003.safetensors ...     the tensors in the state's order, each file filled up
//                                            to max_shard_size; a tensor larger than that alone
//   model.safetensors.index.json             {"metadata": {"total_size": <bytes of all tensors>},
//                                             "weight_map": {"<tensor>": "<file>"}}
// and model.safetensors alone when the state fits in one file.
//
// A SHARDED_STATE_DICT checkpoint holds, per model, one file per rank (model_rank<r>.safetensors,
// model_1_rank<r>.safetensors, ...): the rank's flat shard of each FSDP unit ("<unit>.flat_shard"),
// and on rank 0 the entries kept whole (buffers, frozen parameters). Its __metadata__ entry
// "acc_sharded_state" is the JSON of ShardedStateLayout: enough to rebuild every full tensor.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

// The size limit of one weights file (Python's max_shard_size): bytes, or a string with
// transformers' units: "10GB" (10^9 bytes), "500MB", "100KB", "10GiB" (2^30), "512MiB", "64KiB";
// a lowercase final b counts bits, as in transformers ("10Gb" = 1.25 * 10^9 bytes). A bad string or
// a size below 1 byte is an acc::Error naming the value and the accepted forms.
class ShardSize {
 public:
  ShardSize(int bytes) : ShardSize(static_cast<int64_t>(bytes)) {}           // NOLINT: implicit, as Python's
  ShardSize(long bytes);                                                     // NOLINT
  ShardSize(long long bytes) : ShardSize(static_cast<long>(bytes)) {}        // NOLINT
  ShardSize(const char* text) : ShardSize(std::string_view(text)) {}         // NOLINT
  ShardSize(const std::string& text) : ShardSize(std::string_view(text)) {}  // NOLINT
  ShardSize(std::string_view text);                                          // NOLINT
  int64_t bytes() const { return bytes_; }

 private:
  int64_t bytes_;
};

// "10GB" -> 10000000000 (see ShardSize); throws acc::Error for anything else.
ACC_DECL int64_t parse_shard_size(std::string_view text);

namespace weights {

inline constexpr const char* kSingleFile = "model.safetensors";
inline constexpr const char* kIndexFile = "model.safetensors.index.json";
inline constexpr const char* kDefaultMaxShardSize = "10GB";

// "model-00002-of-00005.safetensors" (index counts from 0).
ACC_DECL std::string shard_file_name(std::size_t index, std::size_t count);

// Which tensors go into which file, given each tensor's bytes in the state's order: a file takes
// the next tensors while they fit in max_bytes; a tensor larger than max_bytes gets a file of its own.
ACC_DECL std::vector<std::vector<std::size_t>> plan_shards(const std::vector<uint64_t>& bytes, uint64_t max_bytes);

// model.safetensors.index.json's text.
ACC_DECL std::string index_json(uint64_t total_size, const std::map<std::string, std::string>& weight_map);

struct Index {
  uint64_t total_size = 0;
  std::map<std::string, std::string> weight_map;  // tensor -> file
  std::vector<std::string> files;                 // each file once, in the order of their names
};
// Reads an index; an error names the file and what is wrong (a file name with '/' among them).
ACC_DECL Index read_index(const std::filesystem::path& file);

// The files holding a model saved at `path`: the file itself, or in a directory model.safetensors
// (preferred, as a save that replaces sharded weights by one file removes the index after), or the
// files model.safetensors.index.json names. An error says what the directory lacks.
ACC_DECL std::vector<std::filesystem::path> model_files(const std::filesystem::path& path);

// Puts a model's files into `dir` (created), so that it never holds a mix of two saves' files:
// write(i, path) writes file i of `names` at `path` (a staging file beside it); with several files,
// `index` is the index's text, renamed into place after every shard. Then the files of an earlier
// save that are not among these (model.safetensors, model-*-of-*.safetensors, the index) go.
ACC_DECL void write_model_files(const std::filesystem::path& dir, const std::vector<std::string>& names,
                                const std::function<void(std::size_t, const std::filesystem::path&)>& write,
                                const std::string& index);

}  // namespace weights

// The layout of one model's SHARDED_STATE_DICT files (see the top of this file).
struct ShardedStateLayout {
  static constexpr const char* metadata_key = "acc_sharded_state";
  static constexpr int64_t current_format = 1;

  struct Member {  // one parameter of a unit, in the unit's flat buffer
    std::string name;
    std::vector<int64_t> shape;
    int64_t offset = 0;
    int64_t numel = 0;
  };
  struct Unit {
    std::string name;          // the FSDP unit ("(model)" for the root's own parameters)
    std::string key;           // its tensor in every rank's file: "<name>.flat_shard"
    std::string dtype;         // safetensors' name: "F32", "BF16", ...
    int64_t world_size = 1;    // the ranks it is split over (1: NO_SHARD, every rank's file holds it all)
    int64_t padded_numel = 0;  // the flat buffer, padded to a multiple of world_size
    int64_t shard_numel = 0;   // each rank's slice: padded_numel / world_size
    std::vector<Member> members;
  };

  int64_t format = current_format;
  int64_t world_size = 1;
  int64_t rank = 0;
  std::vector<Unit> units;
  std::vector<std::string> order;  // every entry of the model's state, in its order
  std::vector<std::string> whole;  // the entries kept whole in rank 0's file

  ACC_DECL std::string to_json() const;
  // Checks everything (offsets inside the buffer, sizes that agree); an error names `origin`.
  ACC_DECL static ShardedStateLayout from_json(const std::string& text, const std::string& origin);
};

// model_rank0.safetensors, model_1_rank3.safetensors: model i's file of rank r.
ACC_DECL std::string sharded_state_file(std::size_t model, int64_t rank);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/weight_shards.ipp>
#endif

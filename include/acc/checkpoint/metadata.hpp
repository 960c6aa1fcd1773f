// acc_state.json, the file a checkpoint directory is complete with: written last by
// save_state, required by load_state. It says how the checkpoint was made (world size,
// strategy and its checkpoint layout, precision, libtorch), lists every file with its size and CRC-32C (so that a
// missing, truncated or altered one is named before it is used), and holds the small state: the gradient accumulation
// step and every prepared data loader's sampler seed and position on each rank.
//
// It is read as untrusted input: every value is checked against its allowed range and every file
// name must be a plain name inside the checkpoint directory; anything else is a DamagedCheckpoint
// naming the key and what it may hold.
#pragma once

#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {

// A checkpoint whose own contents are wrong (a file missing, truncated, altered or unreadable, or a
// manifest that does not parse or holds values out of range), as opposed to one that does not
// fit the job loading it: load_state() without a directory passes over it to an older checkpoint.
class DamagedCheckpoint : public Error {
 public:
  using Error::Error;
};

// What the manifest records of each file: its size and the CRC-32C of its bytes.
struct CheckpointFile {
  uint64_t size = 0;
  uint32_t crc32c = 0;
};

struct CheckpointMetadata {
  static constexpr const char* file_name = "acc_state.json";
  static constexpr int64_t current_format = 2;  // 2: files with CRC-32C

  // How FSDP split one unit's flat parameter across the saving job's ranks: what each rank's
  // optimizer file (optimizer_rank<r>.bin) holds the state of, so that a job with another number of
  // processes can deal that state out again (checkpoint/optimizer_shards.hpp).
  struct FlatUnit {
    std::string name;
    int64_t numel = 0;        // the unit's parameters, flattened, without the padding
    int64_t shard_numel = 0;  // each rank's slice: numel / shards rounded up (the last ones padded)
    int64_t shards = 1;       // the ranks it is split over (1: NO_SHARD, every rank holds all of it)
    bool operator==(const FlatUnit& other) const {
      return name == other.name && numel == other.numel && shard_numel == other.shard_numel && shards == other.shards;
    }
  };

  struct DataLoader {
    uint64_t seed = 0;
    int64_t batch_size = 0;
    int64_t dataset_size = -1;                           // -1: a stream
    std::vector<std::pair<int64_t, int64_t>> positions;  // per rank: epoch, batches had in it
  };

  int64_t format = current_format;
  std::string library_version;
  std::string torch_version;
  int64_t optimizer_format = 0;  // see compat::optimizer_archive_format
  int64_t world_size = 1;
  // The ranks of a tensor-parallel group, whose model and optimizer files hold their own slices
  // (FSDP beside acc::tp); 1 without tensor parallelism, and in checkpoints written before it was recorded.
  int64_t tp_size = 1;
  std::string strategy, precision, sampler;
  // What the model and optimizer files hold (a strategy's checkpoint_layout, strategy/strategy.hpp);
  // empty in checkpoints written before it was recorded.
  std::string layout;
  int64_t step = 0;  // micro-steps of gradient accumulation done
  std::vector<std::string> models, optimizers, schedulers, custom_objects, random_states;
  // FULL_STATE_DICT: models lists each model's full state (model.safetensors); SHARDED_STATE_DICT:
  // each model's state is in one file per rank (model_rank<r>.safetensors, see weight_shards.hpp).
  std::string state_dict_type = "FULL_STATE_DICT";
  std::vector<std::string> gradients;  // per rank, when saved in the middle of gradient accumulation
  std::optional<std::string> scaler;
  std::vector<DataLoader> data_loaders;
  // FSDP: every unit, in order, as its optimizer state is split in the per-rank files; empty for
  // the other strategies and in checkpoints written before it was recorded.
  std::vector<FlatUnit> flat_units;
  std::map<std::string, CheckpointFile> files;  // every file of the checkpoint but this one

  ACC_DECL std::string to_json() const;

  // Why a strategy named `strategy_name`, of checkpoint layout `strategy_layout`, cannot load this
  // checkpoint; empty when it can. The files' layout decides, not the strategy's name: a checkpoint
  // of DDP over Gloo loads into DDP over NCCL, or into Single at one process. One from before
  // layouts were recorded needs the same strategy.
  std::string strategy_mismatch(std::string_view strategy_name, std::string_view strategy_layout) const;

  // Reads dir/acc_state.json; an error names the file, the key and what it may hold.
  ACC_DECL static CheckpointMetadata read(const std::filesystem::path& dir);
};

// A CRC-32C as acc_state.json writes it: 8 lowercase hexadecimal digits.
ACC_DECL std::string crc32c_text(uint32_t crc);

// Whether `name` names a file directly inside a directory: not empty, not "." or "..", without
// '/' or NUL, at most 255 bytes.
ACC_DECL bool is_plain_file_name(const std::string& name);

// The records of the files one process wrote, as text for gathering them on the main process.
ACC_DECL std::string encode_file_records(const std::map<std::string, CheckpointFile>& files);
ACC_DECL std::map<std::string, CheckpointFile> decode_file_records(const std::string& text);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/checkpoint/impl/metadata.ipp>
#endif

// `acc merge-weights` end to end on a small SHARDED_STATE_DICT checkpoint written here by hand (2
// ranks, one unit of two parameters split across them, a buffer kept whole on rank 0): the full
// tensors' bytes, the sharded output with its index, and the errors for bad input.
#include "launcher_process.hpp"

#include <doctest/doctest.h>
#include <acc/detail/crc32c.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

using namespace acc::cli::test;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string bytes_of(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}
std::string bytes_of(const std::vector<int64_t>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t));
}

void write_safetensors(const fs::path& file, const std::string& header, const std::string& data) {
  std::ofstream out(file, std::ios::binary);
  for (int byte = 0; byte < 8; ++byte) out.put(static_cast<char>((std::uint64_t{header.size()} >> (8 * byte)) & 0xff));
  out << header << data;
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file's header and its tensors' bytes by name.
struct Read {
  nlohmann::json header;
  std::map<std::string, std::string> data;
};
Read read_safetensors(const fs::path& file) {
  const auto bytes = read_file(file);
  REQUIRE(bytes.size() >= 8);
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = length << 8 | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  Read read;
  read.header = nlohmann::json::parse(bytes.substr(8, length));
  for (const auto& [name, tensor] : read.header.items()) {
    if (name == "__metadata__") continue;
    const auto begin = tensor["data_offsets"][0].get<std::size_t>(), end = tensor["data_offsets"][1].get<std::size_t>();
    read.data[name] = bytes.substr(8 + length + begin, end - begin);
  }
  return read;
}

// The layout: unit "(model)" of w [2, 3] (offset 0) and b [3] (offset 6), 9 elements padded to 10,
// 5 per rank; "buf" (I64 [2]) kept whole in rank 0's file. Values: w = 0..5, b = 6..8.
std::string layout(int rank) {
  return R"J({"format":1,"world_size":2,"rank":)J" + std::to_string(rank) +
         R"J(,"units":[{"name":"(model)","key":"(model).flat_shard","dtype":"F32","world_size":2,)J"
         R"J("padded_numel":10,"shard_numel":5,"members":[{"name":"w","shape":[2,3],"offset":0,"numel":6},)J"
         R"J({"name":"b","shape":[3],"offset":6,"numel":3}]}],"order":["w","b","buf"],"whole":["buf"]})J";
}

std::string metadata(int rank) {
  return R"J("__metadata__":{"format":"pt","acc_sharded_state":)J" + nlohmann::json(layout(rank)).dump() + "}";
}

struct ShardedCheckpoint {
  TempFolder temp;
  fs::path checkpoint = temp.path() / "ckpt";
  explicit ShardedCheckpoint(const std::string& type = "SHARDED_STATE_DICT") : temp("acc_merge_weights_" + type) {
    fs::create_directories(checkpoint);
    write_safetensors(checkpoint / "model_rank0.safetensors",
                      "{" + metadata(0) +
                          R"J(,"(model).flat_shard":{"dtype":"F32","shape":[5],"data_offsets":[0,20]},)J"
                          R"J("buf":{"dtype":"I64","shape":[2],"data_offsets":[20,36]}})J",
                      bytes_of(std::vector<float>{0, 1, 2, 3, 4}) + bytes_of(std::vector<int64_t>{7, -7}));
    write_safetensors(
        checkpoint / "model_rank1.safetensors",
        "{" + metadata(1) + R"J(,"(model).flat_shard":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}})J",
        bytes_of(std::vector<float>{5, 6, 7, 8, 0}));
    std::ofstream(checkpoint / "acc_state.json")
        << R"J({"format":2,"world_size":2,"models":["model.safetensors"],"state_dict_type":")J" << type << R"J(",)J"
        << R"J("files":{}})J";
  }
};

}  // namespace

TEST_CASE("merge-weights: the full tensors of every rank's shards, as save_model writes them") {
  ShardedCheckpoint saved;
  const auto out = saved.temp.path() / "merged";
  const auto result = run_acc({"merge-weights", saved.checkpoint.string(), out.string()}, {}, 20s);
  REQUIRE(result.finished_in_time);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  CHECK(contains(result.out, "3 tensors"));
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(out)) names.insert(entry.path().filename().string());
  CHECK(names == std::set<std::string>{"model.safetensors"});
  const auto merged = read_safetensors(out / "model.safetensors");
  CHECK(merged.header["__metadata__"] == nlohmann::json{{"format", "pt"}});
  CHECK(merged.header["w"]["dtype"] == "F32");
  CHECK(merged.header["w"]["shape"] == nlohmann::json::array({2, 3}));
  CHECK(merged.header["b"]["shape"] == nlohmann::json::array({3}));
  CHECK(merged.header["buf"]["dtype"] == "I64");
  CHECK(merged.data.at("w") == bytes_of(std::vector<float>{0, 1, 2, 3, 4, 5}));
  CHECK(merged.data.at("b") == bytes_of(std::vector<float>{6, 7, 8}));
  CHECK(merged.data.at("buf") == bytes_of(std::vector<int64_t>{7, -7}));
  // As acc's writer lays a file out: 8-byte elements first, then by name; the header padded to 8.
  CHECK(merged.header["buf"]["data_offsets"] == nlohmann::json::array({0, 16}));
  CHECK(merged.header["b"]["data_offsets"] == nlohmann::json::array({16, 28}));
  CHECK(merged.header["w"]["data_offsets"] == nlohmann::json::array({28, 52}));
}

TEST_CASE("merge-weights --max_shard_size: shards and an index, which a second merge replaces") {
  ShardedCheckpoint saved;
  const auto out = saved.temp.path() / "merged";
  // w (24 bytes), b (12), buf (16): at most 30 bytes a file.
  auto result = run_acc({"merge-weights", saved.checkpoint.string(), out.string(), "--max_shard_size", "30"}, {}, 20s);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(out)) names.insert(entry.path().filename().string());
  CHECK(names == std::set<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                       "model.safetensors.index.json"});
  const auto index = nlohmann::json::parse(read_file(out / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == 52);
  CHECK(index["weight_map"] == nlohmann::json{{"w", "model-00001-of-00002.safetensors"},
                                              {"b", "model-00002-of-00002.safetensors"},
                                              {"buf", "model-00002-of-00002.safetensors"}});
  CHECK(read_safetensors(out / "model-00002-of-00002.safetensors").data.at("b") ==
        bytes_of(std::vector<float>{6, 7, 8}));

  result = run_acc({"merge-weights", saved.checkpoint.string(), out.string()}, {}, 20s);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  names.clear();
  for (const auto& entry : fs::directory_iterator(out)) names.insert(entry.path().filename().string());
  CHECK(names == std::set<std::string>{"model.safetensors"});
}

TEST_CASE("merge-weights: help, bad flags, missing directories and full checkpoints name the problem") {
  auto result = run_acc({"merge-weights", "--help"});
  CHECK(result.exit_code == 0);
  CHECK(contains(result.out, "usage: acc merge-weights CHECKPOINT_DIR OUTPUT_DIR"));
  CHECK(contains(result.out, "SHARDED_STATE_DICT"));

  result = run_acc({"--help"});
  CHECK(contains(result.out, "merge-weights"));

  result = run_acc({"merge-weights"});
  CHECK(result.exit_code == 2);
  CHECK(contains(result.err, "give a checkpoint directory and an output directory"));

  result = run_acc({"merge-weights", "a", "b", "--bogus", "1"});
  CHECK(result.exit_code == 2);
  CHECK(contains(result.err, "--bogus"));

  result = run_acc({"merge-weights", "a", "b", "--max_shard_size", "10XB"});
  CHECK(result.exit_code == 2);
  CHECK(contains(result.err, "max_shard_size '10XB'"));
  CHECK(contains(result.err, "KiB, MiB, GiB"));

  TempFolder temp("acc_merge_weights_errors");
  result = run_acc({"merge-weights", (temp.path() / "nowhere").string(), (temp.path() / "out").string()});
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "checkpoint directory '" + (temp.path() / "nowhere").string() + "' does not exist"));

  result = run_acc({"merge-weights", temp.path().string(), (temp.path() / "out").string()});
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "has no acc_state.json: it is not a save_state checkpoint"));

  ShardedCheckpoint full("FULL_STATE_DICT");
  result = run_acc({"merge-weights", full.checkpoint.string(), (temp.path() / "out").string()});
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "holds full weights (FULL_STATE_DICT), not shards"));
  CHECK(contains(result.err, "load_model"));
  CHECK(!fs::exists(temp.path() / "out"));

  ShardedCheckpoint sharded;
  fs::remove(sharded.checkpoint / "model_rank1.safetensors");
  result = run_acc({"merge-weights", sharded.checkpoint.string(), (temp.path() / "out").string()});
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "model_rank1.safetensors' is missing"));

  result = run_acc({"merge-weights", sharded.checkpoint.string(), (temp.path() / "out").string(), "--model", "1"});
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "the checkpoint holds 1 model (give 0)"));
}

TEST_CASE("merge-weights: a rank's file altered since the save (its CRC-32C in acc_state.json) is named") {
  ShardedCheckpoint saved;
  const auto record = [&](const std::string& name) {
    const auto bytes = read_file(saved.checkpoint / name);
    char crc[9];
    std::snprintf(crc, sizeof crc, "%08x", static_cast<unsigned>(acc::detail::crc32c(bytes)));
    return nlohmann::json{{"size", bytes.size()}, {"crc32c", crc}};
  };
  auto manifest = nlohmann::json::parse(read_file(saved.checkpoint / "acc_state.json"));
  manifest["files"]["model_rank0.safetensors"] = record("model_rank0.safetensors");
  manifest["files"]["model_rank1.safetensors"] = record("model_rank1.safetensors");
  std::ofstream(saved.checkpoint / "acc_state.json") << manifest.dump();
  const auto out = saved.temp.path() / "merged";
  auto result = run_acc({"merge-weights", saved.checkpoint.string(), out.string()}, {}, 20s);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);

  auto bytes = read_file(saved.checkpoint / "model_rank1.safetensors");
  bytes.back() = static_cast<char>(bytes.back() ^ 0x5a);
  std::ofstream(saved.checkpoint / "model_rank1.safetensors", std::ios::binary) << bytes;
  result = run_acc({"merge-weights", saved.checkpoint.string(), (saved.temp.path() / "again").string()}, {}, 20s);
  CHECK(result.exit_code == 1);
  CHECK(contains(result.err, "model_rank1.safetensors' has CRC-32C "));
  CHECK(contains(result.err, "altered or damaged since the save"));
  CHECK(!fs::exists(saved.temp.path() / "again"));
}

namespace {

// Two tensor-parallel ranks' files as acc::tp::save_sharded_state writes them: qkv.weight [6, 2]
// (values 0..11) cut by rows as 3 fused blocks, each rank a row of each block; proj.weight [2, 4]
// (values 0..7) cut by columns; norm.weight [3] whole on both.
struct TensorParallelCheckpoint {
  TempFolder temp{"acc_merge_weights_tp"};
  fs::path checkpoint = temp.path() / "ckpt";
  explicit TensorParallelCheckpoint(int second_rank = 1) {
    fs::create_directories(checkpoint);
    const std::vector<std::vector<float>> qkv = {{0, 1, 4, 5, 8, 9}, {2, 3, 6, 7, 10, 11}};
    const std::vector<std::vector<float>> proj = {{0, 1, 4, 5}, {2, 3, 6, 7}};
    for (int rank = 0; rank < 2; ++rank) {
      const auto shard = nlohmann::json{{"rank", rank == 1 ? second_rank : 0},
                                        {"size", 2},
                                        {"splits", {{"qkv.weight", {0, 3}}, {"proj.weight", {1, 1}}}}};
      write_safetensors(checkpoint / ("model_tp" + std::to_string(rank) + ".safetensors"),
                        R"J({"__metadata__":{"format":"pt","acc_tp_shard":)J" + nlohmann::json(shard.dump()).dump() +
                            R"J(},"qkv.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},)J"
                            R"J("proj.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[24,40]},)J"
                            R"J("norm.weight":{"dtype":"F32","shape":[3],"data_offsets":[40,52]}})J",
                        bytes_of(qkv[rank]) + bytes_of(proj[rank]) + bytes_of(std::vector<float>{1, 2, 3}));
    }
  }
};

}  // namespace

TEST_CASE("merge-weights: tensor-parallel ranks' slices joined as acc::tp::full_state joins them") {
  TensorParallelCheckpoint saved;
  const auto out = saved.temp.path() / "merged";
  const auto result = run_acc({"merge-weights", saved.checkpoint.string(), out.string()}, {}, 20s);
  REQUIRE(result.finished_in_time);
  REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  CHECK(result.out == "acc merge-weights: 3 tensors (92 bytes) of 2 tensor-parallel ranks written to " +
                          (out / "model.safetensors").string() + "\n");
  const auto merged = read_safetensors(out / "model.safetensors");
  CHECK(merged.header["qkv.weight"]["shape"] == nlohmann::json::array({6, 2}));
  CHECK(merged.header["proj.weight"]["shape"] == nlohmann::json::array({2, 4}));
  CHECK(merged.header["norm.weight"]["shape"] == nlohmann::json::array({3}));
  CHECK(merged.data.at("qkv.weight") == bytes_of(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  CHECK(merged.data.at("proj.weight") == bytes_of(std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
  CHECK(merged.data.at("norm.weight") == bytes_of(std::vector<float>{1, 2, 3}));
}

TEST_CASE("merge-weights: a tensor-parallel rank's missing or foreign file is named") {
  TensorParallelCheckpoint mislabelled(/*second_rank=*/0);
  const auto merge = [](const fs::path& checkpoint) {
    const auto result = run_acc({"merge-weights", checkpoint.string(), (checkpoint / "out").string()}, {}, 20s);
    REQUIRE(result.finished_in_time);
    CHECK(result.exit_code == 1);
    return result.err;
  };
  const auto second = (mislabelled.checkpoint / "model_tp1.safetensors").string();
  CHECK(merge(mislabelled.checkpoint) ==
        "acc merge-weights: '" + second + "' says it is rank 0 of 2, not rank 1 of 2 as '" +
            (mislabelled.checkpoint / "model_tp0.safetensors").string() + "' implies (files of another checkpoint?)\n");
  fs::remove(second);
  CHECK(merge(mislabelled.checkpoint) ==
        "acc merge-weights: '" + second +
            "' is missing: the model was saved by a tp group of 2 ranks, each writing its slices (copy every rank's "
            "files into one directory)\n");
}

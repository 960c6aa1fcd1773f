#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>

#include <nlohmann/json.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

// FSDP FULL_SHARD with fsdp_state_dict_type SHARDED_STATE_DICT: save_state writes each rank's
// shards only; load_state on the same world size restores the parameters bit for bit; `acc
// merge-weights` makes of them what save_model writes. Run phase by phase by
// tests/dist/CMakeLists.txt (dist/sharded_state_dict_2_ranks):
//   ACC_TEST_SHARDED_DIR=D acc launch --num_processes 2 ... acc_dist_worker --no-skip -tc=sharded_save*
//   acc merge-weights D/ckpt D/merged; acc merge-weights D/ckpt D/merged_sharded --max_shard_size 3KB
//   ACC_TEST_SHARDED_DIR=D acc_dist_worker --no-skip -tc=sharded_merged*
#if ACC_HAS_GLOO
namespace {

namespace fs = std::filesystem;

fs::path sharded_dir() {
  const char* dir = std::getenv("ACC_TEST_SHARDED_DIR");
  REQUIRE_MESSAGE(dir, "set ACC_TEST_SHARDED_DIR");
  return dir;
}

struct BlockImpl : torch::nn::Module {
  BlockImpl()
      : a(register_module("a", torch::nn::Linear(32, 32))), b(register_module("b", torch::nn::Linear(32, 32))) {}
  at::Tensor forward(const at::Tensor& x) { return x + b(torch::tanh(a(x))); }
  torch::nn::Linear a, b;
};
TORCH_MODULE(Block);

// Two blocks declared as FSDP units; the embedding and the head belong to the root unit; a buffer,
// which the checkpoint keeps whole in rank 0's file.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : embed(register_module("embed", torch::nn::Linear(8, 32))),
        head(register_module("head", torch::nn::Linear(32, 3))) {
    for (int i = 0; i < 2; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block()));
    shift = register_buffer("shift", torch::arange(3, torch::kFloat));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = embed(x);
    for (auto& block : blocks) h = block(h);
    return head(h) + shift;
  }
  torch::nn::Linear embed, head;
  std::vector<acc::Unit<Block>> blocks;
  at::Tensor shift;
};
TORCH_MODULE(Net);

using Sharded = acc::Accelerator<acc::FSDP<acc::Gloo, acc::FullShard>>;

acc::AcceleratorOptions sharded_options() {
  return acc::AcceleratorOptions::from_environment().fsdp(
      acc::FSDPOptions().state_dict_type(acc::FSDPOptions::StateDictType::sharded));
}

std::map<std::string, at::Tensor> cloned(const std::vector<std::pair<std::string, at::Tensor>>& state) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, tensor] : state) out[name] = tensor.to(at::kCPU).clone();
  return out;
}

}  // namespace

TEST_SUITE("sharded_state_dict" * doctest::skip()) {
  TEST_CASE("sharded_save: each rank writes its shards; load_state restores them bit for bit") {
    const auto dir = sharded_dir();
    Sharded accelerator(sharded_options());
    REQUIRE(accelerator.num_processes() == 2);
    const int rank = accelerator.process_index();
    torch::manual_seed(7);
    Net net;
    torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
    auto [model, optimizer] = accelerator.prepare(net, adamw);
    auto& fsdp = accelerator.strategy();
    const auto step = [&](int i) {
      auto generator = at::make_generator<at::CPUGeneratorImpl>(100 + 2 * i + rank);
      const auto x = at::randn({6, 8}, generator);
      optimizer.zero_grad();
      accelerator.backward(torch::nn::functional::cross_entropy(model(x), x.narrow(1, 0, 3).argmax(1)));
      optimizer.step();
    };
    step(0);
    step(1);
    const auto saved = cloned(fsdp.full_state(*net));
    std::map<std::string, at::Tensor> my_shards;
    for (const auto& [key, shard] : fsdp.sharded_state()) my_shards[key] = shard.clone();
    accelerator.save_state(dir / "ckpt");
    accelerator.save_model(model, dir / "full");

    // Every rank's file: its own shard of each unit (and rank 0's the buffer), nothing gathered.
    const auto manifest = nlohmann::json::parse(std::ifstream(dir / "ckpt" / "acc_state.json"));
    CHECK(manifest["state_dict_type"] == "SHARDED_STATE_DICT");
    CHECK(!fs::exists(dir / "ckpt" / "model.safetensors"));
    const acc::safetensors::File mine(dir / "ckpt" / acc::sharded_state_file(0, rank));
    const auto layout =
        acc::ShardedStateLayout::from_json(mine.metadata().at(acc::ShardedStateLayout::metadata_key), "mine");
    CHECK(layout.rank == rank);
    CHECK(layout.world_size == 2);
    const auto units = fsdp.sharded_layout();
    REQUIRE(layout.units.size() == units.size());
    CHECK(units.size() == 3);  // the root's embed and head, and the two blocks
    std::set<std::string> expected_names;
    int64_t shard_elements = 0, full_elements = 0;
    for (std::size_t u = 0; u < units.size(); ++u) {
      CAPTURE(units[u].name);
      const auto& recorded = layout.units[u];
      CHECK(recorded.name == units[u].name);
      CHECK(recorded.dtype == "F32");
      CHECK(recorded.world_size == 2);
      CHECK(recorded.padded_numel == units[u].padded_numel);
      CHECK(recorded.shard_numel * 2 == recorded.padded_numel);
      REQUIRE(recorded.members.size() == units[u].members.size());
      for (std::size_t m = 0; m < units[u].members.size(); ++m) {
        CHECK(recorded.members[m].name == units[u].members[m].name);
        CHECK(recorded.members[m].offset == units[u].members[m].offset);
        CHECK(recorded.members[m].shape == units[u].members[m].shape);
        full_elements += recorded.members[m].numel;
      }
      const auto shard = mine.read(recorded.key);
      CHECK(shard.dim() == 1);
      CHECK(shard.numel() == recorded.shard_numel);
      CHECK(torch::equal(shard, my_shards.at(recorded.key)));
      expected_names.insert(recorded.key);
      shard_elements += shard.numel();
    }
    CHECK(layout.whole == std::vector<std::string>{"shift"});
    if (rank == 0) expected_names.insert("shift");
    std::set<std::string> names;
    for (const auto& [name, info] : mine.tensors()) names.insert(name);
    CHECK(names == expected_names);
    CHECK(shard_elements < full_elements);  // about half, with padding
    CHECK(shard_elements <= full_elements / 2 + 3);

    // Trained further and the buffer changed, then loaded back: bit for bit what was saved.
    step(2);
    {
      at::NoGradGuard no_grad;
      net->shift.fill_(-1);
    }
    CHECK(!torch::equal(cloned(fsdp.full_state(*net)).at("head.weight"), saved.at("head.weight")));
    accelerator.load_state(dir / "ckpt");
    const auto loaded = cloned(fsdp.full_state(*net));
    REQUIRE(loaded.size() == saved.size());
    for (const auto& [name, tensor] : saved) {
      CAPTURE(name);
      CHECK(torch::equal(loaded.at(name), tensor));
    }
    for (const auto& [key, shard] : fsdp.sharded_state()) CHECK(torch::equal(shard, my_shards.at(key)));
  }

  TEST_CASE("sharded_merged: acc merge-weights wrote what save_model writes; one process cannot load the shards") {
    const auto dir = sharded_dir();
    const auto full = acc::safetensors::load_file(dir / "full" / "model.safetensors").tensors;
    const auto merged = acc::safetensors::load_file(dir / "merged" / "model.safetensors").tensors;
    REQUIRE(merged.size() == full.size());
    CHECK(full.size() == 13);  // weight and bias of embed, head and the blocks' 4 linears; shift
    for (const auto& [name, tensor] : full) {
      CAPTURE(name);
      REQUIRE(merged.count(name) == 1);
      CHECK((merged.at(name).scalar_type() == tensor.scalar_type()));
      CHECK(torch::equal(merged.at(name), tensor));
    }
    // The same layout as save_model's file, byte for byte.
    const auto bytes = [](const fs::path& file) {
      std::ifstream in(file, std::ios::binary);
      return std::string(std::istreambuf_iterator<char>(in), {});
    };
    CHECK(bytes(dir / "merged" / "model.safetensors") == bytes(dir / "full" / "model.safetensors"));

    // --max_shard_size 3KB: a 32x32 weight (4 KB) in a file of its own; the index names them all.
    const auto index = acc::weights::read_index(dir / "merged_sharded" / acc::weights::kIndexFile);
    CHECK(index.files.size() > 2);
    CHECK(index.weight_map.size() == full.size());
    uint64_t total = 0;
    std::size_t seen = 0;
    for (const auto& file : index.files) {
      const auto contents = acc::safetensors::load_file(dir / "merged_sharded" / file).tensors;
      for (const auto& [name, tensor] : contents) {
        CAPTURE(name);
        CHECK(index.weight_map.at(name) == file);
        CHECK(torch::equal(tensor, full.at(name)));
        total += static_cast<uint64_t>(tensor.nbytes());
        ++seen;
      }
    }
    CHECK(seen == full.size());
    CHECK(index.total_size == total);

    // A plain model loads the merged weights, sharded or not.
    for (const auto& from : {dir / "merged", dir / "merged_sharded"}) {
      CAPTURE(from);
      acc::Accelerator<> single(acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true));
      Net plain;
      single.load_model(plain, from);
      for (const auto& [name, tensor] : acc::detail::module_state(*plain)) CHECK(torch::equal(tensor, full.at(name)));
    }

    // The shards on one process: refused, with the way out.
    Sharded alone(sharded_options());
    REQUIRE(alone.num_processes() == 1);
    Net net;
    torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
    [[maybe_unused]] auto prepared = alone.prepare(net, adamw);
    std::string error;
    try {
      alone.load_state(dir / "ckpt");
    } catch (const acc::Error& e) {
      error = e.what();
    }
    CHECK(error.find("saved by 2 processes, and this job has 1") != std::string::npos);
    CHECK(error.find("SHARDED_STATE_DICT") != std::string::npos);
    CHECK(error.find("acc merge-weights") != std::string::npos);
    CHECK(error.find("FULL_STATE_DICT") != std::string::npos);
  }
}
#endif

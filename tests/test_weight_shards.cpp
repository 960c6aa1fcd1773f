// save_model's sharded weights (model-0000i-of-0000N.safetensors and the index, as Hugging Face
// writes them), max_shard_size's forms, load_model of either layout, and the safetensors reader
// that reads one tensor or a slice of one.
#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "resume_training.hpp"
#include "temp_dir.hpp"

#include <acc/acc.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

std::set<std::string> file_names(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename().string());
  return names;
}

}  // namespace

TEST_SUITE("weight_shards") {
  TEST_CASE("max_shard_size: bytes, and transformers' units as strings") {
    CHECK(acc::parse_shard_size("10GB") == 10'000'000'000);
    CHECK(acc::parse_shard_size("10GiB") == 10 * (int64_t{1} << 30));
    CHECK(acc::parse_shard_size("500MB") == 500'000'000);
    CHECK(acc::parse_shard_size("100KB") == 100'000);
    CHECK(acc::parse_shard_size("512MiB") == 512 * (int64_t{1} << 20));
    CHECK(acc::parse_shard_size("64kib") == 64 * 1024);
    CHECK(acc::parse_shard_size("1000") == 1000);
    CHECK(acc::parse_shard_size("10Gb") == 1'250'000'000);  // transformers: a lowercase b counts bits
    CHECK(acc::ShardSize(12345).bytes() == 12345);
    CHECK(acc::ShardSize(int64_t{1} << 40).bytes() == int64_t{1} << 40);
    CHECK(acc::ShardSize("2GB").bytes() == 2'000'000'000);
    CHECK(acc::ShardSize(std::string("3KiB")).bytes() == 3072);
    for (const std::string bad : {"10XB", "GB", "", "-5", "1.5GB", "10 GB", "0", "99999999999999999999GB"}) {
      CAPTURE(bad);
      const auto error = error_of([&] { acc::parse_shard_size(bad); });
      CHECK(contains(error, "max_shard_size '" + bad + "'"));
      CHECK(contains(error, "KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024)"));
    }
    CHECK(contains(error_of([] { acc::parse_shard_size("10XB"); }), "unknown unit 'XB'"));
    CHECK(contains(error_of([] { acc::ShardSize(0); }), "max_shard_size 0 is not a size in bytes"));
    CHECK(contains(error_of([] { acc::ShardSize(-3); }), "max_shard_size -3"));
  }

  TEST_CASE("shards are filled in order, and a tensor larger than the limit gets a file of its own") {
    using Plan = std::vector<std::vector<std::size_t>>;
    CHECK(acc::weights::plan_shards({4, 4, 4}, 8) == Plan{{0, 1}, {2}});
    CHECK(acc::weights::plan_shards({3, 3, 2}, 8) == Plan{{0, 1, 2}});
    CHECK(acc::weights::plan_shards({4, 20, 4}, 8) == Plan{{0}, {1}, {2}});
    CHECK(acc::weights::plan_shards({20, 1, 1}, 8) == Plan{{0}, {1, 2}});
    CHECK(acc::weights::plan_shards({1, 1, 20}, 8) == Plan{{0, 1}, {2}});
    CHECK(acc::weights::plan_shards({}, 8) == Plan{{}});
    CHECK(acc::weights::shard_file_name(0, 3) == "model-00001-of-00003.safetensors");
    CHECK(acc::weights::shard_file_name(11, 12) == "model-00012-of-00012.safetensors");
  }

  TEST_CASE("save_model above max_shard_size: shards and an index as Hugging Face's, and load_model reads both forms") {
    TempDir dir;
    acc::Accelerator<> accelerator(cpu_options());
    torch::manual_seed(1);
    resume::Net net;
    auto model = accelerator.prepare(net);
    const auto out = dir.path / "export";
    // fc1.weight 1024 bytes, fc1.bias 128, fc2.weight 384, fc2.bias 12: fc1.weight alone, the rest together.
    accelerator.save_model(model, out, 600);
    CHECK(file_names(out) == std::set<std::string>{"model-00001-of-00002.safetensors",
                                                   "model-00002-of-00002.safetensors", "model.safetensors.index.json"});
    const auto index = nlohmann::json::parse(read_text(out / "model.safetensors.index.json"));
    CHECK(index["metadata"]["total_size"] == 1024 + 128 + 384 + 12);
    CHECK(index["weight_map"] == nlohmann::json{{"fc1.weight", "model-00001-of-00002.safetensors"},
                                                {"fc1.bias", "model-00002-of-00002.safetensors"},
                                                {"fc2.weight", "model-00002-of-00002.safetensors"},
                                                {"fc2.bias", "model-00002-of-00002.safetensors"}});
    const auto first = acc::safetensors::load_file(out / "model-00001-of-00002.safetensors");
    const auto second = acc::safetensors::load_file(out / "model-00002-of-00002.safetensors");
    CHECK(first.tensors.size() == 1);
    CHECK(second.tensors.size() == 3);
    CHECK(first.metadata.at("format") == "pt");
    CHECK(at::equal(first.tensors.at("fc1.weight"), net->fc1->weight));
    CHECK(at::equal(second.tensors.at("fc2.bias"), net->fc2->bias));

    for (const auto& from : {out, out / "model.safetensors.index.json"}) {
      CAPTURE(from);
      torch::manual_seed(2);
      resume::Net other;
      accelerator.load_model(other, from);
      const auto mine = net->parameters(), theirs = other->parameters();
      REQUIRE(mine.size() == theirs.size());
      for (std::size_t i = 0; i < mine.size(); ++i) CHECK(at::equal(mine[i], theirs[i]));
    }
    resume::Net wider(64);
    const auto error = error_of([&] { accelerator.load_model(wider, out); });
    CHECK(contains(error, "model.safetensors.index.json"));
    CHECK(contains(error, "wrong shapes: fc1.weight is [32, 8] there but [64, 8] in the model"));

    // The default (10GB) writes one file, and the shards and index of the earlier save go; and back.
    accelerator.save_model(model, out);
    CHECK(file_names(out) == std::set<std::string>{"model.safetensors"});
    accelerator.save_model(model, out, "1KB");  // 1000 bytes: fc1.weight alone, then the rest
    CHECK(file_names(out) == std::set<std::string>{"model-00001-of-00002.safetensors",
                                                   "model-00002-of-00002.safetensors", "model.safetensors.index.json"});
    accelerator.save_model(model, out, 400);  // fc1.weight, fc1.bias, then fc2's two: 3 files
    CHECK(file_names(out) == std::set<std::string>{"model-00001-of-00003.safetensors",
                                                   "model-00002-of-00003.safetensors",
                                                   "model-00003-of-00003.safetensors", "model.safetensors.index.json"});
    torch::manual_seed(3);
    resume::Net third;
    accelerator.load_model(third, out);
    CHECK(at::equal(third->fc2->weight, net->fc2->weight));

    const auto bad = error_of([&] { accelerator.save_model(model, out, "10XB"); });
    CHECK(contains(bad, "max_shard_size '10XB'"));
    const auto missing = error_of([&] { accelerator.load_model(third, dir.path / "nothing"); });
    CHECK(contains(missing, "does not exist"));
    fs::create_directories(dir.path / "empty");
    CHECK(contains(error_of([&] { accelerator.load_model(third, dir.path / "empty"); }),
                   "holds neither model.safetensors nor model.safetensors.index.json"));
  }

  TEST_CASE("a damaged index is named with what is wrong") {
    TempDir dir;
    write_text(dir.path / "model.safetensors.index.json", R"({"weight_map": {"w": "../elsewhere.safetensors"}})");
    CHECK(contains(error_of([&] { acc::weights::model_files(dir.path); }), "not a file beside the index"));
    write_text(dir.path / "model.safetensors.index.json", "{");
    CHECK(contains(error_of([&] { acc::weights::model_files(dir.path); }), "not valid JSON"));
    write_text(dir.path / "model.safetensors.index.json",
               acc::weights::index_json(
                   12, {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}));
    const auto files = acc::weights::model_files(dir.path);
    CHECK(files == std::vector<fs::path>{dir.path / "model-00001-of-00002.safetensors",
                                         dir.path / "model-00002-of-00002.safetensors"});
    CHECK(acc::weights::read_index(dir.path / "model.safetensors.index.json").total_size == 12);
  }

  TEST_CASE("safetensors::File reads one tensor, or a slice of its elements, without the rest") {
    TempDir dir;
    const auto a = torch::arange(10, torch::kFloat).reshape({2, 5});
    const auto b = torch::arange(4, torch::kLong);
    acc::safetensors::save_file({{"a", a}, {"b", b}}, dir.path / "t.safetensors", {{"k", "v"}});
    const acc::safetensors::File file(dir.path / "t.safetensors");
    CHECK(file.metadata().at("k") == "v");
    CHECK(file.tensors().size() == 2);
    CHECK(file.info("a").shape == std::vector<int64_t>{2, 5});
    CHECK((file.info("b").dtype == at::kLong));
    CHECK(at::equal(file.read("a"), a));
    CHECK(at::equal(file.read("b"), b));
    CHECK(at::equal(file.read_elements("a", 3, 4), torch::arange(3, 7, torch::kFloat)));
    CHECK(file.read_elements("a", 10, 0).numel() == 0);
    CHECK(contains(error_of([&] { file.read_elements("a", 8, 3); }), "lie outside tensor 'a' of 10 elements"));
    CHECK(contains(error_of([&] { file.info("c"); }), "has no tensor 'c'"));
    CHECK(acc::safetensors::dtype_name(at::kBFloat16) == "BF16");
  }

  TEST_CASE("a sharded state layout round-trips through its JSON, and a bad one is named") {
    acc::ShardedStateLayout layout;
    layout.world_size = 2;
    layout.rank = 1;
    layout.units.push_back({"(model)", "(model).flat_shard", "F32", 2, 10, 5, {{"w", {3, 3}, 0, 9}}});
    layout.order = {"w", "running_mean"};
    layout.whole = {"running_mean"};
    const auto back = acc::ShardedStateLayout::from_json(layout.to_json(), "here");
    CHECK(back.world_size == 2);
    CHECK(back.rank == 1);
    REQUIRE(back.units.size() == 1);
    CHECK(back.units[0].members[0].shape == std::vector<int64_t>{3, 3});
    CHECK(back.units[0].padded_numel == 10);
    CHECK(back.order == layout.order);
    CHECK(back.whole == layout.whole);
    layout.units[0].members[0].offset = 5;  // 5 + 9 > 10
    CHECK(contains(error_of([&] { acc::ShardedStateLayout::from_json(layout.to_json(), "here"); }),
                   "places 'w' outside unit '(model)'"));
    CHECK(contains(error_of([&] { acc::ShardedStateLayout::from_json("[]", "here"); }), "here: its sharded state"));
  }

  TEST_CASE("fsdp_state_dict_type: SHARDED_STATE_DICT reaches FSDPOptions, FULL_STATE_DICT is the default") {
    const auto sharded = acc::Config::from_yaml(
        "distributed_type: FSDP\nfsdp_config:\n  fsdp_state_dict_type: SHARDED_STATE_DICT\n", "sharded.yaml");
    CHECK((acc::accelerator_options(sharded).fsdp().state_dict_type() == acc::FSDPOptions::StateDictType::sharded));
    const auto local = acc::Config::from_yaml(
        "distributed_type: FSDP\nfsdp_config:\n  fsdp_state_dict_type: LOCAL_STATE_DICT\n", "local.yaml");
    CHECK((acc::accelerator_options(local).fsdp().state_dict_type() == acc::FSDPOptions::StateDictType::full));
    CHECK((acc::FSDPOptions().state_dict_type() == acc::FSDPOptions::StateDictType::full));
  }

#if ACC_HAS_GLOO  // the GPU builds have no Gloo; FSDP over NCCL is in tests/dist there
  TEST_CASE("SHARDED_STATE_DICT on one process: model_rank0.safetensors with its layout, loaded back exactly") {
    TempDir dir;
    using Fsdp = acc::Accelerator<acc::FSDP<acc::Gloo, acc::FullShard>>;
    const auto options =
        cpu_options().fsdp(acc::FSDPOptions().state_dict_type(acc::FSDPOptions::StateDictType::sharded));
    torch::manual_seed(4);
    resume::Net net;
    torch::optim::SGD sgd(net->parameters(), 0.1);
    std::map<std::string, at::Tensor> saved;
    {
      Fsdp accelerator(options);
      auto [model, optimizer] = accelerator.prepare(net, sgd);
      for (const auto& [name, tensor] : accelerator.strategy().full_state(*net)) saved[name] = tensor.clone();
      accelerator.save_state(dir.path / "ckpt");
      (void)model;
      (void)optimizer;
    }
    CHECK(!fs::exists(dir.path / "ckpt" / "model.safetensors"));
    const acc::safetensors::File file(dir.path / "ckpt" / "model_rank0.safetensors");
    const auto layout =
        acc::ShardedStateLayout::from_json(file.metadata().at(acc::ShardedStateLayout::metadata_key), "rank 0");
    CHECK(layout.world_size == 1);
    CHECK(layout.order == std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"});
    CHECK(layout.whole.empty());
    REQUIRE(layout.units.size() == 1);  // the whole model: resume::Net declares no unit
    CHECK(layout.units[0].key == "(model).flat_shard");
    CHECK(layout.units[0].padded_numel == 256 + 32 + 96 + 3);
    CHECK(layout.units[0].members[2].name == "fc2.weight");
    CHECK(layout.units[0].members[2].offset == 256 + 32);
    CHECK(at::equal(file.read_elements("(model).flat_shard", 256 + 32, 96).view({3, 32}), saved.at("fc2.weight")));
    const auto manifest = nlohmann::json::parse(read_text(dir.path / "ckpt" / "acc_state.json"));
    CHECK(manifest["state_dict_type"] == "SHARDED_STATE_DICT");
    CHECK(manifest["files"].contains("model_rank0.safetensors"));

    // Into a fresh model (other weights), FSDP again: the saved weights, bit for bit.
    torch::manual_seed(5);
    resume::Net other;
    torch::optim::SGD other_sgd(other->parameters(), 0.1);
    Fsdp accelerator(options);
    auto [model, optimizer] = accelerator.prepare(other, other_sgd);
    CHECK(!at::equal(accelerator.strategy().full_state(*other).front().second, saved.at("fc1.weight")));
    accelerator.load_state(dir.path / "ckpt");
    for (const auto& [name, tensor] : accelerator.strategy().full_state(*other)) {
      CAPTURE(name);
      CHECK(at::equal(tensor, saved.at(name)));
    }
    (void)model;
    (void)optimizer;

    // Without FSDP the shards do not load; the error says how to get full weights.
    acc::Accelerator<> single(cpu_options());
    resume::Net plain;
    torch::optim::SGD plain_sgd(plain->parameters(), 0.1);
    auto prepared = single.prepare(plain, plain_sgd);
    (void)prepared;
    const auto error = error_of([&] { single.load_state(dir.path / "ckpt"); });
    CHECK(contains(error, "SHARDED_STATE_DICT"));
    CHECK(contains(error, "acc merge-weights"));
  }
#endif
}

// Big-model inference on one machine: device maps inferred within budgets (GPUs planned by index,
// the CPU, disk), models dispatched across "cpu" and "disk" that compute what they computed
// before, with disk-offloaded weights present only while their unit runs, and checkpoints loaded
// into empty models tensor by tensor as a map places them (acc::load_checkpoint_and_dispatch).
//
// Every dispatched output below is compared bit for bit (at::equal) with the undispatched
// model's: on the CPU the dispatched model runs the same kernels on the same values in the same
// order (a disk round trip stores a tensor's bytes as they are, and moving a unit's inputs to the
// device they are on is no copy), so nothing could differ by rounding.
#include "../bench/common/peak_rss.hpp"
#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/big_modeling/init_empty_weights.hpp>
#include <acc/big_modeling/materialize.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/detail/module_state.hpp>
#include <acc/dispatch/available_memory.hpp>
#include <acc/dispatch/balanced_memory.hpp>
#include <acc/dispatch/dispatch_model.hpp>
#include <acc/dispatch/infer_auto_device_map.hpp>
#include <acc/dispatch/load_checkpoint_and_dispatch.hpp>
#include <acc/fsdp/unit.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

constexpr int64_t kDim = 16, kVocab = 32, kSeq = 8;

struct BlockImpl : torch::nn::Module {
  BlockImpl()
      : torch::nn::Module("Block"),
        ln(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})))),
        fc1(register_module("fc1", torch::nn::Linear(kDim, 4 * kDim))),
        fc2(register_module("fc2", torch::nn::Linear(4 * kDim, kDim))) {}
  at::Tensor forward(const at::Tensor& x) {
    weight_elements_seen = fc1->weight.numel() + fc2->weight.numel();
    fc1_weight_data = fc1->weight.data_ptr();
    return x + fc2(torch::gelu(fc1(ln(x))));
  }
  torch::nn::LayerNorm ln;
  torch::nn::Linear fc1, fc2;
  int64_t weight_elements_seen = 0;       // what the last forward found in its weights
  const void* fc1_weight_data = nullptr;  // and where
};
TORCH_MODULE(Block);

// A stage of blocks, with a weight of its own: a unit holding units.
struct StageImpl : torch::nn::Module {
  StageImpl() : torch::nn::Module("Stage"), scale(register_parameter("scale", torch::rand({kDim}))) {
    for (int i = 0; i < 2; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block()));
  }
  at::Tensor forward(at::Tensor x) {
    x = x * scale;
    for (auto& block : blocks) x = block(x);
    return x;
  }
  at::Tensor scale;
  std::vector<acc::Unit<Block>> blocks;
};
TORCH_MODULE(Stage);

// A unit called with a tensor and a number, returning two tensors.
struct PairImpl : torch::nn::Module {
  PairImpl() : fc(register_module("fc", torch::nn::Linear(kDim, kDim))) {}
  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, double scale) { return {fc(x) * scale, x}; }
  torch::nn::Linear fc;
};
TORCH_MODULE(Pair);

struct PairModelImpl : torch::nn::Module {
  PairModelImpl() : pair(register_module("pair", Pair())) {}
  at::Tensor forward(const at::Tensor& x) {
    const auto [y, same] = pair(x, 0.5);
    return y + same;
  }
  acc::Unit<Pair> pair;
};
TORCH_MODULE(PairModel);

// The output layer, holding the token embedding's weight itself: a tied parameter.
struct HeadImpl : torch::nn::Module {
  explicit HeadImpl(const at::Tensor& embedding) : torch::nn::Module("Head") {
    weight = register_parameter("weight", embedding);
  }
  at::Tensor forward(const at::Tensor& x) { return torch::matmul(x, weight.t()); }
  at::Tensor weight;
};
TORCH_MODULE(Head);

// A small GPT: token embedding and head as units sharing one weight, blocks as units, a position
// table and a final norm of the model's own (outside every unit).
struct GptImpl : torch::nn::Module {
  explicit GptImpl(int layers)
      : torch::nn::Module("Gpt"),
        positions(register_parameter("positions", torch::randn({kSeq, kDim}))),
        tokens(register_module("tokens", torch::nn::Embedding(kVocab, kDim))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        ln(register_module("ln", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})))),
        head(register_module("head", Head(tokens->weight))) {
    for (int i = 0; i < layers; ++i) {
      units.emplace_back(Block());
      blocks->push_back(units.back());
    }
  }
  at::Tensor forward(const at::Tensor& ids) {
    auto x = tokens(ids) + positions.narrow(0, 0, ids.size(1));
    for (auto& block : units) x = block(x);
    return head(ln(x));
  }
  at::Tensor positions;
  acc::Unit<torch::nn::Embedding> tokens;
  torch::nn::ModuleList blocks;
  std::vector<acc::Unit<Block>> units;
  torch::nn::LayerNorm ln;
  acc::Unit<Head> head;
};
TORCH_MODULE(Gpt);

Gpt make_gpt(int layers = 4) {
  torch::manual_seed(0);
  return Gpt(layers);
}

at::Tensor token_ids() { return torch::randint(kVocab, {2, kSeq}, torch::kLong); }

uint64_t bytes_of(const torch::nn::Module& module) {
  uint64_t bytes = 0;
  for (const auto& p : module.parameters()) bytes += p.numel() * p.element_size();
  for (const auto& b : module.buffers()) bytes += b.numel() * b.element_size();
  return bytes;
}

// The model's own tensors: the position table and the final norm.
uint64_t own_bytes(const Gpt& gpt) { return gpt->positions.numel() * 4 + bytes_of(*gpt->ln); }

// The model's bytes on each device of the map, each tensor once.
std::map<std::string, uint64_t> bytes_per_device(const torch::nn::Module& model, const acc::DeviceMap& map) {
  std::map<std::string, uint64_t> bytes;
  std::set<const void*> seen;
  for (const auto& p : model.named_parameters())
    if (seen.insert(p.value().unsafeGetTensorImpl()).second)
      bytes[map.find(p.key())->to_string()] += p.value().numel() * p.value().element_size();
  return bytes;
}

// The model's state as Hugging Face shards it: two files and model.safetensors.index.json.
void save_sharded(const torch::nn::Module& model, const fs::path& dir) {
  const auto state = acc::detail::module_state(model);
  const auto half = static_cast<std::ptrdiff_t>(state.size() / 2);
  const std::vector<std::vector<std::pair<std::string, at::Tensor>>> shards{{state.begin(), state.begin() + half},
                                                                            {state.begin() + half, state.end()}};
  fs::create_directories(dir);
  std::map<std::string, std::string> weight_map;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const auto name = acc::weights::shard_file_name(i, shards.size());
    acc::safetensors::save_file(shards[i], dir / name, {{"format", "pt"}});
    for (const auto& entry : shards[i]) weight_map[entry.first] = name;
  }
  std::ofstream(dir / acc::weights::kIndexFile) << acc::weights::index_json(0, weight_map);
}

Gpt empty_gpt(int layers = 4) {
  const auto empty = acc::init_empty_weights();
  return Gpt(layers);
}

std::set<std::string> file_names(const fs::path& dir) {
  std::set<std::string> names;
  if (fs::exists(dir))
    for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

// The file of the mapping (/proc/self/maps) holding `address`; "" when it is not in a mapped file.
fs::path mapped_file_of(const void* address) {
  std::ifstream maps("/proc/self/maps");
  const auto at = reinterpret_cast<uintptr_t>(address);
  for (std::string line; std::getline(maps, line);) {
    unsigned long begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2 || at < begin || at >= end) continue;
    const auto slash = line.find('/');
    return slash == std::string::npos ? "" : line.substr(slash);
  }
  return "";
}

// The hook dispatch_model installed around a unit.
acc::detail::DispatchHook& hook_of(const torch::nn::Module& unit) {
  auto* hooks = acc::detail::UnitRegistry::instance().call(unit).hooks;
  REQUIRE(dynamic_cast<acc::detail::DispatchHook*>(hooks) != nullptr);
  return *dynamic_cast<acc::detail::DispatchHook*>(hooks);
}

// The share of `file`'s pages in the page cache, read through a mapping of its own that touches none.
double resident_share(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  const auto size = static_cast<std::size_t>(fs::file_size(file));
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  REQUIRE(address != MAP_FAILED);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  REQUIRE(::mincore(address, size, resident.data()) == 0);
  ::munmap(address, size);
  std::size_t in_memory = 0;
  for (const auto flags : resident) in_memory += flags & 1;
  return static_cast<double>(in_memory) / static_cast<double>(resident.size());
}

// Drops `file`'s pages from the page cache (written back first), as a cold start finds them; whether
// they all went (a file system such as tmpfs keeps every page in memory).
bool evict_from_page_cache(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return resident_share(file) == 0.0;
}

std::map<std::string, at::Tensor> state_copy(const torch::nn::Module& model) {
  std::map<std::string, at::Tensor> state;
  for (const auto& p : model.named_parameters()) state[p.key()] = p.value().detach().clone();
  return state;
}

}  // namespace

TEST_SUITE("dispatch") {
  TEST_CASE("memory sizes read as Accelerate spells them, and a bad one names the accepted forms") {
    CHECK(acc::parse_memory_size("20GiB") == 20 * (uint64_t{1} << 30));
    CHECK(acc::parse_memory_size("500MB") == 500'000'000);
    CHECK(acc::parse_memory_size("1.5GB") == 1'500'000'000);
    CHECK(acc::parse_memory_size("0.5KiB") == 512);
    CHECK(acc::parse_memory_size("64kib") == 64 * 1024);
    CHECK(acc::parse_memory_size("2 TB") == 2'000'000'000'000);
    CHECK(acc::parse_memory_size("8Gb") == 1'000'000'000);  // Accelerate: a lowercase b counts bits
    CHECK(acc::parse_memory_size("123456") == 123456);
    CHECK(acc::MemorySize(4096).bytes() == 4096);
    CHECK(acc::MemorySize("1MiB").bytes() == 1 << 20);
    for (const std::string bad : {"20XB", "GiB", "", "-5", "1.5", "20GiBs", ".GB", "99999999999999999999"}) {
      CAPTURE(bad);
      const auto error = error_of([&] { acc::parse_memory_size(bad); });
      CHECK(contains(error, "memory size '" + bad + "'"));
      CHECK(contains(error, "KiB, MiB, GiB, TiB (powers of 1024)"));
    }
    CHECK(contains(error_of([] { acc::parse_memory_size("20XB"); }), "unknown unit 'XB'"));
    CHECK(contains(error_of([] { acc::MemorySize(-1); }), "memory size -1 is negative"));
    CHECK(acc::format_memory_size(1536) == "1.5 KiB");
    CHECK(acc::format_memory_size(100) == "100 bytes");
  }

  TEST_CASE("a device is a GPU index, \"cpu\" or \"disk\", ordered GPUs first, and a map prints as Python's dict") {
    CHECK(acc::Placement("cuda:1") == acc::Placement(1));
    CHECK(acc::Placement("0") < acc::Placement("1"));
    CHECK(acc::Placement(7) < acc::Placement::cpu());
    CHECK(acc::Placement::cpu() < acc::Placement::disk());
    CHECK(acc::Placement("cpu").device() == c10::Device(c10::kCPU));
    CHECK(acc::Placement(1).device() == c10::Device(c10::kCUDA, 1));
    CHECK(contains(error_of([] { acc::Placement::disk().device(); }), "runs nothing"));
    for (const std::string bad : {"gpu0", "cuda", "", "CPU", "cuda:x"}) {
      CAPTURE(bad);
      CHECK(contains(error_of([&] { acc::Placement{bad}; }), "(\"0\", \"1\", ... or \"cuda:0\"), \"cpu\" or \"disk\""));
    }
    acc::DeviceMap map{{"", 0}, {"blocks.1", "cpu"}, {"blocks.10", "disk"}};
    CHECK(map.to_string() == "{'': 0, 'blocks.1': 'cpu', 'blocks.10': 'disk'}");
    CHECK(map.find("blocks.1.fc.weight") == acc::Placement::cpu());
    CHECK(map.find("blocks.10.fc.weight") == acc::Placement::disk());
    CHECK(map.find("blocks.11") == acc::Placement(0));
    map.set("blocks.1", 1);
    CHECK(map.to_string() == "{'': 0, 'blocks.1': 1, 'blocks.10': 'disk'}");
    CHECK_FALSE(acc::DeviceMap{{"a", "cpu"}}.find("b").has_value());
  }

  TEST_CASE("units go to the CPU within its budget, keeping room for the largest, and the rest to disk") {
    auto gpt = make_gpt();
    const auto block = bytes_of(*gpt->units[0]);
    const auto tokens = bytes_of(*gpt->tokens);
    const auto own = own_bytes(gpt);
    // Room for the model's own tensors, the tied embedding and head, two blocks, and one block kept
    // free for the disk-offloaded blocks to be loaded into: one byte less fits one block only.
    const auto budget = own + tokens + 3 * block;
    const auto map = acc::infer_auto_device_map(gpt, {{"cpu", budget}, {"disk", "1GB"}});
    CHECK(map.to_string() ==
          "{'': 'cpu', 'tokens': 'cpu', 'head': 'cpu', 'blocks.0': 'cpu', 'blocks.1': 'cpu', 'blocks.2': 'disk', "
          "'blocks.3': 'disk'}");
    const auto used = bytes_per_device(*gpt, map);
    CHECK(used.at("cpu") + block == budget);
    CHECK(used.at("disk") == 2 * block);

    const auto tighter = acc::infer_auto_device_map(gpt, {{"cpu", budget - 1}, {"disk", "1GB"}});
    CHECK(tighter.to_string() ==
          "{'': 'cpu', 'tokens': 'cpu', 'head': 'cpu', 'blocks.0': 'cpu', 'blocks.1': 'disk', 'blocks.2': 'disk', "
          "'blocks.3': 'disk'}");
    // Everything fits: one entry for the whole model, as Accelerate's clean_device_map makes it.
    CHECK(acc::infer_auto_device_map(gpt, {{"cpu", "1GB"}}).to_string() == "{'': 'cpu'}");

    // Found: the unit being placed counted in the room kept for the largest unit still to come, so
    // a model that fits exactly was refused. Placed on the execution device, a unit is never
    // offloaded: the last block needs no room kept beside it, the first needs one block's.
    const auto exact = own + tokens + 4 * block;
    CHECK(acc::infer_auto_device_map(gpt, {{"cpu", exact}}).to_string() == "{'': 'cpu'}");
    CHECK_THROWS_WITH_AS(acc::infer_auto_device_map(gpt, {{"cpu", exact - 1}}),
                         doctest::Contains("the model does not fit in max_memory"), acc::Error);
  }

  TEST_CASE("balanced_memory spreads a model evenly over the GPUs, as Accelerate's get_balanced_memory") {
    auto gpt = make_gpt(6);
    const auto block = bytes_of(*gpt->units[0]);
    std::set<const void*> seen;
    uint64_t model = 0;  // the tied embedding and head once
    for (const auto& p : gpt->parameters())
      if (seen.insert(p.unsafeGetTensorImpl()).second) model += p.numel() * p.element_size();
    // The margin: 5/4 of the larger of the largest no_split unit (a block) and the mean of the units
    // holding no other unit (tokens, head, the blocks).
    const uint64_t mean_leaf = (bytes_of(*gpt->tokens) + 6 * block + bytes_of(*gpt->head)) / 8;
    const uint64_t margin = std::max(block, mean_leaf) * 5 / 4;
    const acc::MaxMemory budgets{{"0", "1GB"}, {"1", "1GB"}, {"2", "1GB"}, {"cpu", "1GB"}};
    const auto options = acc::BalancedMemoryOptions().no_split({"Block"});
    const auto balanced = acc::balanced_memory(gpt, budgets, options);
    CHECK(balanced.at("0").bytes() == model / 3 + margin);
    CHECK(balanced.at("1").bytes() == model / 3 + margin);
    CHECK(balanced.at("2").bytes() == 1'000'000'000);  // the last keeps its budget
    CHECK(balanced.at("cpu").bytes() == 1'000'000'000);
    // The map over them uses every GPU and nothing else; the budgets as given fill GPU 0 alone.
    const auto used = bytes_per_device(*gpt, acc::infer_auto_device_map(gpt, balanced, {{"Block"}}));
    CHECK(used.size() == 3);
    CHECK(used.count("0") == 1);
    CHECK(used.count("1") == 1);
    CHECK(used.count("2") == 1);
    CHECK(bytes_per_device(*gpt, acc::infer_auto_device_map(gpt, budgets, {{"Block"}})).size() == 1);

    // balanced_low_0: GPU 0 keeps what the others cannot hold, here nothing, or the rest of the model.
    const auto low = acc::BalancedMemoryOptions().no_split({"Block"}).low_zero(true);
    CHECK(acc::balanced_memory(gpt, {{"0", "1GB"}, {"1", "1GB"}}, low).at("0").bytes() == 0);
    CHECK(acc::balanced_memory(gpt, {{"0", "1GB"}, {"1", model / 2}}, low).at("0").bytes() == model - model / 2);
    // Found: a map within GPU 0's budget of 0 failed ("has no room on any device from 0 on"). GPU 0
    // holds nothing, and the model runs on GPU 1, as in Accelerate.
    CHECK(acc::infer_auto_device_map(gpt, acc::balanced_memory(gpt, {{"0", "1GB"}, {"1", "1GB"}}, low), {{"Block"}})
              .to_string() == "{'': 1}");
    // GPU 1 cannot hold it all: GPU 0 takes its share (less the room it keeps), the CPU the rest.
    const acc::MaxMemory short_of_room{{"0", "1GB"}, {"1", model / 2}, {"cpu", "1GB"}};
    const auto low_used = bytes_per_device(
        *gpt, acc::infer_auto_device_map(gpt, acc::balanced_memory(gpt, short_of_room, low), {{"Block"}}));
    CHECK(low_used.count("0") == 1);
    CHECK(low_used.count("1") == 1);
    // One GPU, or none: the budgets as given.
    for (const acc::MaxMemory& alone : {acc::MaxMemory{{"0", "1GB"}, {"cpu", "1GB"}}, acc::MaxMemory{{"cpu", "1GB"}}}) {
      const auto same = acc::balanced_memory(gpt, alone, options);
      CHECK(same.size() == alone.size());
      for (const auto& [name, size] : alone) CHECK(same.at(name).bytes() == size.bytes());
    }
  }

  TEST_CASE("named device maps plan within what the devices have free when max_memory is empty") {
    const auto available = acc::available_memory();
    REQUIRE(available.count("cpu") == 1);
    CHECK(available.at("cpu").bytes() > 0);
    for (const auto& [name, size] : available)
      if (name != "cpu") CHECK(acc::Placement(name).gpu_index() < static_cast<int>(torch::cuda::device_count()));
    // One GPU: 90% of its free memory, the rest left for activations; not for "sequential", nor
    // with two GPUs (as Accelerate).
    const auto one = acc::detail::default_budgets({{"0", 10'000}, {"cpu", 5'000}}, /*sequential=*/false);
    CHECK(one.at("0").bytes() == 9'000);
    CHECK(one.at("cpu").bytes() == 5'000);
    CHECK(acc::detail::default_budgets({{"0", 10'000}, {"cpu", 5'000}}, true).at("0").bytes() == 10'000);
    CHECK(acc::detail::default_budgets({{"0", 10'000}, {"1", 10'000}}, false).at("0").bytes() == 10'000);

    TempDir dir;
    auto gpt = make_gpt(2);
    const auto ids = token_ids();
    torch::NoGradGuard no_grad;
    const auto expected = gpt(ids);
    save_sharded(*gpt, dir.path / "checkpoint");
    for (const char* name : {"auto", "balanced", "balanced_low_0", "sequential"}) {
      CAPTURE(name);
      auto empty = empty_gpt(2);
      auto model = acc::load_checkpoint_and_dispatch(empty, dir.path / "checkpoint", name);
      if (torch::cuda::device_count() == 0) CHECK(model.device_map().to_string() == "{'': 'cpu'}");
      const auto output = model(ids.to(model.execution_device())).to(torch::kCPU);
      // On the CPU the same kernels run: equal. On a GPU the fp32 sums run in another order: each
      // dot product of kDim O(1) terms within kDim 2^-24 (~1e-6) relative, compounded over 2 blocks.
      if (torch::cuda::device_count() == 0)
        CHECK(at::equal(output, expected));
      else
        CHECK(at::allclose(output, expected, 1e-4, 1e-4));
    }
  }

  TEST_CASE("GPUs fill in index order before the CPU, and only the first GPU and the CPU keep room") {
    auto gpt = make_gpt(6);
    const auto block = bytes_of(*gpt->units[0]);
    const auto tokens = bytes_of(*gpt->tokens);
    const auto own = own_bytes(gpt);
    // GPU 0: the model's own, the tied pair and one block, plus a block's room; GPU 1: three
    // blocks (no room kept); the CPU: the rest, plus a block's room.
    const auto map = acc::infer_auto_device_map(
        gpt, {{"cpu", 3 * block}, {"1", 3 * block + block / 2}, {"cuda:0", own + tokens + 2 * block}});
    CHECK(map.to_string() ==
          "{'': 0, 'tokens': 0, 'head': 0, 'blocks.0': 0, 'blocks.1': 1, 'blocks.2': 1, 'blocks.3': 1, "
          "'blocks.4': 'cpu', 'blocks.5': 'cpu'}");
    const auto used = bytes_per_device(*gpt, map);
    CHECK(used.at("0") + block <= own + tokens + 2 * block);
    CHECK(used.at("1") <= 3 * block + block / 2);
    CHECK(used.at("cpu") + block <= 3 * block);
  }

  TEST_CASE("a unit holding units is split when it does not fit, unless its class is in no_split") {
    // A Sequential model: its children are units; the second holds two blocks declared as units.
    torch::manual_seed(0);
    auto model = torch::nn::Sequential(Block(), Stage(), Block());
    const auto block = bytes_of(*model[0]);
    const auto scale = uint64_t{kDim} * 4;
    // The CPU holds two blocks plus the kept room of one: block 0, then the stage does not fit whole.
    const acc::MaxMemory budgets{{"cpu", 3 * block + scale}, {"disk", "1GB"}};
    CHECK(acc::infer_auto_device_map(model, budgets).to_string() ==
          "{'': 'cpu', '0': 'cpu', '1': 'cpu', '1.block0': 'cpu', '1.block1': 'disk', '2': 'disk'}");
    CHECK(acc::infer_auto_device_map(model, budgets, acc::DeviceMapOptions{{"Stage"}}).to_string() ==
          "{'': 'cpu', '0': 'cpu', '1': 'disk', '2': 'disk'}");
    CHECK(contains(error_of([&] { acc::infer_auto_device_map(model, budgets, acc::DeviceMapOptions{{"Stag"}}); }),
                   "no_split names class 'Stag', which no module of the model is (its classes: Block, Stage, "
                   "torch::nn::LayerNormImpl, torch::nn::LinearImpl, torch::nn::SequentialImpl)"));
  }

  TEST_CASE("tied parameters stay on one device, pulled to the first unit's") {
    auto gpt = make_gpt();
    const auto block = bytes_of(*gpt->units[0]);
    const auto tokens = bytes_of(*gpt->tokens);
    const auto own = own_bytes(gpt);
    // The embedding (with the head, which holds the same tensor) fits beside the model's own only
    // with its weight counted once.
    const auto map = acc::infer_auto_device_map(gpt, {{"cpu", own + tokens + block}, {"disk", "1GB"}});
    CHECK(map.find("tokens.weight") == acc::Placement::cpu());
    CHECK(map.find("head.weight") == acc::Placement::cpu());
    CHECK(map.find("blocks.0.fc1.weight") == acc::Placement::disk());
    // The blocks, all on disk, are one entry for the module holding them (Accelerate's cleaning).
    CHECK(map.to_string() == "{'': 'cpu', 'tokens': 'cpu', 'head': 'cpu', 'blocks': 'disk'}");
  }

  TEST_CASE("a model that fits in no budget, and bad devices, are errors naming the sizes and the fix") {
    auto gpt = make_gpt();
    const auto block = bytes_of(*gpt->units[0]);
    const auto own = own_bytes(gpt);
    const auto total = own + bytes_of(*gpt->tokens) + 4 * block;
    const auto error = error_of([&] { acc::infer_auto_device_map(gpt, {{"cpu", 3 * block}, {"disk", block}}); });
    CHECK(contains(error, "the model does not fit in max_memory: it takes " + acc::format_memory_size(total) + " (" +
                              std::to_string(total) + " bytes, tied tensors counted once)"));
    CHECK(contains(error, "the budgets are cpu " + acc::format_memory_size(3 * block) + " (" +
                              acc::format_memory_size(block) + " of it kept for the largest unit), disk " +
                              acc::format_memory_size(block)));
    CHECK(contains(error,
                   "unit 'blocks.2' (" + acc::format_memory_size(block) + ") has no room on any device from disk on"));
    CHECK(contains(error_of([&] {
                     acc::infer_auto_device_map(gpt, {{"cpu", own + block}});
                   }),
                   "unit 'tokens' with the units sharing (tied) tensors with it: 'head' (" +
                       acc::format_memory_size(bytes_of(*gpt->tokens)) + ") has no room on any device from cpu on"));
    CHECK(contains(error_of([&] {
                     acc::infer_auto_device_map(gpt, {{"cpu", 10}});
                   }),
                   "the model's own parameters and buffers (outside every unit) (" + acc::format_memory_size(own) +
                       ") has no room on any device from cpu on"));
    CHECK(contains(error_of([&] {
                     acc::infer_auto_device_map(gpt, {{"gpu0", "1GB"}});
                   }),
                   "device 'gpu0' is not a device"));
    CHECK(contains(error_of([&] {
                     acc::infer_auto_device_map(gpt, {{"disk", "1GB"}});
                   }),
                   "max_memory names no device to run the model on"));
    CHECK(contains(error_of([&] {
                     acc::infer_auto_device_map(gpt, {{"0", "1GB"}, {"cuda:0", "1GB"}});
                   }),
                   "max_memory names device 0 twice"));
    CHECK(contains(error_of([&] { acc::infer_auto_device_map(gpt, {{"cpu", "lots"}}); }), "memory size 'lots'"));
  }

  TEST_CASE("a model dispatched across cpu and disk computes what it computed, loading disk weights per call") {
    TempDir dir;
    auto gpt = make_gpt();
    const auto ids = token_ids();
    torch::NoGradGuard no_grad;
    const auto expected = gpt(ids);
    const auto original = state_copy(*gpt);
    const auto block = bytes_of(*gpt->units[0]);
    const auto budget = own_bytes(gpt) + bytes_of(*gpt->tokens) + 3 * block;
    const auto map = acc::infer_auto_device_map(gpt, {{"cpu", budget}, {"disk", "1GB"}});
    REQUIRE(map.find("blocks.1") == acc::Placement::cpu());
    REQUIRE(map.find("blocks.2") == acc::Placement::disk());

    auto model = acc::dispatch_model(gpt, map, dir.path / "offload");
    CHECK(model.execution_device() == c10::Device(c10::kCPU));
    for (int call = 0; call < 2; ++call) {
      CAPTURE(call);
      const auto output = model(ids);
      CHECK(at::equal(output, expected));
      for (const int i : {2, 3}) {
        CAPTURE(i);
        // The forward found the weights; between calls they are meta tensors of their shapes.
        CHECK(gpt->units[i]->weight_elements_seen == 2 * 4 * kDim * kDim);
        for (const auto& p : gpt->units[i]->named_parameters()) {
          CHECK(p.value().is_meta());
          CHECK(p.value().sizes() == original.at("blocks." + std::to_string(i) + "." + p.key()).sizes());
        }
        CHECK(gpt->units[i]->ln->bias.is_meta());
      }
      for (const auto& p : gpt->units[1]->parameters()) CHECK(p.numel() > 0);  // resident on the CPU
      // Each disk unit read the next one's file ahead as it ran, the last the first's, for the next call.
      CHECK(hook_of(*gpt->units[2]).weights()->prefetched());
      CHECK_FALSE(hook_of(*gpt->units[3]).weights()->prefetched());
      // On the CPU the disk-offloaded weights are views of their memory-mapped file, not copies.
      CHECK(mapped_file_of(gpt->units[3]->fc1_weight_data) == dir.path / "offload" / "blocks.3.safetensors");
      CHECK(mapped_file_of(gpt->units[1]->fc1_weight_data) == "");
    }
    {  // Inference mode, where the loaded weights are inference tensors, computes the same.
      c10::InferenceMode inference;
      CHECK(at::equal(model(ids), expected));
    }
    CHECK(at::equal(model(ids), expected));

    // One file per disk-offloaded unit, holding its parameters under their names in the model.
    std::set<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir.path / "offload")) files.insert(entry.path().filename());
    CHECK(files == std::set<std::string>{"blocks.2.safetensors", "blocks.3.safetensors"});
    const auto contents = acc::safetensors::load_file(dir.path / "offload" / "blocks.3.safetensors");
    CHECK(contents.metadata == acc::safetensors::Metadata{{"format", "pt"}});
    std::set<std::string> names;
    for (const auto& [name, tensor] : contents.tensors) {
      names.insert(name);
      CHECK(at::equal(tensor, original.at(name)));
    }
    CHECK(names == std::set<std::string>{"blocks.3.ln.weight", "blocks.3.ln.bias", "blocks.3.fc1.weight",
                                         "blocks.3.fc1.bias", "blocks.3.fc2.weight", "blocks.3.fc2.bias"});
  }

  TEST_CASE("a disk-offloaded unit's prefetch reads its file into memory ahead of its load") {
    TempDir dir;
    auto block = Block();
    const auto original = state_copy(*block);
    std::vector<acc::detail::UnitTensor> parameters;
    for (const auto& p : block->named_parameters()) parameters.push_back({p.key(), p.value(), true});
    const auto file = dir.path / "block.safetensors";
    auto weights = acc::detail::OffloadedWeights::on_disk(parameters, file);
    weights.release();
    const bool cold = evict_from_page_cache(file);
    CHECK_FALSE(weights.prefetched());
    weights.prefetch(c10::kCPU);
    CHECK(weights.prefetched());
    if (cold) {
      // The kernel reads ahead in the background: every page arrives without anything touching one.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (resident_share(file) < 1.0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      CHECK(resident_share(file) == 1.0);
    } else {
      MESSAGE("the page cache of " << file << " cannot be dropped here (tmpfs?): the read-ahead is not observed");
    }
    weights.load(c10::kCPU);
    CHECK_FALSE(weights.prefetched());
    for (const auto& p : block->named_parameters()) CHECK(at::equal(p.value(), original.at(p.key())));
    weights.release();
  }

  TEST_CASE("cpu offload keeps a unit's values in host memory and gives them back for each call") {
    // What dispatch_model does for a "cpu" unit when the map has GPUs, here with the CPU as the
    // execution device (without CUDA there is no pinned memory to ask for).
    auto block = Block();
    const auto original = state_copy(*block);
    std::vector<acc::detail::UnitTensor> parameters;
    for (const auto& p : block->named_parameters()) parameters.push_back({p.key(), p.value(), true});
    auto weights = acc::detail::OffloadedWeights::in_memory(parameters, /*pin=*/false);
    weights.release();
    for (const auto& p : block->parameters()) CHECK(p.is_meta());
    weights.load(c10::kCPU);
    for (const auto& p : block->named_parameters()) CHECK(at::equal(p.value(), original.at(p.key())));
    weights.release();
    CHECK(block->fc1->weight.is_meta());
  }

  TEST_CASE("offloaded units with tied weights, units holding units, and a Sequential model dispatch exactly") {
    TempDir dir;
    torch::NoGradGuard no_grad;
    {  // The tied embedding and head on disk together: the head reads the tensor from its own file.
      auto gpt = make_gpt(2);
      const auto ids = token_ids();
      const auto expected = gpt(ids);
      auto model = acc::dispatch_model(gpt, {{"", "cpu"}, {"tokens", "disk"}, {"head", "disk"}}, dir.path / "tied");
      CHECK(at::equal(model(ids), expected));
      CHECK(gpt->tokens->weight.is_meta());
      CHECK(gpt->head->weight.unsafeGetTensorImpl() == gpt->tokens->weight.unsafeGetTensorImpl());
      CHECK(acc::safetensors::File(dir.path / "tied" / "head.safetensors").contains("head.weight"));
    }
    {  // A Sequential model, called child by child; the middle child's own weight on the CPU and
       // its nested blocks on disk.
      torch::manual_seed(1);
      auto seq = torch::nn::Sequential(Block(), Stage(), Block());
      const auto x = torch::randn({3, kDim});
      const auto expected = seq->forward(x);
      auto model = acc::dispatch_model(seq, {{"", "cpu"}, {"1.block0", "disk"}, {"1.block1", "disk"}, {"2", "disk"}},
                                       dir.path / "seq");
      CHECK(at::equal(model(x), expected));
      CHECK(at::equal(model(x), expected));
      CHECK(seq[2]->parameters()[0].is_meta());
      CHECK(seq[1]->named_parameters(false)["scale"].numel() == kDim);
    }
    {  // A unit holding units, all on disk: it prefetches the unit after its nested ones, which run
       // inside its forward. Found: it prefetched its first nested unit, already run, whose weights
       // then waited for the next call.
      torch::manual_seed(1);
      auto seq = torch::nn::Sequential(Block(), Stage(), Block());
      const auto x = torch::randn({3, kDim});
      const auto expected = seq->forward(x);
      auto model = acc::dispatch_model(seq, {{"", "cpu"}, {"1", "disk"}, {"2", "disk"}}, dir.path / "nested");
      auto& stage = dynamic_cast<StageImpl&>(*seq[1]);
      for (int call = 0; call < 2; ++call) {
        CAPTURE(call);
        CHECK(at::equal(model(x), expected));
        // The last offloaded unit ("2") prefetched the first ("1") for the next call; nothing else waits.
        CHECK(hook_of(stage).weights()->prefetched());
        CHECK_FALSE(hook_of(*stage.blocks[0]).weights()->prefetched());
        CHECK_FALSE(hook_of(*stage.blocks[1]).weights()->prefetched());
        CHECK_FALSE(hook_of(*seq[2]).weights()->prefetched());
      }
    }
  }

  // Found: the second dispatch rewrote the first's file in place, and the first, which mapped it
  // at its first call, computed with the second model's weights.
  TEST_CASE("two dispatches offloading to the same folder each keep their own weights") {
    TempDir dir;
    torch::NoGradGuard no_grad;
    const auto ids = token_ids();
    auto first = make_gpt(2);
    auto second = make_gpt(2);
    for (auto& p : second->parameters()) p.mul_(2);  // the same shapes and names, other values
    const auto first_expected = first(ids);
    const auto second_expected = second(ids);
    REQUIRE_FALSE(at::equal(first_expected, second_expected));
    const acc::DeviceMap map{{"", "cpu"}, {"blocks.0", "disk"}, {"blocks.1", "disk"}};
    auto first_dispatched = acc::dispatch_model(first, map, dir.path);
    auto second_dispatched = acc::dispatch_model(second, map, dir.path);
    CHECK(at::equal(first_dispatched(ids), first_expected));
    CHECK(at::equal(second_dispatched(ids), second_expected));
    CHECK(at::equal(first_dispatched(ids), first_expected));
  }

  // Found: released weights were empty tensors, so dispatching the model again copied them and
  // its first call failed in libtorch on a shape.
  TEST_CASE("a model whose dispatch ended: dispatch_model refuses it, load_checkpoint_and_dispatch fills it") {
    TempDir dir;
    torch::NoGradGuard no_grad;
    auto gpt = make_gpt(2);
    const auto ids = token_ids();
    const auto expected = gpt(ids);
    save_sharded(*gpt, dir.path / "checkpoint");
    const acc::DeviceMap map{{"", "cpu"}, {"blocks.1", "disk"}};
    {
      auto model = acc::dispatch_model(gpt, map, dir.path / "offload");
      CHECK(at::equal(model(ids), expected));
    }
    const auto again = error_of([&] { acc::dispatch_model(gpt, map, dir.path / "again"); });
    CHECK(again.rfind("'blocks.1.", 0) == 0);
    CHECK(contains(again,
                   "' has no values (a meta tensor, as acc::init_empty_weights makes, or an offloaded weight "
                   "whose dispatch has ended): load the weights"));
    acc::LoadAndDispatchOptions options;
    options.offload_dir = dir.path / "offload";
    auto model = acc::load_checkpoint_and_dispatch(gpt, dir.path / "checkpoint", map, options);
    CHECK(at::equal(model(ids), expected));
  }

  TEST_CASE("a unit called with a tensor and a number, returning two tensors, runs offloaded from disk") {
    TempDir dir;
    torch::NoGradGuard no_grad;
    torch::manual_seed(2);
    PairModel model;
    const auto x = torch::randn({3, kDim});
    const auto expected = model(x);
    auto dispatched = acc::dispatch_model(model, {{"", "cpu"}, {"pair", "disk"}}, dir.path);
    CHECK(at::equal(dispatched(x), expected));
    CHECK(model->pair->fc->weight.is_meta());
  }

  TEST_CASE("a dispatch ends with its model, and refuses maps it cannot run, naming the fix") {
    TempDir dir;
    auto gpt = make_gpt(2);
    auto& registry = acc::detail::UnitRegistry::instance();
    {
      auto model = acc::dispatch_model(gpt, {{"", "cpu"}});
      CHECK(registry.call(*gpt->units[0]).hooks != nullptr);
      CHECK(contains(error_of([&] {
                       acc::dispatch_model(gpt, {{"", "cpu"}});
                     }),
                     "unit 'tokens' already has hooks (FSDP's, or an earlier acc::dispatch_model's"));
    }
    CHECK(registry.call(*gpt->units[0]).hooks == nullptr);

    CHECK(contains(error_of([&] {
                     acc::dispatch_model(gpt, {{"blocks", "cpu"}});
                   }),
                   "places no entry over positions, ln.weight, ln.bias, tokens.weight, head.weight: every parameter"));
    CHECK(contains(error_of([&] {
                     acc::dispatch_model(gpt, {{"", "cpu"}, {"blocks.0.fc1", "disk"}}, dir.path);
                   }),
                   "puts 'blocks.0.fc1.weight' on \"disk\", but it runs in unit 'blocks.0', which is on \"cpu\""));
    CHECK(contains(error_of([&] {
                     acc::dispatch_model(gpt, {{"", "cpu"}, {"ln", "disk"}}, dir.path);
                   }),
                   "it runs in the model itself (outside every unit), which is on \"cpu\" (the execution device"));
    CHECK(contains(error_of([&] {
                     acc::dispatch_model(gpt, {{"", "cpu"}, {"head", "disk"}}, dir.path);
                   }),
                   "'head.weight' and 'tokens.weight' are the same (tied) tensor, but the device map puts them on "
                   "\"disk\" and \"cpu\""));
    CHECK(contains(error_of([&] {
                     acc::dispatch_model(gpt, {{"", "cpu"}, {"blocks.1", "disk"}});
                   }),
                   "give acc::dispatch_model an offload_dir"));
    if (!torch::cuda::is_available())
      CHECK(contains(error_of([&] {
                       acc::dispatch_model(gpt, {{"", 0}});
                     }),
                     "puts the model itself (outside every unit) on GPU 0, but this process sees 0 CUDA device(s)"));
    // Nothing was changed by the refused maps: every weight is still there.
    for (const auto& p : gpt->parameters()) CHECK(p.numel() > 0);

    auto model = acc::dispatch_model(gpt, {{"", "cpu"}, {"blocks.1", "disk"}}, dir.path);
    CHECK(contains(error_of([&] { model(token_ids()); }),
                   "unit 'blocks.1' is offloaded: its weights leave after each call, so autograd could not use them"));
    // Parameters that need no gradient need no guard.
    for (const auto& p : gpt->parameters()) p.set_requires_grad(false);
    CHECK(model(token_ids()).sizes() == std::vector<int64_t>{2, kSeq, kVocab});
  }

  TEST_CASE("load_checkpoint_and_dispatch: a sharded checkpoint read into an empty model computes what it computed") {
    TempDir dir;
    auto gpt = make_gpt();
    const auto ids = token_ids();
    torch::NoGradGuard no_grad;
    const auto expected = gpt(ids);
    save_sharded(*gpt, dir.path / "checkpoint");
    const auto block = bytes_of(*gpt->units[0]);
    acc::LoadAndDispatchOptions options;
    options.max_memory = {{"cpu", own_bytes(gpt) + bytes_of(*gpt->tokens) + 3 * block}, {"disk", "1GB"}};
    options.offload_dir = dir.path / "offload";
    {  // "auto": the map the loaded model gets, planned on the empty one.
      auto empty = empty_gpt();
      auto model = acc::load_checkpoint_and_dispatch(empty, dir.path / "checkpoint", "auto", options);
      CHECK(model.device_map() == acc::infer_auto_device_map(gpt, options.max_memory));
      REQUIRE(model.device_map().find("blocks.2") == acc::Placement::disk());
      // Every weight was loaded: the only meta tensors are the disk units' parameters, between calls.
      const auto meta = acc::meta_tensor_names(*empty);
      std::size_t on_disk = 0;
      for (const auto& p : empty->named_parameters())
        on_disk += model.device_map().find(p.key()) == acc::Placement::disk();
      CHECK(meta.size() == on_disk);
      for (const auto& name : meta) CHECK(model.device_map().find(name) == acc::Placement::disk());
      for (int call = 0; call < 2; ++call) {
        CAPTURE(call);
        CHECK(at::equal(model(ids), expected));
        CHECK(empty->units[3]->weight_elements_seen == 2 * 4 * kDim * kDim);
        for (const auto& p : empty->units[3]->parameters()) CHECK(p.is_meta());
      }
      // The disk-offloaded blocks are read from the checkpoint's own files (mapped): nothing was written.
      CHECK(file_names(options.offload_dir).empty());
      CHECK(mapped_file_of(empty->units[3]->fc1_weight_data).parent_path() == dir.path / "checkpoint");
    }
    {  // A map by hand, the tied embedding and head on disk together, from the index file itself.
      auto empty = empty_gpt();
      auto model = acc::load_checkpoint_and_dispatch(
          empty, dir.path / "checkpoint" / acc::weights::kIndexFile,
          acc::DeviceMap{{"", "cpu"}, {"tokens", "disk"}, {"head", "disk"}, {"blocks.1", "disk"}}, options);
      CHECK(at::equal(model(ids), expected));
      CHECK(empty->head->weight.unsafeGetTensorImpl() == empty->tokens->weight.unsafeGetTensorImpl());
      CHECK(empty->tokens->weight.is_meta());
      CHECK(file_names(options.offload_dir).empty());
    }
    {  // In float64: the disk-offloaded units are converted once, into offload_dir. Float to double
       // is exact and both models then run the same float64 kernels: equal bit for bit.
      auto empty = empty_gpt();
      options.dtype = torch::kDouble;
      auto model = acc::load_checkpoint_and_dispatch(
          empty, dir.path / "checkpoint", acc::DeviceMap{{"", "cpu"}, {"blocks.2", "disk"}, {"blocks.3", "disk"}},
          options);
      gpt->to(torch::kDouble);
      CHECK(at::equal(model(ids), gpt(ids)));
      CHECK((empty->ln->weight.scalar_type() == torch::kDouble));
      CHECK(file_names(options.offload_dir) == std::set<std::string>{"blocks.2.safetensors", "blocks.3.safetensors"});
      CHECK((acc::safetensors::File(options.offload_dir / "blocks.3.safetensors").info("blocks.3.fc1.weight").dtype ==
             torch::kDouble));
    }
  }

  TEST_CASE("load_checkpoint_and_dispatch refuses a map, a checkpoint or options it cannot use, naming the fix") {
    TempDir dir;
    auto gpt = make_gpt(2);
    save_sharded(*gpt, dir.path / "checkpoint");
    acc::LoadAndDispatchOptions options;
    auto empty = empty_gpt(2);
    CHECK(
        contains(error_of([&] { acc::load_checkpoint_and_dispatch(empty, dir.path / "checkpoint", "balanced_low_1"); }),
                 "device_map 'balanced_low_1': acc::load_checkpoint_and_dispatch takes an acc::DeviceMap or "
                 "\"auto\" (the same as \"balanced\"), \"balanced\", \"balanced_low_0\" or \"sequential\""));
    options.dtype = torch::kDouble;
    CHECK(contains(error_of([&] {
                     acc::load_checkpoint_and_dispatch(empty, dir.path / "checkpoint",
                                                       acc::DeviceMap{{"", "cpu"}, {"blocks.1", "disk"}}, options);
                   }),
                   "unit 'blocks.1' is on \"disk\" and options.dtype converts its weights (Float in '"));
    CHECK(acc::has_meta_tensors(*empty));  // refused before anything was read
    // Checked before anything is read: a model of another shape stays empty.
    auto larger = empty_gpt(3);
    const auto mismatch = error_of([&] {
      acc::load_checkpoint_and_dispatch(larger, dir.path / "checkpoint", {{"", "cpu"}});
    });
    CHECK(contains(mismatch, (dir.path / "checkpoint" / acc::weights::kIndexFile).string()));
    CHECK(contains(mismatch, "missing keys: blocks.2.ln.weight"));
    CHECK(acc::has_meta_tensors(*larger));
    auto fitting = empty_gpt(2);
    CHECK(contains(
        error_of([&] {
          acc::load_checkpoint_and_dispatch(fitting, dir.path / "checkpoint", {{"", "cpu"}, {"blocks.0.fc1", "disk"}});
        }),
        "only units can be placed apart"));
    CHECK(acc::meta_tensor_names(*fitting).size() == fitting->parameters().size());
  }

  TEST_CASE("load_checkpoint_and_dispatch streams: the host holds the weights placed on the CPU, not the model") {
    // 6 layers of 3072 x 3072 float32, 36 MiB each (216 MiB in all): above glibc's largest mmap
    // threshold (32 MiB), so each weight read gets fresh pages, and the resident memory grows by at
    // least what is written into them.
    TempDir dir;
    constexpr int64_t kLayers = 6, kWidth = 3072;
    const auto layer_bytes = kWidth * kWidth * 4;
    const auto build = [&] {
      torch::nn::Sequential layers;
      for (int64_t i = 0; i < kLayers; ++i) layers->push_back(torch::nn::Linear(kWidth, kWidth));
      return layers;
    };
    torch::NoGradGuard no_grad;
    const auto x = torch::randn({2, kWidth});
    at::Tensor expected;
    {
      torch::manual_seed(5);
      auto saved = build();
      expected = saved->forward(x);
      acc::safetensors::save_file(acc::detail::module_state(*saved), dir.path / "model.safetensors");
    }
    torch::nn::Sequential layers{nullptr};
    {
      const auto empty = acc::init_empty_weights();
      layers = build();
    }
    acc::DeviceMap map{{"", "cpu"}};
    for (int64_t i = 1; i < kLayers; ++i) map.set(std::to_string(i), "disk");
    const auto resident = peak_rss::current();
    peak_rss::restart();
    auto model = acc::load_checkpoint_and_dispatch(layers, dir.path, map);
    const auto growth = peak_rss::peak() - resident;
    // Layer 0 stays on the CPU: the growth is at least its weight. Layers 1-5 are not read at all
    // (dispatch reads them from the checkpoint at each call). Reading the whole file would grow by
    // the model, 216 MiB, and a second copy of any weight in flight by one more layer: the bound,
    // one and a half layers, is a quarter of the model.
    CHECK(growth >= layer_bytes);
    CHECK(growth < layer_bytes * 3 / 2);
    CHECK(at::equal(model(x), expected));
  }

#if ACC_HAS_CUDA
  // On one GPU the dispatched model runs the float32 kernels the model runs, on the same values;
  // only cuBLAS choosing another algorithm could reorder a sum. The dot products here have 16 and
  // 64 terms: 1e-5 relative (100 float32 roundings) covers any order.
  TEST_CASE("CUDA: cpu-offloaded units run on the GPU from pinned memory, the next one prefetched on a copy stream") {
    if (!torch::cuda::is_available()) {
      MESSAGE("no CUDA device");
      return;
    }
    TempDir dir;
    torch::NoGradGuard no_grad;
    const auto ids = token_ids().cuda();
    auto reference = make_gpt(6);
    reference->to(torch::kCUDA);
    const auto expected = reference(ids);
    auto gpt = make_gpt(6);
    auto model = acc::dispatch_model(
        gpt, {{"", 0}, {"blocks.1", "cpu"}, {"blocks.2", "cpu"}, {"blocks.3", "disk"}, {"blocks.4", "cpu"}}, dir.path);
    for (const int i : {1, 2, 4})
      for (const auto& value : hook_of(*gpt->units[i]).weights()->host_values()) CHECK(value.is_pinned());
    for (int call = 0; call < 3; ++call) {
      CAPTURE(call);
      const auto output = model(ids);
      CHECK(output.device() == ids.device());
      CHECK(torch::allclose(output, expected, 1e-5, 1e-6));
      // Between calls the first offloaded unit's copies are queued already (the last one queued
      // them), and no other unit holds weights on the GPU; the disk unit's came the same way.
      CHECK(hook_of(*gpt->units[1]).weights()->prefetched());
      for (const int i : {2, 3, 4}) CHECK_FALSE(hook_of(*gpt->units[i]).weights()->prefetched());
      for (const int i : {1, 2, 3, 4}) {
        CAPTURE(i);
        CHECK(gpt->units[i]->weight_elements_seen == 2 * 4 * kDim * kDim);
        CHECK(gpt->units[i]->fc1->weight.is_meta());
      }
    }
  }

  TEST_CASE("CUDA: load_checkpoint_and_dispatch reads each tensor to its GPU, CPU-offloaded ones into pinned memory") {
    if (!torch::cuda::is_available()) {
      MESSAGE("no CUDA device");
      return;
    }
    TempDir dir;
    torch::NoGradGuard no_grad;
    auto gpt = make_gpt(6);
    save_sharded(*gpt, dir.path / "checkpoint");
    gpt->to(torch::kCUDA);
    const auto ids = token_ids().cuda();
    const auto expected = gpt(ids);
    // Blocks 1 and 2 on the second GPU when there is one (their inputs and outputs cross over).
    const int second = torch::cuda::device_count() >= 2 ? 1 : 0;
    const acc::DeviceMap map{{"", 0},
                             {"blocks.1", second},
                             {"blocks.2", second},
                             {"blocks.3", "cpu"},
                             {"blocks.4", "cpu"},
                             {"blocks.5", "disk"}};
    auto empty = empty_gpt(6);
    acc::LoadAndDispatchOptions options;
    options.offload_dir = dir.path / "offload";
    auto model = acc::load_checkpoint_and_dispatch(empty, dir.path / "checkpoint", map, options);
    CHECK(empty->units[0]->fc1->weight.device() == c10::Device(c10::kCUDA, 0));
    CHECK(empty->units[1]->fc1->weight.device() == c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(second)));
    CHECK(empty->ln->weight.device() == c10::Device(c10::kCUDA, 0));
    for (const int i : {3, 4})
      for (const auto& value : hook_of(*empty->units[i]).weights()->host_values()) CHECK(value.is_pinned());
    for (int call = 0; call < 2; ++call) {
      CAPTURE(call);
      CHECK(torch::allclose(model(ids), expected, 1e-5, 1e-6));
    }
    CHECK(file_names(options.offload_dir).empty());  // block 5 is read from the checkpoint
  }
#endif
}

#include "../../bench/common/peak_rss.hpp"
#include "../error_of.hpp"
#include "../pch.hpp"  // first: libtorch, then doctest
#include "../temp_dir.hpp"
#include "worker.hpp"

#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/module_state.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#if ACC_HAS_GLOO  // written for Gloo ranks on the CPU; the NCCL path has no test of its own yet
// Rank-0 loading (FSDPOptions::cpu_ram_efficient_loading): rank 0 loads the weights, the other
// ranks build the model inside acc::init_empty_weights() and get their shards at prepare. On 2 and
// 3 Gloo ranks (dist/cpu_2_ranks, dist/cpu_3_ranks; alone: -tc='*rank0*'), against the normal path
// where every rank builds the model with real weights: the same shards, the same training, and the
// empty ranks' memory. Under DDP the empty ranks are filled from rank 0 as well.
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

constexpr int kSteps = 4;

int this_rank() { return acc::ProcessEnvironment::from_environment().rank; }

struct BlockImpl : torch::nn::Module {
  BlockImpl() : a(register_module("a", torch::nn::Linear(16, 16))), b(register_module("b", torch::nn::Linear(16, 16))) {
    gain = register_buffer("gain", torch::full({16}, 1.5));
  }
  at::Tensor forward(const at::Tensor& x) { return x + b(torch::tanh(a(x) * gain)); }
  torch::nn::Linear a, b;
  at::Tensor gain;
};
TORCH_MODULE(Block);

// Three blocks declared as FSDP units (3 ranks leave padding in their shards); the embedding, the
// head and a frozen offset stay in the root.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : embed(register_module("embed", torch::nn::Linear(8, 16))),
        head(register_module("head", torch::nn::Linear(16, 3))) {
    for (int i = 0; i < 3; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block()));
    offset = register_parameter("offset", torch::randn({16}), /*requires_grad=*/false);
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = embed(x) + offset;
    for (auto& block : blocks) h = block(h);
    return head(h);
  }
  torch::nn::Linear embed, head;
  std::vector<acc::Unit<Block>> blocks;
  at::Tensor offset;
};
TORCH_MODULE(Net);

Net seeded_net() {
  torch::manual_seed(7);
  return Net();
}

Net empty_net() {
  const auto empty = acc::init_empty_weights();
  return Net();
}

// What rank 0 saved from seeded_net(), read back into an empty net on rank 0 (Accelerate's flow:
// rank 0 loads the checkpoint); an empty net elsewhere.
Net net_loaded_on_rank0(int rank) {
  auto net = empty_net();
  if (rank != 0) return net;
  TempDir dir("acc_rank0");
  acc::safetensors::save_file(acc::detail::module_state(*seeded_net()), dir.path / "model.safetensors");
  acc::load_checkpoint_in_model(*net, dir.path);
  return net;
}

using State = std::map<std::string, at::Tensor>;
State copy_of(const std::vector<std::pair<std::string, at::Tensor>>& entries) {
  State state;
  for (const auto& [name, t] : entries) state[name] = t.to(at::kCPU).clone();
  return state;
}

void check_equal(const State& got, const State& expected) {
  REQUIRE(got.size() == expected.size());
  for (const auto& [name, value] : expected) {
    CAPTURE(name);
    REQUIRE(got.count(name) == 1);
    CHECK(torch::equal(got.at(name), value));
  }
}

struct Run {
  State after_prepare;  // FSDP: this rank's shards; DDP: its module state
  State buffers;        // the module's buffers and frozen parameter after prepare
  State trained;        // the full state after kSteps
};

// Prepares `net` with AdamW, records, trains kSteps on this rank's batches and records again.
template <class Accelerator, class Shards, class Full>
Run prepare_and_train(Accelerator& accelerator, Net net, Shards&& shards, Full&& full) {
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  Run run;
  run.after_prepare = copy_of(shards());
  for (const auto& b : net->named_buffers()) run.buffers[b.key()] = b.value().clone();
  run.buffers["offset"] = net->offset.clone();
  for (int step = 0; step < kSteps; ++step) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(100 + step * accelerator.num_processes() +
                                                              accelerator.process_index());
    const auto x = at::randn({4, 8}, generator);
    optimizer.zero_grad();
    accelerator.backward(torch::nn::functional::cross_entropy(model(x), x.narrow(1, 0, 3).argmax(1)));
    optimizer.step();
  }
  run.trained = copy_of(full());
  return run;
}

template <class Sharding>
Run fsdp_run(Net net, acc::FSDPOptions fsdp) {
  acc::Accelerator<acc::FSDP<acc::Gloo, Sharding>> accelerator(acc::AcceleratorOptions().cpu(true).fsdp(fsdp));
  auto& strategy = accelerator.strategy();
  return prepare_and_train(
      accelerator, net, [&] { return strategy.sharded_state(); }, [&] { return strategy.full_state(*net); });
}

// The same shards after prepare, and (the same computation from the same values, collectives in
// the same order) bit-for-bit the same parameters after training.
template <class Sharding>
void rank0_loading_matches_the_normal_path(acc::FSDPOptions fsdp) {
  const auto normal = fsdp_run<Sharding>(seeded_net(), fsdp);
  const auto rank0 = fsdp_run<Sharding>(net_loaded_on_rank0(this_rank()), fsdp.cpu_ram_efficient_loading(true));
  check_equal(rank0.after_prepare, normal.after_prepare);
  check_equal(rank0.buffers, normal.buffers);
  check_equal(rank0.trained, normal.trained);
  // Trained: not a comparison of two copies of the start.
  CHECK_FALSE(torch::equal(normal.trained.at("block1.a.weight"), seeded_net()->blocks[1]->a->weight));
}

// K layers of 3072 x 3072 float32, 36 MiB each, the children of a Sequential (one FSDP unit each):
// above glibc's largest mmap threshold (32 MiB), so every layer and every unit's flat copy takes
// fresh pages, and resident memory grows by what is written, not by reuse of freed memory.
constexpr int64_t kWidth = 3072, kLayers = 6;
constexpr int64_t kLayerBytes = (kWidth * kWidth + kWidth) * 4, kModelBytes = kLayers * kLayerBytes;
torch::nn::Sequential big_model() {
  torch::nn::Sequential layers;
  for (int64_t i = 0; i < kLayers; ++i) layers->push_back(torch::nn::Linear(kWidth, kWidth));
  return layers;
}

// The growth of resident memory from before the model is built to the end of prepare.
int64_t prepare_growth(bool rank0_loading, bool build_empty) {
  acc::Accelerator<acc::FSDP<acc::Gloo>> accelerator(
      acc::AcceleratorOptions().cpu(true).fsdp(acc::FSDPOptions().cpu_ram_efficient_loading(rank0_loading)));
  accelerator.wait_for_everyone();
  const auto before = peak_rss::current();
  peak_rss::restart();
  torch::nn::Sequential model{nullptr};
  if (build_empty) {
    const auto empty = acc::init_empty_weights();
    model = big_model();
  } else {
    model = big_model();
  }
  const auto prepared = accelerator.prepare(model);
  accelerator.wait_for_everyone();
  return peak_rss::peak() - before;
}

}  // namespace

TEST_SUITE("rank0_loading") {
  TEST_CASE("rank0 loading: FULL_SHARD shards and training equal the normal path's, bit for bit") {
    rank0_loading_matches_the_normal_path<acc::FullShard>(acc::FSDPOptions());
  }
  TEST_CASE("rank0 loading: SHARD_GRAD_OP and NO_SHARD as well") {
    rank0_loading_matches_the_normal_path<acc::ShardGradOp>(acc::FSDPOptions());
    rank0_loading_matches_the_normal_path<acc::NoShard>(acc::FSDPOptions());
  }
  TEST_CASE("rank0 loading: HYBRID_SHARD takes the job's rank 0, not each shard group's first rank") {
    // Shard groups of one rank each: every rank is the first of its own group.
    rank0_loading_matches_the_normal_path<acc::HybridShard>(acc::FSDPOptions().shard_group_size(1));
  }

  TEST_CASE("rank0 loading under DDP: ranks that built the model empty get rank 0's weights at prepare") {
    const auto ddp_run = [](Net net) {
      acc::Accelerator<acc::CPU> accelerator(acc::AcceleratorOptions().cpu(true));
      return prepare_and_train(
          accelerator, net, [&] { return acc::detail::module_state(*net); },
          [&] { return acc::detail::module_state(*net); });
    };
    const auto normal = ddp_run(seeded_net());
    const auto rank0 = ddp_run(net_loaded_on_rank0(this_rank()));
    check_equal(rank0.after_prepare, normal.after_prepare);
    check_equal(rank0.trained, normal.trained);
  }

  TEST_CASE("rank0 loading off: ranks with an empty model fail alike, naming fsdp_cpu_ram_efficient_loading") {
    acc::Accelerator<acc::FSDP<acc::Gloo>> accelerator(acc::AcceleratorOptions().cpu(true));
    auto net = accelerator.process_index() == 0 ? seeded_net() : empty_net();
    const auto message = error_of([&] { (void)accelerator.prepare(net); });
    CHECK(contains(message, "FSDP: the model on rank"));
    CHECK(contains(message, "fsdp_cpu_ram_efficient_loading: true"));
    CHECK(contains(message, "FSDPOptions().cpu_ram_efficient_loading(true)"));
  }

  TEST_CASE("rank0 loading: an empty model on rank 0 fails on every rank, FSDP and DDP") {
    {
      acc::Accelerator<acc::FSDP<acc::Gloo>> accelerator(
          acc::AcceleratorOptions().cpu(true).fsdp(acc::FSDPOptions().cpu_ram_efficient_loading(true)));
      auto net = accelerator.process_index() == 0 ? empty_net() : seeded_net();
      const auto message = error_of([&] { (void)accelerator.prepare(net); });
      CHECK(contains(message, "FSDP: the model on rank 0 has tensors on the meta device"));
      CHECK(contains(message, "acc::load_checkpoint_in_model"));
    }
    acc::Accelerator<acc::CPU> accelerator(acc::AcceleratorOptions().cpu(true));
    auto net = empty_net();
    CHECK(contains(error_of([&] { (void)accelerator.prepare(net); }), "DDP: the model on rank 0 has tensors"));
  }

  TEST_CASE("rank0 loading: a rank that built the model empty holds its shards and one unit, not the model") {
    const auto env = acc::ProcessEnvironment::from_environment();
    const int rank = env.rank, world = env.world_size;
    const auto normal = prepare_growth(false, false);
    const auto rank0 = prepare_growth(true, rank != 0);
    MESSAGE("rank " << rank << " of " << world << ": resident growth to the end of prepare, in models (" << kModelBytes
                    << " bytes): normal " << double(normal) / kModelBytes << ", rank-0 loading "
                    << double(rank0) / kModelBytes);
    // The normal path writes the whole model on every rank, its weights into fresh pages.
    CHECK(normal >= kLayers * kWidth * kWidth * 4);
    if (rank != 0) {
      // An empty rank writes its shards (a layer's shard is at most 1/world of it, plus a few
      // elements of padding) and, while a unit is cut, that unit's full flat copy: at most
      // kModelBytes / world + kLayerBytes, in fresh pages. A quarter of a layer (9 MiB) covers the
      // rest (Gloo's buffers, the communicator, page rounding); a copy of one more layer, or of the
      // model, does not fit.
      CHECK(rank0 < kModelBytes / world + kLayerBytes + kLayerBytes / 4);
    }
  }
}
#endif  // ACC_HAS_GLOO

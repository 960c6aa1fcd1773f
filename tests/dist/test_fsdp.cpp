#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <acc/detail/module_state.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>

#include <torch/optim/sgd.h>

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

// FSDP against DDP, on every rank of the launch (2, 3 and 4 ranks: 3 leaves padding in every
// unit's shard), over Gloo, or over NCCL with ACC_TEST_BACKEND=nccl.
namespace {

bool nccl_backend() {
  const char* backend = std::getenv("ACC_TEST_BACKEND");
  return backend && std::string(backend) == "nccl";
}

// Calls fn with a fresh FSDP accelerator of this sharding on the test's backend.
template <class Sharding, class Fn>
void with_fsdp(Fn&& fn, const acc::AcceleratorOptions& options = {}) {
  if (nccl_backend()) {
#if ACC_HAS_NCCL
    acc::Accelerator<acc::FSDP<acc::Nccl, Sharding>> accelerator(options);
    fn(accelerator);
#endif
  } else {
#if ACC_HAS_GLOO
    acc::Accelerator<acc::FSDP<acc::Gloo, Sharding>> accelerator(options);
    fn(accelerator);
#endif
  }
}

template <class Fn>
void with_ddp(Fn&& fn, const acc::AcceleratorOptions& options) {
  if (nccl_backend()) {
#if ACC_HAS_NCCL
    acc::Accelerator<acc::DDP<acc::Nccl>> accelerator(options);
    fn(accelerator);
#endif
  } else {
#if ACC_HAS_GLOO
    acc::Accelerator<acc::DDP<acc::Gloo>> accelerator(options);
    fn(accelerator);
#endif
  }
}

acc::AcceleratorOptions offloaded() { return acc::AcceleratorOptions().fsdp(acc::FSDPOptions().offload_params(true)); }

constexpr int kSteps = 20;
constexpr double kLr = 0.01;

struct BlockImpl : torch::nn::Module {
  BlockImpl()
      : a(register_module("a", torch::nn::Linear(32, 32))), b(register_module("b", torch::nn::Linear(32, 32))) {}
  at::Tensor forward(const at::Tensor& x) {
    ++calls;
    return x + b(torch::tanh(a(x)));
  }
  torch::nn::Linear a, b;
  int calls = 0;  // forwards run, recomputes included
};
TORCH_MODULE(Block);

// Three blocks declared as FSDP units; the embedding and the head belong to the root unit.
struct NetImpl : torch::nn::Module {
  NetImpl()
      : embed(register_module("embed", torch::nn::Linear(8, 32))),
        head(register_module("head", torch::nn::Linear(32, 3))) {
    for (int i = 0; i < 3; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block()));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = embed(x);
    for (auto& block : blocks) h = block(h);
    return head(h);
  }
  torch::nn::Linear embed, head;
  std::vector<acc::Unit<Block>> blocks;
};
TORCH_MODULE(Net);

// This rank's batch of a step.
template <class Accelerator>
std::pair<at::Tensor, at::Tensor> batch(int step, Accelerator& accelerator) {
  auto generator =
      at::make_generator<at::CPUGeneratorImpl>(1000 + step * accelerator.num_processes() + accelerator.process_index());
  auto x = at::randn({6, 8}, generator);
  return {x.to(accelerator.device()), x.narrow(1, 0, 3).argmax(1).to(accelerator.device())};
}

struct Trained {
  std::map<std::string, at::Tensor> parameters;
  std::vector<double> norms;
};

// 20 AdamW steps with clipping through any Accelerator; the parameters in full on every rank.
template <class Accelerator, class Full>
Trained train(Accelerator& accelerator, Net net, Full&& full_state) {
  const auto dtype = net->parameters().front().scalar_type();
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(kLr).weight_decay(0.1));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  Trained out;
  for (int step = 0; step < kSteps; ++step) {
    const auto [x, y] = batch(step, accelerator);
    optimizer.zero_grad();
    accelerator.backward(torch::nn::functional::cross_entropy(model(x.to(dtype)), y));
    out.norms.push_back(accelerator.clip_grad_norm_(net->parameters(), 0.5));
    optimizer.step();
  }
  for (auto& [name, value] : full_state()) out.parameters[name] = value.to(at::kCPU).clone();
  return out;
}

Net fresh_net() {
  torch::manual_seed(11);
  return Net();
}

// FSDP and DDP compare in float64 (worker.hpp's adamw_float64_drift says why).
Net fresh_float64_net() {
  auto net = fresh_net();
  net->to(at::kDouble);
  return net;
}

Trained ddp_reference() {
  static const Trained reference = [] {
    auto net = fresh_float64_net();
    Trained trained;
    with_accelerator(
        [&](auto& accelerator) { trained = train(accelerator, net, [&] { return acc::detail::module_state(*net); }); });
    return trained;
  }();
  return reference;
}

template <class Accelerator>
void matches_ddp(Accelerator& accelerator) {
  auto net = fresh_float64_net();
  const auto fsdp = train(accelerator, net, [&] { return accelerator.strategy().full_state(*net); });
  const auto ddp = ddp_reference();
  // The root unit and one per block.
  CHECK(accelerator.strategy().unit_names() == std::vector<std::string>{"(model)", "block0", "block1", "block2"});
  REQUIRE(fsdp.parameters.size() == ddp.parameters.size());
  for (const auto& [name, value] : ddp.parameters) {
    CAPTURE(name);
    REQUIRE(fsdp.parameters.count(name) == 1);
    CHECK(at::allclose(fsdp.parameters.at(name), value, /*rtol=*/0, /*atol=*/adamw_float64_drift(kSteps, kLr)));
  }
  // FSDP adds its 4 units' norms in float32 (roundoff 6e-8 each, 5e-7 at most), DDP in float64.
  for (int step = 0; step < kSteps; ++step) CHECK(fsdp.norms[step] == doctest::Approx(ddp.norms[step]).epsilon(1e-5));
  // Trained: the comparison is not of two copies of the start.
  CHECK(!at::allclose(ddp.parameters.at("block1.a.weight"), fresh_float64_net()->blocks[1]->a->weight));
}

// Activation checkpointing recomputes every gradient term as the first forward computed it, and
// each unit's reduction sums the same terms: training is bit for bit the same with it and without.
// run(options, calls) trains and sets calls to the forwards block0 ran (recomputes included).
template <class Run>
void checkpointing_changes_nothing(Run&& run) {
  int plain_calls = 0, recomputed_calls = 0;
  const Trained plain = run(acc::AcceleratorOptions(), plain_calls);
  const Trained recomputed = run(acc::AcceleratorOptions().activation_checkpointing(true), recomputed_calls);
  CHECK(plain_calls == kSteps);
  CHECK(recomputed_calls == 2 * kSteps);
  REQUIRE(recomputed.parameters.size() == plain.parameters.size());
  for (const auto& [name, value] : plain.parameters) {
    CAPTURE(name);
    CHECK(at::equal(recomputed.parameters.at(name), value));
  }
  CHECK(recomputed.norms == plain.norms);
}

template <class Sharding>
Trained train_fsdp(const acc::AcceleratorOptions& options, int& calls) {
  Trained trained;
  with_fsdp<Sharding>(
      [&](auto& accelerator) {
        auto net = fresh_float64_net();
        trained = train(accelerator, net, [&] { return accelerator.strategy().full_state(*net); });
        calls = net->blocks[0]->calls;
      },
      options);
  return trained;
}

// HSDP: units sharded within shard groups, replicated across them. After training, the ranks that
// hold the same shard in different groups hold the same values (every rank's shards gathered and
// compared), and each rank's shards are 1/group of the model.
template <class Accelerator>
void hybrid_matches_ddp(Accelerator& accelerator, int64_t group) {
  CHECK(accelerator.strategy().shard_comm().world_size() == group);
  matches_ddp(accelerator);
  // Between shard groups only the shards' gradients travel: one all-reduce of every unit's shard
  // (float64) per step, kSteps steps; nothing when there is one group.
  std::size_t shard_bytes = 0;
  for (const auto& shard : accelerator.strategy().trained_parameters()) shard_bytes += shard.nbytes();
  const auto traffic = accelerator.strategy().traffic();
  const bool replicated = group < accelerator.num_processes();
  CHECK(traffic.replicas == (replicated ? kSteps * shard_bytes : 0));
  CHECK(traffic.shard_group > 0);
  const int world = accelerator.num_processes();
  for (auto& shard : accelerator.strategy().trained_parameters()) {
    const auto all = accelerator.gather(shard.detach().to(accelerator.device()).reshape({1, -1}));
    REQUIRE(all.size(0) == world);
    for (int r = 0; r < world; ++r) {
      CAPTURE(r);
      CHECK(at::equal(all[r], all[r % group]));
    }
  }
}

// 5 steps of 2 micro-batches through accumulate(), with sync_each_batch as given: the parameters
// in full, and whether the model's parameters held gradients between synchronizing micro-batches.
struct Accumulated {
  std::map<std::string, at::Tensor> parameters;
  bool held_gradients = false;
};
template <class Accelerator>
Accumulated train_accumulated(Accelerator& accelerator, bool sync_each_batch) {
  constexpr int k = 2;
  accelerator.gradient_accumulation_steps(k);
  accelerator.sync_each_batch(sync_each_batch);
  auto net = fresh_float64_net();
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(kLr));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  Accumulated out;
  for (int micro_batch = 0; micro_batch < 5 * k; ++micro_batch) {
    const auto [x, y] = batch(micro_batch, accelerator);
    auto scope = accelerator.accumulate(model);
    accelerator.backward(torch::nn::functional::cross_entropy(model(x.to(at::kDouble)), y));
    if (!accelerator.sync_gradients())
      for (const auto& p : net->parameters()) out.held_gradients = out.held_gradients || p.grad().defined();
    optimizer.step();
    optimizer.zero_grad();
  }
  for (auto& [name, value] : accelerator.strategy().full_state(*net)) out.parameters[name] = value.to(at::kCPU).clone();
  return out;
}

// One SGD step (lr 1) of a float64 model under FSDP FULL_SHARD with `reduce_dtype`: the step is
// the gradient as averaged across ranks; and the bytes its collectives carried.
struct ReducedStep {
  std::map<std::string, at::Tensor> step;
  std::size_t traffic = 0;       // all-gathers and gradient reductions, in the shard group
  std::size_t padded_numel = 0;  // of all units' flat buffers
};
ReducedStep fsdp_step(std::optional<at::ScalarType> reduce_dtype) {
  ReducedStep out;
  with_fsdp<acc::FullShard>(
      [&](auto& accelerator) {
        auto net = fresh_float64_net();
        std::map<std::string, at::Tensor> before;
        for (const auto& [name, value] : acc::detail::module_state(*net)) before[name] = value.clone();
        torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(1.0));
        auto [model, optimizer] = accelerator.prepare(net, sgd);
        const auto gathered_bytes = accelerator.strategy().traffic().shard_group;
        const auto [x, y] = batch(0, accelerator);
        accelerator.backward(torch::nn::functional::cross_entropy(model(x.to(at::kDouble)), y));
        optimizer.step();
        out.traffic = accelerator.strategy().traffic().shard_group - gathered_bytes;
        for (const auto& layout : accelerator.strategy().sharded_layout())
          out.padded_numel += static_cast<std::size_t>(layout.padded_numel);
        for (auto& [name, value] : accelerator.strategy().full_state(*net))
          out.step[name] = before.at(name) - value.to(at::kCPU);
      },
      acc::AcceleratorOptions().fsdp(acc::FSDPOptions().reduce_dtype(reduce_dtype)));
  return out;
}

#if ACC_HAS_NCCL
// fp16 on GPUs: units gathered in half precision with fp32 shards, the loss scaled, an overflow on
// any rank skipping the step everywhere. DDP in fp16 is the reference; FSDP computes with weights
// rounded to fp16 where DDP's autocast rounds each op's inputs, hence the looser tolerance.
void fp16_matches_ddp() {
  acc::Accelerator<acc::FSDP<acc::Nccl, acc::FullShard>, acc::FP16> fsdp_accelerator;
  acc::Accelerator<acc::DDP<acc::Nccl>, acc::FP16> ddp_accelerator;
  auto fsdp_net = fresh_net(), ddp_net = fresh_net();
  const auto fsdp =
      train(fsdp_accelerator, fsdp_net, [&] { return fsdp_accelerator.strategy().full_state(*fsdp_net); });
  const auto ddp = train(ddp_accelerator, ddp_net, [&] { return acc::detail::module_state(*ddp_net); });
  for (const auto& [name, value] : ddp.parameters) {
    CAPTURE(name);
    CHECK(at::allclose(fsdp.parameters.at(name), value, /*rtol=*/1e-2, /*atol=*/2e-3));
  }
  const double scale = fsdp_accelerator.scaler()->scale_value();
  CHECK(scale == ddp_accelerator.scaler()->scale_value());
  // The same scale on every rank: the overflow decisions were taken together.
  const auto scales = fsdp_accelerator.gather_object(scale);
  for (const double other : scales) CHECK(other == scale);
  CHECK(!at::allclose(fsdp.parameters.at("block1.a.weight"), fresh_net()->blocks[1]->a->weight));
}
#endif

}  // namespace

TEST_SUITE("fsdp") {
#if ACC_HAS_NCCL
  TEST_CASE("FSDP FULL_SHARD in fp16 with loss scaling matches DDP in fp16 (GPUs)" * doctest::skip(!nccl_backend())) {
    fp16_matches_ddp();
  }
#endif
  TEST_CASE("FSDP FULL_SHARD matches DDP after 20 AdamW steps with clipping") {
    with_fsdp<acc::FullShard>([](auto& accelerator) { matches_ddp(accelerator); });
  }
  TEST_CASE("FSDP SHARD_GRAD_OP matches DDP after 20 AdamW steps with clipping") {
    with_fsdp<acc::ShardGradOp>([](auto& accelerator) { matches_ddp(accelerator); });
  }
  TEST_CASE("FSDP NO_SHARD matches DDP after 20 AdamW steps with clipping") {
    with_fsdp<acc::NoShard>([](auto& accelerator) { matches_ddp(accelerator); });
  }
  TEST_CASE("activation checkpointing: FSDP FULL_SHARD, SHARD_GRAD_OP and DDP train bit for bit as without it") {
    checkpointing_changes_nothing(train_fsdp<acc::FullShard>);
    checkpointing_changes_nothing(train_fsdp<acc::ShardGradOp>);
    checkpointing_changes_nothing([](const acc::AcceleratorOptions& options, int& calls) {
      Trained trained;
      with_ddp(
          [&](auto& accelerator) {
            auto net = fresh_float64_net();
            trained = train(accelerator, net, [&] { return acc::detail::module_state(*net); });
            calls = net->blocks[0]->calls;
          },
          options);
      return trained;
    });
  }
  // Shard groups of 2 where the world is even (2 x 2 on 4 ranks, one group of 2 on 2), of 1 on 3
  // ranks (three replicas, nothing sharded); and by default one machine's processes.
  TEST_CASE("HYBRID_SHARD and HYBRID_SHARD_ZERO2 match DDP after 20 AdamW steps with clipping") {
    const auto env = acc::ProcessEnvironment::from_environment();
    const int64_t group = env.world_size % 2 == 0 ? 2 : 1;
    const auto sized = acc::AcceleratorOptions().fsdp(acc::FSDPOptions().shard_group_size(group));
    with_fsdp<acc::HybridShard>([&](auto& accelerator) { hybrid_matches_ddp(accelerator, group); }, sized);
    with_fsdp<acc::HybridShardZero2>([&](auto& accelerator) { hybrid_matches_ddp(accelerator, group); }, sized);
    with_fsdp<acc::HybridShard>([&](auto& accelerator) { hybrid_matches_ddp(accelerator, env.local_world_size); });
    // FSDP2's spelling: replicas, the shard group size following.
    const auto replicated = acc::AcceleratorOptions().fsdp(acc::FSDPOptions().replica_count(env.world_size / group));
    with_fsdp<acc::HybridShard>([&](auto& accelerator) { hybrid_matches_ddp(accelerator, group); }, replicated);
  }
  TEST_CASE("HYBRID_SHARD with a shard group size that does not divide the world names the settings") {
    const auto env = acc::ProcessEnvironment::from_environment();
    const auto options = acc::AcceleratorOptions().fsdp(acc::FSDPOptions().shard_group_size(env.world_size + 1));
    const std::string expected = "hybrid sharding shards over groups of " + std::to_string(env.world_size + 1) +
                                 " ranks, which does not divide the " + std::to_string(env.world_size) + " processes";
    CHECK_THROWS_WITH_AS(with_fsdp<acc::HybridShard>([](auto&) {}, options), doctest::Contains(expected.c_str()),
                         acc::Error);
  }
  TEST_CASE("FSDP sync_each_batch reduces every micro-batch into the shards, and trains as accumulating locally") {
    Accumulated local, each;
    with_fsdp<acc::FullShard>([&](auto& accelerator) { local = train_accumulated(accelerator, false); });
    with_fsdp<acc::FullShard>([&](auto& accelerator) { each = train_accumulated(accelerator, true); });
    CHECK(local.held_gradients);       // full gradients wait for the last micro-batch
    CHECK_FALSE(each.held_gradients);  // reduced at once: only the shards' gradients remain
    REQUIRE(each.parameters.size() == local.parameters.size());
    // Summing then reducing, or reducing then summing: float64 rounding, within AdamW's drift bound.
    for (const auto& [name, value] : local.parameters) {
      CAPTURE(name);
      CHECK(at::allclose(each.parameters.at(name), value, /*rtol=*/0, /*atol=*/adamw_float64_drift(5, kLr)));
    }
    CHECK(!at::allclose(local.parameters.at("block1.a.weight"), fresh_float64_net()->blocks[1]->a->weight));
  }
  TEST_CASE("join_uneven_inputs under FSDP is an error naming why and what to do instead") {
    with_fsdp<acc::FullShard>([](auto& accelerator) {
      auto net = fresh_net();
      auto model = accelerator.prepare(net);
      using Join = acc::JoinUnevenInputs<std::decay_t<decltype(accelerator)>, decltype(model)>;
      if (accelerator.num_processes() == 1) {  // alone there is nothing to join, and nothing refused
        CHECK_NOTHROW(Join(accelerator, model));
        return;
      }
      CHECK_THROWS_WITH_AS(Join(accelerator, model),
                           "join_uneven_inputs joins DDP's gradient averaging, and FSDP has other collectives (FSDP "
                           "gathers parameters in forward): give every process the same number of batches "
                           "(even_batches on), or train with distributed_type MULTI_CPU or MULTI_GPU",
                           acc::Error);
    });
  }
  // On GPUs the shards, their gradients and AdamW's state move to pinned host memory and the
  // optimizer steps there; on CPU ranks they are there already and nothing changes.
  TEST_CASE("FSDP with offload_params matches DDP (FULL_SHARD, NO_SHARD); shards and AdamW state in host memory") {
    const auto check = [](auto& accelerator) {
      matches_ddp(accelerator);
      for (const auto& shard : accelerator.strategy().trained_parameters()) {
        CHECK(shard.is_cpu());
        CHECK(shard.grad().is_cpu());
        if (!accelerator.device().is_cpu()) CHECK(shard.is_pinned());
      }
    };
    with_fsdp<acc::FullShard>(check, offloaded());
    with_fsdp<acc::NoShard>(check, offloaded());
  }
}

namespace {

template <class Accelerator>
void holds_a_share(Accelerator& accelerator) {
  const int64_t world = accelerator.num_processes();
  auto net = fresh_net();
  int64_t parameters = 0;
  for (const auto& p : net->parameters()) parameters += p.numel();
  const int64_t ddp_bytes = 4 * parameters * 4;  // parameters, gradients, exp_avg, exp_avg_sq (fp32)

  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  auto& fsdp = accelerator.strategy();
  fsdp.reset_peak();
  for (int step = 0; step < 2; ++step) {
    const auto [x, y] = batch(step, accelerator);
    optimizer.zero_grad();
    accelerator.backward(torch::nn::functional::cross_entropy(model(x), y));
    optimizer.step();
  }
  const auto memory = fsdp.memory();
  int64_t optimizer_bytes = 0;
  for (const auto& group : adamw.param_groups())
    for (const auto& p : group.params()) {
      const auto& state = static_cast<const torch::optim::AdamWParamState&>(
          *adamw.state().at(acc::compat::optimizer_state_key<std::decay_t<decltype(adamw.state())>>(p)));
      optimizer_bytes += static_cast<int64_t>(state.exp_avg().nbytes() + state.exp_avg_sq().nbytes());
    }
  const int64_t held = static_cast<int64_t>(memory.shard_bytes + memory.shard_grad_bytes) + optimizer_bytes;
  const int64_t padding = 4 /*units*/ * world * 4 /*bytes*/ * 4 /*kinds*/;  // at most world-1 elements each
  MESSAGE("rank ", accelerator.process_index(), ": DDP holds ", ddp_bytes, " B, FSDP ", held,
          " B sharded + peak gathered ", memory.peak_gathered_bytes, " B (root unit ", memory.root_unit_bytes,
          " B, largest block ", memory.largest_unit_bytes, " B)");
  CHECK(held <= ddp_bytes / world + padding);
  CHECK(held >= ddp_bytes / world);
  // Outside forward and backward nothing is gathered; inside, the root and at most two blocks
  // (the one computing and the one prefetched).
  CHECK(memory.gathered_bytes_held == 0);
  CHECK(memory.peak_gathered_bytes > 0);
  CHECK(memory.peak_gathered_bytes <= memory.root_unit_bytes + 2 * memory.largest_unit_bytes);
  CHECK(static_cast<int64_t>(memory.peak_gathered_bytes) < parameters * 4);  // never the whole model
}

template <class Accelerator>
void state_dicts_round_trip(Accelerator& accelerator) {
  auto net = fresh_net();
  torch::optim::AdamW adamw(net->parameters(), torch::optim::AdamWOptions(0.01));
  auto [model, optimizer] = accelerator.prepare(net, adamw);
  auto& fsdp = accelerator.strategy();
  auto step = [&](int i) {
    const auto [x, y] = batch(i, accelerator);
    optimizer.zero_grad();
    accelerator.backward(torch::nn::functional::cross_entropy(model(x), y));
    optimizer.step();
  };
  step(0);
  const auto saved_full = fsdp.full_state(*net);
  std::map<std::string, at::Tensor> full(saved_full.begin(), saved_full.end());
  for (auto& [name, value] : full) value = value.to(at::kCPU).clone();
  std::map<std::string, at::Tensor> sharded;
  for (const auto& [name, value] : fsdp.sharded_state()) sharded[name] = value.clone();
  const auto probe = at::randn({5, 8}).to(accelerator.device());
  const auto expected = model(probe).detach();

  step(1);  // moves away from the saved state
  CHECK(!at::allclose(model(probe), expected));
  fsdp.load_full_state(*net, full);
  CHECK(at::allclose(model(probe), expected, 1e-6, 1e-6));

  step(2);
  fsdp.load_sharded_state(sharded);
  CHECK(at::allclose(model(probe), expected, 1e-6, 1e-6));

  // The full state is the plain model's state dict.
  auto plain = Net();
  acc::detail::load_module_state(*plain, full);
  CHECK(at::allclose(plain(probe.cpu()), expected.cpu(), 1e-5, 1e-5));

  // A sharded state from another world size is refused with the reason.
  auto wrong = sharded;
  wrong.begin()->second = at::zeros({wrong.begin()->second.numel() + 1});
  CHECK_THROWS_WITH_AS(fsdp.load_sharded_state(wrong), doctest::Contains("another number of processes"), acc::Error);
  // A full state missing a key is refused with the key.
  auto missing = full;
  missing.erase("head.bias");
  CHECK_THROWS_WITH_AS(fsdp.load_full_state(*net, missing), doctest::Contains("missing keys: head.bias"), acc::Error);
}
}  // namespace

TEST_SUITE("fsdp") {
  TEST_CASE("FSDP FULL_SHARD holds 1/N of DDP's parameters, gradients and AdamW state, plus gathered units") {
    with_fsdp<acc::FullShard>([](auto& accelerator) { holds_a_share(accelerator); });
  }

  TEST_CASE("FSDP reduce_dtype: gradients average in the shards' dtype, or in float32 or bf16 at fewer bytes") {
    // The exact average: every rank's own gradient (a plain float64 copy of the model), averaged
    // in float64, and the largest of their magnitudes, element by element.
    std::map<std::string, at::Tensor> mean, largest;
    int world = 1;
    with_accelerator([&](auto& accelerator) {
      world = accelerator.num_processes();
      auto net = fresh_float64_net();
      const auto [x, y] = batch(0, accelerator);
      torch::nn::functional::cross_entropy(net(x.cpu().to(at::kDouble)), y.cpu()).backward();
      for (const auto& p : net->named_parameters()) {
        const auto grad = p.value().grad().to(accelerator.device());
        mean[p.key()] = accelerator.reduce(grad, acc::ReduceOp::mean).cpu();
        largest[p.key()] = accelerator.reduce(grad.abs(), acc::ReduceOp::max).cpu();
      }
    });
    const auto exact = fsdp_step(std::nullopt);
    for (const auto& [dtype, roundoff, element_bytes] : std::vector<std::tuple<at::ScalarType, double, std::size_t>>{
             {at::kFloat, std::ldexp(1.0, -24), 4}, {at::kBFloat16, std::ldexp(1.0, -8), 2}}) {
      CAPTURE(dtype);
      const auto rounded = fsdp_step(dtype);
      // Averaged in a dtype of unit roundoff u, each rank's gradient rounds once when cast, each of
      // the world - 1 partial sums and the division once more: at most (world + 1) u max_r |g_r|
      // per element. The float64 reference and the subtraction p - (p - g) add about 1e-16 |p|.
      bool changed = false;
      for (const auto& [name, step] : rounded.step) {
        CAPTURE(name);
        const auto error = (step - mean.at(name)).abs();
        const auto bound = (world + 1) * roundoff * largest.at(name) + 1e-12;
        CHECK(at::le(error, bound).all().item<bool>());
        changed = changed || !at::equal(step, exact.step.at(name));
      }
      CHECK(changed);  // the reduction did run in the lower precision
      // The all-gathers are float64 either way; each unit's reduce-scatter carries its padded
      // flat gradient in the reduction's dtype.
      CHECK(exact.traffic - rounded.traffic == exact.padded_numel * (sizeof(double) - element_bytes));
    }
    // Unset, the gradients average in float64, the shards' dtype: as exact as the reference.
    for (const auto& [name, step] : exact.step) {
      CAPTURE(name);
      CHECK(at::allclose(step, mean.at(name), /*rtol=*/0, /*atol=*/1e-12));
    }
  }

  TEST_CASE("FSDP state dicts: full and sharded round-trip; a full one loads into a plain model") {
    with_fsdp<acc::FullShard>([](auto& accelerator) { state_dicts_round_trip(accelerator); });
  }
}

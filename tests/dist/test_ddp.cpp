#include "../pch.hpp"  // first: libtorch, then doctest
#include "worker.hpp"

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <set>
#include <vector>

namespace {

constexpr int kSteps = 20;
constexpr int64_t kBatch = 4;  // per rank
constexpr int64_t kSamples = kSteps * kBatch * 4 * 2;
constexpr double kLr = 1e-2;
// Trained in float64, DDP ends within this of one process (worker.hpp says why).
constexpr double kTolerance = adamw_float64_drift(kSteps, kLr);

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(8, 64))),
        fc2(register_module("fc2", torch::nn::Linear(64, 64))),
        fc3(register_module("fc3", torch::nn::Linear(64, 64))),
        head(register_module("head", torch::nn::Linear(64, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return head(torch::tanh(fc3(torch::tanh(fc2(torch::tanh(fc1(x))))))); }
  torch::nn::Linear fc1, fc2, fc3, head;
};
TORCH_MODULE(Mlp);

// A model with a layer its forward never uses.
struct WithUnusedImpl : torch::nn::Module {
  WithUnusedImpl()
      : used(register_module("used", torch::nn::Linear(8, 3))),
        unused(register_module("unused", torch::nn::Linear(8, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return used(x); }
  torch::nn::Linear used, unused;
};
TORCH_MODULE(WithUnused);

struct Data {
  at::Tensor x, y;
  Data() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(99);
    x = at::randn({kSamples, 8}, generator, at::kDouble);
    y = x.narrow(1, 0, 3).argmax(1);
  }
  std::size_t size() const { return kSamples; }
  torch::data::Example<> get(std::size_t i) const { return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]}; }
};

at::Tensor loss_of(torch::nn::Module& model, const at::Tensor& out, const at::Tensor& target) {
  (void)model;
  return torch::nn::functional::cross_entropy(out, target);
}

// The reference: one process, batches of world * micro_batches * kBatch samples,
// on the same device as the processes it is compared with.
std::vector<at::Tensor> single_process(const Data& data, int world, int micro_batches, int steps, c10::Device device) {
  torch::manual_seed(5);
  Mlp net;
  net->to(device, at::kDouble);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
  const int64_t global = world * micro_batches * kBatch;
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    auto loss = loss_of(*net, net(data.x.narrow(0, step * global, global).to(device)),
                        data.y.narrow(0, step * global, global).to(device));
    loss.backward();
    opt.step();
  }
  std::vector<at::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

// Largest |a - b| over all tensors.
double largest_difference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, (a[i].cpu() - b[i].cpu()).abs().max().item().toDouble());
  return worst;
}

std::vector<at::Tensor> parameters_of(const Mlp& net) {
  std::vector<at::Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.detach().clone());
  return out;
}

// Rank r's rows of global batch `step` (of `micro` micro-batches per rank): micro-batch m of
// rank r is the (m * world + r)-th block of kBatch rows, so the union is the whole global batch.
at::Tensor rows(const at::Tensor& all, int step, int micro, int m, int rank, int world) {
  const int64_t global = world * micro * kBatch;
  return all.narrow(0, step * global + (m * world + rank) * kBatch, kBatch);
}

}  // namespace

TEST_CASE("DDP equals one process on the N-times larger batch, for several bucket sizes") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    const Data data;
    const auto reference = single_process(data, world, 1, kSteps, accelerator.device());
    auto& comm = accelerator.strategy().comm();
    using Comm = std::decay_t<decltype(comm)>;
    // one bucket per parameter, a few buckets, everything in one bucket
    for (const double cap : {0.0, 0.02, 1000.0}) {
      CAPTURE(cap);
      torch::manual_seed(5);
      Mlp net;
      net->to(accelerator.device(), at::kDouble);
      std::vector<std::pair<std::string, at::Tensor>> named;
      for (const auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value());
      acc::AllReduceHook hook;
      acc::detail::GradientBuckets<Comm, acc::AllReduceHook> buckets(
          comm, hook, named, acc::DDPOptions().bucket_cap_mb(cap).first_bucket_cap_mb(std::min(cap, 1.0)));
      CHECK(buckets.bucket_count() == (cap == 0.0 ? 8u : cap == 1000.0 ? 1u : buckets.bucket_count()));
      if (cap == 0.02) CHECK(buckets.bucket_count() > 1u);
      torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
      for (int step = 0; step < kSteps; ++step) {
        buckets.zero_grad();
        const auto x = rows(data.x, step, 1, 0, rank, world).to(accelerator.device());
        const auto y = rows(data.y, step, 1, 0, rank, world).to(accelerator.device());
        auto loss = loss_of(*net, net(x), y);
        buckets.prepare_for_backward(loss);
        loss.backward();
        buckets.finish();
        opt.step();
      }
      const double difference = largest_difference(parameters_of(net), reference);
      if (rank == 0)
        std::cout << "DDP equivalence: " << world << " ranks, bucket_cap_mb " << cap << " (" << buckets.bucket_count()
                  << " buckets), largest difference after " << kSteps << " AdamW steps: " << difference << "\n";
      CHECK(difference < kTolerance);
    }
  });
}

TEST_CASE("DDP through prepare: the shuffled, sharded loader and the accelerator give the same result") {
  with_accelerator([](auto& accelerator) {
    const int world = accelerator.num_processes();
    const Data data;
    // the reference sees the global batches in the order the shared shuffle puts them
    const auto order = acc::Shuffled::indices(kSamples, 17, 0);
    Data shuffled;
    const auto index = at::tensor(order, at::kLong);
    shuffled.x = data.x.index_select(0, index);
    shuffled.y = data.y.index_select(0, index);
    const auto reference = single_process(shuffled, world, 1, kSteps, accelerator.device());

    torch::manual_seed(5);
    Mlp net;
    net->to(at::kDouble);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
    auto [model, optimizer, loader] =
        accelerator.prepare(net, opt, acc::DataLoader(data, acc::DataLoaderOptions(kBatch).seed(17)));
    int step = 0;
    for (auto& batch : loader) {
      if (step++ == kSteps) break;
      optimizer.zero_grad();
      accelerator.backward(loss_of(*net, model(batch.data), batch.target));
      optimizer.step();
    }
    const double difference = largest_difference(parameters_of(net), reference);
    if (accelerator.is_main_process())
      std::cout << "DDP through prepare: " << world << " ranks, largest difference: " << difference << "\n";
    CHECK(difference < kTolerance);
  });
}

// Trains a float64 Mlp, started as the one-process reference is, for `steps` optimizer steps of
// k micro-batches per rank, `micro_batch(model, optimizer, x, y, m)` running micro-batch m; returns
// the largest difference from the reference (one batch k times larger per step).
template <class Accelerator, class MicroBatch>
double micro_batches_against_reference(Accelerator& accelerator, int k, int steps, MicroBatch&& micro_batch) {
  const int rank = accelerator.process_index(), world = accelerator.num_processes();
  const Data data;
  const auto reference = single_process(data, world, k, steps, accelerator.device());
  torch::manual_seed(5);
  Mlp net;
  net->to(at::kDouble);
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  for (int step = 0; step < steps; ++step)
    for (int m = 0; m < k; ++m)
      micro_batch(model, optimizer, rows(data.x, step, k, m, rank, world).to(accelerator.device()),
                  rows(data.y, step, k, m, rank, world).to(accelerator.device()), m);
  return largest_difference(parameters_of(net), reference);
}

TEST_CASE("gradient accumulation: k micro-batches equal one batch k times larger; no_sync sends nothing") {
  with_accelerator([](auto& accelerator) {
    constexpr int k = 3, steps = 6;
    auto& strategy = accelerator.strategy();
    const bool several = accelerator.num_processes() > 1;
    // no_sync carries the micro-steps and the loss is averaged by hand (the accelerator's own
    // accumulation is the next test's)
    const double difference = micro_batches_against_reference(
        accelerator, k, steps, [&](auto& model, auto& optimizer, auto x, auto y, int m) {
          const auto before = strategy.gradient_collectives();
          if (m + 1 < k) {
            auto local = accelerator.no_sync(model);
            CHECK(accelerator.sync_gradients());  // no_sync holds back communication, not the step
            accelerator.backward(torch::nn::functional::cross_entropy(model(x), y) / k);
            CHECK(strategy.gradient_collectives() == before);  // nothing was sent
          } else {
            accelerator.backward(torch::nn::functional::cross_entropy(model(x), y) / k);
            if (several) CHECK(strategy.gradient_collectives() > before);  // alone, nothing is sent
            optimizer.step();
            optimizer.zero_grad();
          }
        });
    if (accelerator.is_main_process())
      std::cout << "gradient accumulation: " << accelerator.num_processes() << " ranks x " << k
                << " micro-batches, largest difference: " << difference << "\n";
    CHECK(difference < adamw_float64_drift(steps, kLr));
  });
}

TEST_CASE("sync_each_batch: every micro-batch is all-reduced, and k of them still equal one batch k times larger") {
  with_accelerator([](auto& accelerator) {
    constexpr int k = 3, steps = 6;
    auto& strategy = accelerator.strategy();
    const bool several = accelerator.num_processes() > 1;
    accelerator.gradient_accumulation_steps(k);
    accelerator.sync_each_batch(true);
    const double difference = micro_batches_against_reference(
        accelerator, k, steps, [&](auto& model, auto& optimizer, auto x, auto y, int m) {
          auto micro_step = accelerator.accumulate(model);
          CHECK(accelerator.sync_gradients() == (m + 1 == k));  // the optimizer still steps every k-th
          const auto before = strategy.gradient_collectives();
          accelerator.backward(torch::nn::functional::cross_entropy(model(x), y));
          if (several) CHECK(strategy.gradient_collectives() > before);  // alone, nothing is sent
          optimizer.step();
          optimizer.zero_grad();
        });
    accelerator.sync_each_batch(false);
    accelerator.gradient_accumulation_steps(1);
    // The averages of earlier micro-batches are equal on every rank, so averaging them again with
    // the next one's gradients changes them only by rounding: AdamW's float64 drift bounds it.
    CHECK(difference < adamw_float64_drift(steps, kLr));
  });
}

TEST_CASE("clip_grad_norm_ sees the synchronized gradients and returns the total norm") {
  with_accelerator([](auto& accelerator) {
    const int rank = accelerator.process_index();
    torch::manual_seed(5);
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    const auto x = at::randn({kBatch, 8}, at::TensorOptions(accelerator.device())) * (rank + 1);
    accelerator.backward(model(x).pow(2).sum());
    const double norm = accelerator.clip_grad_norm_(net->parameters(), 0.5);
    const auto norms = accelerator.gather(at::tensor(std::vector<double>{norm}, at::kDouble));
    CHECK(norms.min().item().toDouble() == doctest::Approx(norms.max().item().toDouble()));
    double clipped = 0;
    for (const auto& p : net->parameters()) clipped += p.grad().pow(2).sum().item().toDouble();
    CHECK(std::sqrt(clipped) == doctest::Approx(std::min(norm, 0.5)).epsilon(1e-3));
    optimizer.zero_grad();
  });
}

TEST_CASE("a parameter without gradient is an error naming it; find_unused_parameters trains on") {
  with_accelerator([](auto& accelerator) {
    WithUnused net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    const auto x = at::randn({kBatch, 8}, at::TensorOptions(accelerator.device()));
    CHECK_THROWS_WITH_AS(
        accelerator.backward(model(x).sum()),
        doctest::Contains("these parameters got no gradient in this step: 'unused.weight', 'unused.bias'"), acc::Error);
    optimizer.zero_grad();

    // The same model with the option: the unused layer's gradient is zero on every rank.
    auto& comm = accelerator.strategy().comm();
    using Comm = std::decay_t<decltype(comm)>;
    WithUnused other;
    other->to(accelerator.device());
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : other->named_parameters()) named.emplace_back(p.key(), p.value());
    acc::AllReduceHook hook;
    acc::detail::GradientBuckets<Comm, acc::AllReduceHook> buckets(comm, hook, named,
                                                                   acc::DDPOptions().find_unused_parameters(true));
    for (int step = 0; step < 3; ++step) {
      buckets.zero_grad();
      auto loss = other(x * (accelerator.process_index() + 1)).sum();
      buckets.prepare_for_backward(loss);
      loss.backward();
      buckets.finish();
      CHECK(other->unused->weight.grad().abs().sum().item().toDouble() == 0.0);
      const auto grads = accelerator.gather(other->used->weight.grad().reshape({1, -1}));
      for (int64_t r = 1; r < grads.size(0); ++r) CHECK(at::equal(grads[r], grads[0]));
    }
  });
}

namespace {
// A layer run twice, each time under acc::checkpoint when asked: its gradient then arrives twice in
// one backward (each checkpoint's recomputation runs a backward of its own). `spare` is used only
// when asked.
struct TwiceImpl : torch::nn::Module {
  TwiceImpl()
      : shared(register_module("shared", torch::nn::Linear(8, 8))),
        head(register_module("head", torch::nn::Linear(8, 3))),
        spare(register_module("spare", torch::nn::Linear(8, 3))) {}
  at::Tensor forward(const at::Tensor& x, bool checkpointed, bool use_spare = false) {
    auto block = [this](const at::Tensor& h) { return torch::tanh(shared(h)); };
    const auto h = checkpointed ? acc::checkpoint(block, acc::checkpoint(block, x)) : block(block(x));
    return use_spare ? head(h) + spare(h) : head(h);
  }
  torch::nn::Linear shared, head, spare;
};
TORCH_MODULE(Twice);

template <class Comm>
std::unique_ptr<acc::detail::GradientBuckets<Comm, acc::AllReduceHook>> buckets_of(Comm& comm, acc::AllReduceHook& hook,
                                                                                   torch::nn::Module& net,
                                                                                   const acc::DDPOptions& options) {
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : net.named_parameters()) named.emplace_back(p.key(), p.value());
  return std::make_unique<acc::detail::GradientBuckets<Comm, acc::AllReduceHook>>(comm, hook, named, options);
}

// One step of backward through the buckets, as DDP drives them.
template <class Buckets>
void backward_through(Buckets& buckets, const at::Tensor& loss) {
  buckets.zero_grad();
  buckets.prepare_for_backward(loss);
  loss.backward();
  buckets.finish();
}
}  // namespace

TEST_CASE(
    "static_graph: a layer whose gradient arrives twice (run twice under acc::checkpoint) is averaged as without "
    "checkpointing, and the unused parameters the first step found are not searched for again") {
  with_accelerator([](auto& accelerator) {
    auto& comm = accelerator.strategy().comm();
    acc::AllReduceHook hook;
    torch::manual_seed(3);
    Twice plain;
    torch::manual_seed(3);
    Twice checkpointed;
    plain->to(accelerator.device());
    checkpointed->to(accelerator.device());
    // A bucket per parameter: both models all-reduce the same tensors whatever order their gradients
    // arrive in, so that the sums across ranks add in the same order (with 3 or more ranks another
    // bucket layout could round differently).
    const auto unused = acc::DDPOptions().find_unused_parameters(true).bucket_cap_mb(0);
    auto plain_buckets = buckets_of(comm, hook, *plain, unused);
    auto static_buckets = buckets_of(comm, hook, *checkpointed, acc::DDPOptions(unused).static_graph(true));
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      // Each rank its own input, so that the all-reduce has something to average.
      const auto x =
          at::randn({kBatch, 8}, at::TensorOptions(accelerator.device())) * (accelerator.process_index() + 1);
      backward_through(*plain_buckets, plain(x, false).pow(2).sum());
      backward_through(*static_buckets, checkpointed(x, true).pow(2).sum());
      // The same two terms summed (in either order the same bits: two terms commute), then averaged
      // alike; checkpointing recomputes the same values with the same kernels.
      CHECK(at::equal(checkpointed->shared->weight.grad(), plain->shared->weight.grad()));
      CHECK(at::equal(checkpointed->shared->bias.grad(), plain->shared->bias.grad()));
      CHECK(at::equal(checkpointed->head->weight.grad(), plain->head->weight.grad()));
      CHECK(checkpointed->spare->weight.grad().abs().sum().item().toDouble() == 0.0);
      const auto grads = accelerator.gather(checkpointed->shared->weight.grad().reshape({1, -1}));
      for (int64_t r = 1; r < grads.size(0); ++r) CHECK(at::equal(grads[r], grads[0]));
    }
    // The first step found `spare` unused, and no step searches again: a step that uses it is told
    // (which of its two tensors comes first is autograd's choice).
    const auto x = at::randn({kBatch, 8}, at::TensorOptions(accelerator.device()));
    static_buckets->zero_grad();
    const auto loss = checkpointed(x, true, /*use_spare=*/true).sum();
    static_buckets->prepare_for_backward(loss);
    CHECK_THROWS_WITH_AS(loss.backward(),
                         doctest::Contains("received its gradient 2 times in this step, 1 times in the first one"),
                         std::exception);

    // Without static_graph the second arrival is an error that names the option.
    torch::manual_seed(3);
    Twice other;
    other->to(accelerator.device());
    auto buckets = buckets_of(comm, hook, *other, acc::DDPOptions());
    buckets->zero_grad();
    const auto twice = other(x, true).sum();
    buckets->prepare_for_backward(twice);
    CHECK_THROWS_WITH_AS(twice.backward(), doctest::Contains("DDPOptions().static_graph(true)"), std::exception);
  });
}

namespace {
// The gradient buckets DDP makes for an Mlp with the default options.
template <class Comm>
std::size_t buckets_of_an_mlp(Comm& comm, c10::Device device) {
  Mlp net;
  net->to(device);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : net->named_parameters()) named.emplace_back(p.key(), p.value());
  acc::AllReduceHook hook;
  return acc::detail::GradientBuckets<Comm, acc::AllReduceHook>(comm, hook, named, acc::DDPOptions()).bucket_count();
}
}  // namespace

TEST_CASE("preparing a model again replaces its gradient buckets: one all-reduce per bucket and step") {
  with_accelerator([](auto& accelerator) {
    auto& strategy = accelerator.strategy();
    const auto buckets = buckets_of_an_mlp(strategy.comm(), accelerator.device());
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto first = accelerator.prepare(net);
    const auto once = strategy.bucket_count();
    auto [model, optimizer] = accelerator.prepare(net, opt);
    CHECK(strategy.bucket_count() == once);
    for (int step = 0; step < 3; ++step) {
      optimizer.zero_grad();
      const auto before = strategy.gradient_collectives();
      const auto x =
          at::randn({kBatch, 8}, at::TensorOptions(accelerator.device())) * (accelerator.process_index() + 1);
      accelerator.backward(model(x).pow(2).sum());
      CHECK(strategy.gradient_collectives() - before == static_cast<int64_t>(buckets));
      const auto grads = accelerator.gather(net->fc1->weight.grad().reshape({1, -1}));
      for (int64_t r = 1; r < grads.size(0); ++r) CHECK(at::equal(grads[r], grads[0]));
      optimizer.step();
    }
  });
}

TEST_CASE("accumulate() inside no_sync() keeps communication off, and its step still steps") {
  with_accelerator([](auto& accelerator) {
    auto& strategy = accelerator.strategy();
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    const auto held = net->head->weight.detach().clone();
    const auto before = strategy.gradient_collectives();
    {
      auto local = accelerator.no_sync(model);
      auto step = accelerator.accumulate(model);  // gradient_accumulation_steps 1: a synchronizing step
      CHECK(accelerator.sync_gradients());
      const auto x = at::randn({kBatch, 8}, at::TensorOptions(accelerator.device()));
      accelerator.backward(model(x).pow(2).sum());
      CHECK(strategy.gradient_collectives() == before);
      optimizer.step();
    }
    CHECK_FALSE(at::equal(held, net->head->weight));
    optimizer.zero_grad();
  });
}

TEST_CASE("free_memory drops every gradient bucket; a model prepared after it synchronizes as the first did") {
  with_accelerator([](auto& accelerator) {
    auto& strategy = accelerator.strategy();
    const auto buckets = buckets_of_an_mlp(strategy.comm(), accelerator.device());
    Mlp kept;
    auto first = accelerator.prepare(kept);
    REQUIRE(strategy.bucket_count() > 0);
    accelerator.free_memory();
    CHECK(strategy.bucket_count() == 0);
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    CHECK(strategy.bucket_count() == buckets);
    const auto before = strategy.gradient_collectives();
    const auto x = at::randn({kBatch, 8}, at::TensorOptions(accelerator.device())) * (accelerator.process_index() + 1);
    accelerator.backward(model(x).pow(2).sum());
    CHECK(strategy.gradient_collectives() - before == static_cast<int64_t>(buckets));
    const auto grads = accelerator.gather(net->fc1->weight.grad().reshape({1, -1}));
    for (int64_t r = 1; r < grads.size(0); ++r) CHECK(at::equal(grads[r], grads[0]));
    optimizer.step();
    optimizer.zero_grad();
  });
}

namespace {

// A user's communication hook: averages as the default does, and notes the size of each bucket it
// is given.
struct RecordingHook {
  std::vector<int64_t> bucket_sizes;
  template <class Comm>
  auto operator()(Comm& comm, at::Tensor& bucket) {
    bucket_sizes.push_back(bucket.numel());
    return acc::AllReduceHook{}(comm, bucket);
  }
};

// One synchronized backward of an Mlp under DDP<Comm, Hook> (buckets of 20 KB); each of its
// gradients with every rank's own gradient of that parameter (world x elements, float64, CPU).
template <class Accelerator>
std::vector<std::pair<at::Tensor, at::Tensor>> hooked_step(Accelerator& accelerator) {
  torch::manual_seed(5 + accelerator.process_index());  // prepare broadcasts rank 0's weights
  Mlp net;
  auto model = accelerator.prepare(net);
  // The same weights on the same device, for this rank's own gradients: the same kernels compute
  // them as DDP's, so only the hook's averaging separates the two (on a GPU, CPU kernels would
  // round differently).
  Mlp local;
  local->to(accelerator.device());
  {
    at::NoGradGuard no_grad;
    for (std::size_t i = 0; i < net->parameters().size(); ++i) local->parameters()[i].copy_(net->parameters()[i]);
  }
  const auto x = (at::randn({kBatch, 8}) * (accelerator.process_index() + 1)).to(accelerator.device());
  local(x).pow(2).sum().backward();
  accelerator.backward(model(x).pow(2).sum());
  std::vector<std::pair<at::Tensor, at::Tensor>> gradients;
  for (std::size_t i = 0; i < net->parameters().size(); ++i) {
    const auto own = local->parameters()[i].grad().reshape({1, -1});
    gradients.emplace_back(net->parameters()[i].grad().reshape({-1}).to(at::kCPU, at::kDouble),
                           accelerator.gather(own).to(at::kCPU, at::kDouble));
  }
  {  // gradients accumulated locally: no bucket goes to the hook
    auto no_communication = accelerator.no_sync(model);
    accelerator.backward(model(x).pow(2).sum());
  }
  return gradients;
}

acc::AcceleratorOptions small_buckets() {
  return acc::AcceleratorOptions().ddp(acc::DDPOptions().bucket_cap_mb(0.02).first_bucket_cap_mb(0.02));
}

}  // namespace

TEST_CASE("a communication hook gets every bucket of a synchronized step and leaves the ranks' average in it") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    acc::Accelerator<acc::DDP<Comm, RecordingHook>> accelerator(small_buckets());
    const auto gradients = hooked_step(accelerator);
    const auto& sizes = accelerator.strategy().hook().bucket_sizes;
    REQUIRE(accelerator.strategy().bucket_count() > 1u);
    CHECK(sizes.size() == accelerator.strategy().bucket_count());  // once each, and not under no_sync
    int64_t elements = 0;
    for (const auto& [averaged, all] : gradients) elements += averaged.numel();
    CHECK(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) == elements);
    // An fp32 sum over the ranks in the collective's order, divided by their number: within
    // world * 2^-24 of the sum of their |gradients| from the exact mean.
    const double world = accelerator.num_processes();
    for (const auto& [averaged, all] : gradients)
      CHECK((averaged - all.mean(0)).abs().le(all.abs().sum(0) * (world * std::ldexp(1.0, -24))).all().item().toBool());
  });
}

TEST_CASE("the fp16 compression hook averages within fp16's rounding of the gradients and their sum") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    acc::Accelerator<acc::DDP<Comm, acc::FP16CompressionHook>> accelerator(small_buckets());
    const auto gradients = hooked_step(accelerator);
    // Each rank's gradient rounded to fp16, world - 1 rounded additions and a rounded division:
    // within gamma(world + 1) / world of the sum of the |gradients| (gamma(n) = n u / (1 - n u),
    // u = 2^-11), and 2^-25 for each of those 2 * world roundings below fp16's normal range.
    const double world = accelerator.num_processes(), u = std::ldexp(1.0, -11);
    const double relative = (world + 1) * u / (1 - (world + 1) * u) / world, absolute = 3 * std::ldexp(1.0, -25);
    double largest = 0;
    for (const auto& [averaged, all] : gradients) {
      const auto error = (averaged - all.mean(0)).abs();
      CHECK(error.le(all.abs().sum(0) * relative + absolute).all().item().toBool());
      largest = std::max(largest, error.max().item().toDouble());
    }
    CHECK(largest > 0);  // fp16 did round: the hook ran
  });
}

namespace {

// One layer, y = W x + b, whose gradients on rank r are (r + 1) c e_k^T and (r + 1) c: of rank
// one, and the same direction c on every rank, so that their mean has rank one too.
struct RankOneGradients {
  static constexpr int64_t kIn = 48, kOut = 64, kColumn = 5;
  // The layer, `bias` or not; `in` = `out` with no bias makes its bucket one square matrix.
  static torch::nn::Linear layer(int64_t in, int64_t out, bool bias) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  }
  // Backward of rank r's loss: (r + 1) * sum(c * (W e_k + b)), c positive and not constant.
  template <class Accelerator, class Model>
  static void backward(Accelerator& accelerator, Model& model, int64_t in, int64_t out) {
    const auto device = accelerator.device();
    const auto x = at::zeros({1, in}).index_fill_(1, at::tensor({kColumn}), 1.0).to(device);
    const auto c = at::linspace(1.0, 2.0, out).to(device);
    const double a = accelerator.process_index() + 1;
    accelerator.backward(model(x).squeeze(0).mul(c).sum().mul(a));
  }
  // The ranks' mean gradient of W and of b: (world + 1) / 2 times c e_k^T and c.
  static std::pair<at::Tensor, at::Tensor> mean(int64_t world, int64_t in, int64_t out) {
    const auto c = at::linspace(1.0, 2.0, out, at::kDouble) * (static_cast<double>(world + 1) / 2);
    auto weight = at::zeros({out, in}, at::kDouble);
    weight.select(1, kColumn).copy_(c);
    return {weight, c};
  }
};

// PowerSGD's result for gradients like RankOneGradients': every product it forms has one
// nonzero term or terms of one sign (no cancellation), so each element is within a relative
// gamma of its count of roundings: P = M Q (1 product, then a sum over the ranks), P's norm (n
// terms) and division, Q = M^T P (n terms, then the ranks' mean), P Q^T (1 product): fewer than
// 2n + 2 world + 16 of float32's unit roundoff, u = 2^-24. The exact zeros stay exact.
bool within_power_sgd_rounding(const at::Tensor& averaged, const at::Tensor& exact, int64_t world) {
  const auto n = static_cast<double>(averaged.size(0));
  const double relative = (2 * n + 2 * static_cast<double>(world) + 16) * std::ldexp(1.0, -24);
  const auto got = averaged.to(at::kCPU, at::kDouble);
  return (got - exact).abs().le(exact.abs() * relative).all().item<bool>();
}

}  // namespace

TEST_CASE(
    "PowerSGD averages plainly for start_iter steps, then sends low-rank factors that are exact for "
    "gradients of lower rank") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    using G = RankOneGradients;
    // Rank 1, as the gradients' mean: Gram-Schmidt cannot make a second column orthogonal when the
    // first power iteration gives two parallel ones, so a higher rank is not exact here.
    const auto options = acc::AcceleratorOptions().ddp(
        acc::DDPOptions().power_sgd(acc::PowerSGDOptions().matrix_approximation_rank(1).start_iter(1)));
    acc::Accelerator<acc::DDP<Comm, acc::PowerSGDHook>> accelerator(options);
    auto net = G::layer(G::kIn, G::kOut, true);
    auto model = accelerator.prepare(net);
    const int64_t world = accelerator.num_processes();
    const auto [weight_mean, bias_mean] = G::mean(world, G::kIn, G::kOut);
    const auto& hook = accelerator.strategy().hook();
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      net->zero_grad();
      G::backward(accelerator, model, G::kIn, G::kOut);
      CHECK(within_power_sgd_rounding(net->weight.grad(), weight_mean, world));
      CHECK(within_power_sgd_rounding(net->bias.grad(), bias_mean, world));
      if (world == 1) continue;                         // alone, no hook is called
      if (step == 0) CHECK(hook.elements_sent() == 0);  // the first step is a plain all-reduce
      // Then W (64 x 48) goes as P (64 x 1) and Q (48 x 1), the bias (64) as it is.
      if (step > 0) CHECK(hook.elements_sent() == step * (G::kOut + G::kIn + G::kOut));
    }
    if (world > 1) CHECK(hook.compression_rate() > 10);
  });
}

// Found: the count of steps was kept per bucket and a new bucket started one past the furthest,
// so in the first step the buckets counted 1, 2, 3, ... and the later ones compressed before
// start_iter steps were done; a count kept for the whole hook instead would let a second model's
// steps advance the first's.
TEST_CASE("PowerSGD averages every bucket of every model plainly for start_iter steps of that model") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    constexpr int kStartIter = 2;
    // One bucket per parameter: eight buckets a model, four of them weights that compression takes.
    const auto options =
        acc::AcceleratorOptions().ddp(acc::DDPOptions().bucket_cap_mb(0).first_bucket_cap_mb(0).power_sgd(
            acc::PowerSGDOptions().start_iter(kStartIter).min_compression_rate(0)));
    acc::Accelerator<acc::DDP<Comm, acc::PowerSGDHook>> accelerator(options);
    torch::manual_seed(0);
    Mlp first, second;  // two models with a loss each, as a GAN's generator and discriminator
    auto first_model = accelerator.prepare(first);
    auto second_model = accelerator.prepare(second);
    if (accelerator.num_processes() == 1) return;  // alone, no hook is called
    REQUIRE(accelerator.strategy().bucket_count() == 16);
    const auto x = at::randn({kBatch, 8}).to(accelerator.device());
    const auto& hook = accelerator.strategy().hook();
    for (int step = 1; step <= kStartIter + 1; ++step) {
      CAPTURE(step);
      const auto train = [&](auto& model) {
        accelerator.backward(model(x).pow(2).sum());
        CHECK((hook.elements_sent() > 0) == (step > kStartIter));
      };
      train(first_model);
      train(second_model);
      first->zero_grad();
      second->zero_grad();
    }
  });
}

TEST_CASE("batched PowerSGD compresses the whole bucket as one square matrix") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    using G = RankOneGradients;
    const auto options =
        acc::AcceleratorOptions().ddp(acc::DDPOptions().power_sgd(acc::PowerSGDOptions().start_iter(0)));
    acc::Accelerator<acc::DDP<Comm, acc::BatchedPowerSGDHook>> accelerator(options);
    // A 48 x 48 weight is its own square bucket: the rank-one gradient stays rank one.
    auto net = G::layer(G::kIn, G::kIn, false);
    auto model = accelerator.prepare(net);
    const int64_t world = accelerator.num_processes();
    net->zero_grad();
    G::backward(accelerator, model, G::kIn, G::kIn);
    CHECK(within_power_sgd_rounding(net->weight.grad(), G::mean(world, G::kIn, G::kIn).first, world));
    if (world > 1) CHECK(accelerator.strategy().hook().elements_sent() == 2 * G::kIn);
  });
}

TEST_CASE("PowerSGD with error feedback trains an Mlp to the same weights on every rank") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    const auto options =
        acc::AcceleratorOptions().ddp(acc::DDPOptions().power_sgd(acc::PowerSGDOptions().start_iter(2)));
    acc::Accelerator<acc::DDP<Comm, acc::PowerSGDHook>> accelerator(options);
    torch::manual_seed(0);
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(kLr));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    torch::manual_seed(1 + accelerator.process_index());
    const auto x = at::randn({64, 8}).to(accelerator.device());
    const auto target = at::randint(0, 3, {64}, at::kLong).to(accelerator.device());
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model(x), target);
      accelerator.backward(loss);
      optimizer.step();
      (step == 0 ? first : last) = acc::item<double>(accelerator.reduce(loss.detach(), acc::ReduceOp::mean));
    }
    // Compressed from the third step on, the loss still falls (how fast depends on the rank; a
    // wrong average would show as NaN or a rise), and every rank applied the same update.
    CHECK(last < first);
    if (accelerator.num_processes() > 1) CHECK(accelerator.strategy().hook().compression_rate() > 1);
    CHECK(same_parameters_on_every_rank(accelerator, *net));  // the ranks' averages agree bit for bit
  });
}

TEST_CASE("PowerSGD's options out of range are errors that name them") {
  const auto make = [](acc::PowerSGDOptions options) {
    return acc::PowerSGDHook(acc::DDPOptions().power_sgd(options));
  };
  CHECK_THROWS_WITH_AS(make(acc::PowerSGDOptions().matrix_approximation_rank(0)),
                       doctest::Contains("matrix_approximation_rank(0): the rank must be at least 1"), acc::Error);
  CHECK_THROWS_WITH_AS(make(acc::PowerSGDOptions().start_iter(-1)),
                       doctest::Contains("start_iter(-1): the steps before compression must be 0 or more"), acc::Error);
  CHECK_NOTHROW(make(acc::PowerSGDOptions().start_iter(0)));
}

namespace {

// A head registered before the body it follows: its gradients arrive first in backward, though
// reverse registration order (DDP's first layout) puts them in the last buckets.
struct HeadFirstImpl : torch::nn::Module {
  HeadFirstImpl()
      : head(register_module("head", torch::nn::Linear(64, 3))),
        body(register_module("body", torch::nn::Linear(8, 64))) {}
  at::Tensor forward(const at::Tensor& x) { return head(torch::tanh(body(x))); }
  torch::nn::Linear head, body;
};
TORCH_MODULE(HeadFirst);

}  // namespace

TEST_CASE("after the first step DDP lays its buckets out in the order the gradients arrived, keeping them") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    // A bucket per parameter: the layout is the order in which buckets start.
    acc::Accelerator<acc::DDP<Comm>> accelerator(
        acc::AcceleratorOptions().ddp(acc::DDPOptions().bucket_cap_mb(0).first_bucket_cap_mb(0)));
    torch::manual_seed(3);
    HeadFirst net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    const auto first_of = [&] {
      const auto layout = accelerator.strategy().bucket_parameters();
      return std::set<std::string>{layout[0].front(), layout[1].front()};
    };
    CHECK(first_of() == std::set<std::string>{"body.weight", "body.bias"});  // reverse registration order
    const auto x = (at::randn({kBatch, 8}) * (accelerator.process_index() + 1)).to(accelerator.device());
    // This rank's own gradients, from a copy of the same weights, to check the average against.
    HeadFirst local;
    local->to(accelerator.device());
    {
      at::NoGradGuard no_grad;
      for (std::size_t i = 0; i < net->parameters().size(); ++i) local->parameters()[i].copy_(net->parameters()[i]);
    }
    local(x).pow(2).sum().backward();
    optimizer.zero_grad();
    accelerator.backward(model(x).pow(2).sum());
    const bool alone = accelerator.num_processes() == 1;  // alone, nothing is sent: the layout stays
    CHECK(first_of() == (alone ? std::set<std::string>{"body.weight", "body.bias"}
                               : std::set<std::string>{"head.weight", "head.bias"}));
    // The averaged gradients moved into the new buckets with the parameters: within the all-reduce's
    // rounding of the ranks' mean (world * 2^-24 of the sum of their |gradients|, as above).
    const double world = accelerator.num_processes();
    for (std::size_t i = 0; i < net->parameters().size(); ++i) {
      const auto all = accelerator.gather(local->parameters()[i].grad().reshape({1, -1})).to(at::kCPU, at::kDouble);
      const auto averaged = net->parameters()[i].grad().reshape({-1}).to(at::kCPU, at::kDouble);
      CHECK((averaged - all.mean(0)).abs().le(all.abs().sum(0) * (world * std::ldexp(1.0, -24))).all().item().toBool());
    }
    optimizer.step();
    for (int step = 0; step < 3; ++step) {  // the new layout trains: every rank keeps the same weights
      optimizer.zero_grad();
      accelerator.backward(model(x).pow(2).sum());
      optimizer.step();
    }
    CHECK(same_parameters_on_every_rank(accelerator, *net));
  });
}

// Found: a rank out of batches before its first step laid its buckets out as rank 0's inside the
// join, and left the new buckets waiting for no member; after the join its first backward never
// started them and failed, naming no parameter, while the others waited.
TEST_CASE("a rank that has no batch inside join_uneven_inputs takes rank 0's bucket layout and trains on after it") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    acc::Accelerator<acc::DDP<Comm>> accelerator(
        acc::AcceleratorOptions().ddp(acc::DDPOptions().bucket_cap_mb(0).first_bucket_cap_mb(0)));
    torch::manual_seed(3);
    HeadFirst net;
    // Plain SGD: no optimizer state, which the rank that stepped alone would hold apart (the
    // join gives every rank its weights, not its optimizer's state).
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(1e-2));
    auto [model, optimizer] = accelerator.prepare(net, opt);
    const auto x = (at::randn({kBatch, 8}) * (accelerator.process_index() + 1)).to(accelerator.device());
    const auto step = [&] {
      optimizer.zero_grad();
      accelerator.backward(model(x).pow(2).sum());
      optimizer.step();
    };
    {
      acc::JoinUnevenInputs join(accelerator, model);
      if (accelerator.process_index() == 0) step();  // the others have no batch
    }
    for (int i = 0; i < 2; ++i) step();
    if (accelerator.num_processes() > 1) {  // alone, nothing is sent: the layout stays
      const auto layout = accelerator.strategy().bucket_parameters();
      CHECK(std::set<std::string>{layout[0].front(), layout[1].front()} ==
            std::set<std::string>{"head.weight", "head.bias"});
    }
    CHECK(same_parameters_on_every_rank(accelerator, *net));
  });
}

// Found: a rank that was done handed PowerSGD a bucket of zeros of its own, but PowerSGD's
// matrices are views of the bucket it planned on, so the rank sent its last step's gradients.
TEST_CASE("PowerSGD under join_uneven_inputs: a rank that is done sends zeros, not its last gradients") {
  with_accelerator([](auto& shared) {
    using Comm = std::decay_t<decltype(shared.strategy().comm())>;
    // Rank 3 for a 3 x 8 weight: P is square, P P^T = I, and P Q^T is the ranks' mean itself.
    const auto options = acc::AcceleratorOptions().ddp(acc::DDPOptions().power_sgd(
        acc::PowerSGDOptions().matrix_approximation_rank(3).start_iter(0).min_compression_rate(0).use_error_feedback(
            false)));
    acc::Accelerator<acc::DDP<Comm, acc::PowerSGDHook>> accelerator(options);
    const int rank = accelerator.process_index(), world = accelerator.num_processes();
    torch::manual_seed(3);
    torch::nn::Linear net(8, 3);
    net->to(at::kDouble);
    torch::nn::Linear local(8, 3);  // the same weights, to compute this rank's own gradient
    local->to(at::kDouble);
    {
      at::NoGradGuard no_grad;
      local->weight.copy_(net->weight);
      local->bias.copy_(net->bias);
    }
    auto model = accelerator.prepare(net);
    // Rank 0 has 3 batches, the others 2: in the third step they are done and add zeros, after
    // two steps in which PowerSGD planned on their buckets.
    const int batches = rank == 0 ? 3 : 2;
    at::Tensor averaged, own;
    {
      acc::JoinUnevenInputs join(accelerator, model);
      for (int s = 0; s < batches; ++s) {
        torch::manual_seed(10 * rank + s);
        const auto x = at::randn({kBatch, 8}, at::kDouble);
        net->zero_grad();
        accelerator.backward(model(x.to(accelerator.device())).pow(2).sum());
        if (s == 2) {
          local->zero_grad();
          local(x).pow(2).sum().backward();
          averaged = at::cat({net->weight.grad().reshape({-1}), net->bias.grad()}).cpu();
          own = at::cat({local->weight.grad().reshape({-1}), local->bias.grad()});
        }
      }
    }
    if (rank == 0 && world > 1) {
      // The mean over all ranks of rank 0's gradient and zeros. P Q^T = P P^T M differs from M by
      // P's loss of orthogonality in Gram-Schmidt, about kappa(P)^2 * 3 * 2^-53 in float64, plus
      // a few roundings of the 8-term products: 1e-9 holds for kappa up to about 1e3 (P comes from
      // seeded inputs, the same on every machine). The last gradients of the others, sent
      // instead of zeros, are off by the gradient's own size.
      const auto scale = own.abs().max().item<double>();
      CHECK((averaged - own / world).abs().max().item<double>() <= 1e-9 * scale);
    }
  });
}

#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/acc.hpp>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <torch/optim/schedulers/step_lr.h>

#include <nlohmann/json.hpp>

#include <sstream>
#include <vector>

namespace {

struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(8, 32))), fc2(register_module("fc2", torch::nn::Linear(32, 3))) {}
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Mlp);

// 80 fixed samples of a 3-class problem.
struct Blobs {
  at::Tensor x, y;
  Blobs() {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(1234);
    x = at::randn({80, 8}, generator);
    y = (x.narrow(1, 0, 3).argmax(1));
  }
  std::size_t size() const { return 80; }
  torch::data::Example<> get(std::size_t i) const {
    const auto row = static_cast<int64_t>(i);
    return {x[row], y[row]};
  }
};

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

constexpr int kSteps = 20;
constexpr int64_t kBatch = 8;

struct Run {
  std::vector<float> losses;
  std::vector<at::Tensor> parameters;
};

Run plain_libtorch() {
  torch::manual_seed(0);
  Mlp net;
  torch::optim::AdamW optimizer(net->parameters(), torch::optim::AdamWOptions(1e-2));
  Blobs data;
  Run run;
  for (int step = 0; step < kSteps; ++step) {
    const int64_t first = (step * kBatch) % 80;
    std::vector<at::Tensor> xs, ys;
    for (int64_t i = first; i < first + kBatch; ++i) {
      auto e = data.get(static_cast<std::size_t>(i));
      xs.push_back(e.data);
      ys.push_back(e.target);
    }
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net(at::stack(xs)), at::stack(ys));
    loss.backward();
    optimizer.step();
    run.losses.push_back(loss.item<float>());
  }
  for (const auto& p : net->parameters()) run.parameters.push_back(p.detach().clone());
  return run;
}

template <class Precision>
Run with_accelerator() {
  acc::Accelerator<acc::Single, Precision> accelerator(cpu_options());
  accelerator.set_seed(0);
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, kBatch));
  Run run;
  while (static_cast<int>(run.losses.size()) < kSteps) {
    for (auto& batch : loader) {
      if (static_cast<int>(run.losses.size()) == kSteps) break;
      optimizer.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
      accelerator.backward(loss);
      optimizer.step();
      run.losses.push_back(loss.template item<float>());
    }
  }
  for (const auto& p : model.unwrap()->parameters()) run.parameters.push_back(p.detach().clone());
  return run;
}

}  // namespace

TEST_CASE("fp32 on CPU: prepare/backward/step give the plain libtorch loop's losses bit for bit") {
  const auto plain = plain_libtorch();
  const auto ours = with_accelerator<acc::FP32>();
  REQUIRE(ours.losses.size() == kSteps);
  for (int i = 0; i < kSteps; ++i)
    CHECK(ours.losses[static_cast<std::size_t>(i)] == plain.losses[static_cast<std::size_t>(i)]);
  REQUIRE(ours.parameters.size() == plain.parameters.size());
  for (std::size_t i = 0; i < plain.parameters.size(); ++i) CHECK(at::equal(ours.parameters[i], plain.parameters[i]));
  CHECK(plain.losses.back() < 0.75f * plain.losses.front());
}

// bf16 keeps 8 bits of mantissa (relative rounding 2^-8 ~ 0.4%); over 20 AdamW steps on this
// problem the loss stays within 0.05 (absolute) of fp32's at every step.
TEST_CASE("bf16 autocast on CPU trains and stays within 0.05 of fp32's loss") {
  const auto fp32 = plain_libtorch();
  const auto bf16 = with_accelerator<acc::BF16>();
  bool any_different = false;
  for (int i = 0; i < kSteps; ++i) {
    const auto a = fp32.losses[static_cast<std::size_t>(i)], b = bf16.losses[static_cast<std::size_t>(i)];
    CHECK(std::abs(a - b) < 0.05f);
    any_different = any_different || a != b;
  }
  CHECK(any_different);  // autocast really ran in bf16
  CHECK(bf16.losses.back() < 0.75f * bf16.losses.front());
}

TEST_CASE("the prepared model is called like the module, on the device, and unwraps to the same holder") {
  acc::Accelerator<> accelerator(cpu_options());
  Mlp net;
  auto model = accelerator.prepare(net);
  CHECK(model.unwrap().get() == net.get());
  CHECK((model->fc1->weight.device() == accelerator.device()));
  const auto out = model(at::ones({2, 8}));
  CHECK((out.sizes() == at::IntArrayRef{2, 3}));
  CHECK((at::equal(out, net(at::ones({2, 8})))));
}

TEST_CASE("bf16: the forward runs under autocast and returns fp32") {
  acc::Accelerator<acc::Single, acc::BF16> accelerator(cpu_options());
  Mlp net;
  auto model = accelerator.prepare(net);
  CHECK((model(at::ones({2, 8})).scalar_type() == at::kFloat));
  {
    auto scope = accelerator.autocast();
    CHECK((net->fc1(at::ones({2, 8})).scalar_type() == at::kBFloat16));
  }
  CHECK((net->fc1(at::ones({2, 8})).scalar_type() == at::kFloat));
}

TEST_CASE("prepare takes objects in any order and number; the scheduler steps with the optimizer") {
  acc::Accelerator<> accelerator(cpu_options());
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1.0));
  torch::optim::StepLR sched(opt, /*step_size=*/1, /*gamma=*/0.5);
  auto [scheduler, loader, optimizer, model] = accelerator.prepare(sched, acc::DataLoader(Blobs{}, 16), opt, net);
  CHECK(loader.size() == 5);
  CHECK(&optimizer.unwrap() == &opt);
  CHECK(&scheduler.unwrap() == &sched);
  for (int step = 0; step < 2; ++step) {  // StepLR leaves the first step's rate as it is
    optimizer.step();
    scheduler.step();
  }
  CHECK_FALSE(optimizer.step_was_skipped());
  CHECK(opt.param_groups()[0].options().get_lr() == doctest::Approx(0.5));
  CHECK(model.unwrap().get() == net.get());
}

TEST_CASE("print writes on the main process only") {
  std::ostringstream captured;
  auto* previous = std::cout.rdbuf(captured.rdbuf());
  {
    acc::Accelerator<> main_process(cpu_options());
    main_process.print("loss", 1.5, "step", 3);
  }
  std::cout.rdbuf(previous);
  CHECK(captured.str() == "loss 1.5 step 3\n");
}

TEST_CASE("set_seed makes initialisation reproducible") {
  acc::Accelerator<> accelerator(cpu_options());
  accelerator.set_seed(42);
  const auto a = Mlp()->fc1->weight.clone();
  accelerator.set_seed(42);
  CHECK(at::equal(a, Mlp()->fc1->weight));
}

TEST_CASE("Single started as several processes says what to do") {
  acc::ProcessEnvironment two;
  two.world_size = 2;
  two.launcher = "torchrun";
  CHECK_THROWS_WITH_AS(acc::Accelerator<>(acc::AcceleratorOptions().environment(two)),
                       "this program was built with acc::Single but started as 2 processes (torchrun variables); run "
                       "it as one process, or use a distributed strategy (acc::CPU, acc::DDP) for several",
                       acc::Error);
}

TEST_CASE("CUDA: the model and batches land on cuda:0, bf16 autocast runs there" *
          doctest::skip(!torch::cuda::is_available())) {
  acc::Accelerator<acc::Single, acc::BF16> accelerator(
      acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}));
  CHECK((accelerator.device() == c10::Device(c10::kCUDA, 0)));
  Mlp net;
  auto [model, loader] = accelerator.prepare(net, acc::DataLoader(Blobs{}, 16));
  for (auto& batch : loader) {
    CHECK((batch.data.device() == accelerator.device()));
    CHECK((batch.target.device() == accelerator.device()));
    CHECK((model(batch.data).scalar_type() == at::kFloat));
    auto scope = accelerator.autocast();
    CHECK((model->fc1(batch.data).scalar_type() == at::kBFloat16));
  }
}

TEST_CASE("gradient_accumulation_steps: the optimizer and scheduler step every k-th batch and on the last") {
  constexpr int k = 3;
  // plain libtorch: the mean loss over k micro-batches, one step per k batches (and the last)
  torch::manual_seed(0);
  Mlp plain;
  torch::optim::AdamW plain_opt(plain->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR plain_sched(plain_opt, /*step_size=*/1, /*gamma=*/0.5);
  Blobs data;
  const int64_t batch = 8;  // 80 samples: 10 batches, steps after batches 3, 6, 9, 10
  for (int64_t first = 0; first < 80; first += k * batch) {
    const int64_t micro = std::min<int64_t>(k, (80 - first) / batch);
    plain_opt.zero_grad();
    for (int64_t m = 0; m < micro; ++m) {
      auto loss = torch::nn::functional::cross_entropy(plain(data.x.narrow(0, first + m * batch, batch)),
                                                       data.y.narrow(0, first + m * batch, batch));
      (loss / k).backward();
    }
    plain_opt.step();
    plain_sched.step();
  }

  acc::Accelerator<> accelerator(cpu_options().gradient_accumulation_steps(k));
  accelerator.set_seed(0);
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR sched(opt, /*step_size=*/1, /*gamma=*/0.5);
  auto [model, optimizer, loader, scheduler] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, batch), sched);
  std::vector<bool> synced;
  for (auto& b : loader) {
    auto step = accelerator.accumulate(model);
    synced.push_back(accelerator.sync_gradients());
    accelerator.backward(torch::nn::functional::cross_entropy(model(b.data), b.target));
    optimizer.step();
    scheduler.step();
    optimizer.zero_grad();
  }
  CHECK(synced == std::vector<bool>{false, false, true, false, false, true, false, false, true, true});
  // 4 scheduler steps (StepLR leaves the first alone): 1e-2 * 0.5^3
  CHECK(opt.param_groups()[0].options().get_lr() == doctest::Approx(1e-2 * 0.125));
  const auto ours = net->parameters();
  const auto theirs = plain->parameters();
  for (std::size_t i = 0; i < ours.size(); ++i) CHECK(at::allclose(ours[i], theirs[i], 1e-5, 1e-6));
}

TEST_CASE("sync_with_dataloader off: a loader's last batch does not end the accumulation cycle") {
  acc::Accelerator<> accelerator(cpu_options().gradient_accumulation_steps(3));
  CHECK(accelerator.sync_with_dataloader());
  accelerator.sync_with_dataloader(false);
  CHECK_FALSE(accelerator.sync_with_dataloader());
  auto loader = accelerator.prepare(acc::DataLoader(Blobs{}, 8));  // 10 batches an epoch
  std::vector<bool> synced;
  for (int epoch = 0; epoch < 2; ++epoch)
    for (auto& b : loader) {
      (void)b;
      auto step = accelerator.accumulate();
      synced.push_back(accelerator.sync_gradients());
    }
  // Every third of the 20 micro-batches, across the epochs' boundary (on by default, the 10th
  // would synchronize and the count start again).
  std::vector<bool> expected(20, false);
  for (std::size_t i = 2; i < expected.size(); i += 3) expected[i] = true;
  CHECK(synced == expected);
}

TEST_CASE("prepare() again for a new model and optimizer: save_state holds the live ones, never freed ones") {
  TempDir dir;
  acc::Accelerator<> accelerator(cpu_options());
  for (int fold = 0; fold < 2; ++fold) {  // Python's cross-validation: a new model per fold
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    torch::optim::StepLR sched(opt, /*step_size=*/1, /*gamma=*/0.5);
    auto [model, optimizer, scheduler] = accelerator.prepare(net, opt, sched);
    accelerator.backward(model(at::ones({2, 8})).sum());
    optimizer.step();
    scheduler.step();
  }  // the fold's optimizer and scheduler are gone
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  accelerator.save_state(dir.path);
  const auto metadata = nlohmann::json::parse(read_text(dir.path / "acc_state.json"));
  CHECK(metadata["models"].size() == 1);
  CHECK(metadata["optimizers"].size() == 1);
  CHECK(metadata["schedulers"].size() == 0);
  // and it loads back into the objects prepared now
  CHECK_NOTHROW(accelerator.load_state(dir.path));
}

TEST_CASE("no_sync only holds back gradient synchronisation: the prepared optimizer and scheduler still step") {
  acc::Accelerator<> accelerator(cpu_options());
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR sched(opt, /*step_size=*/1, /*gamma=*/0.5);
  auto [model, optimizer, scheduler] = accelerator.prepare(net, opt, sched);
  const auto before = net->fc1->weight.detach().clone();
  for (int step = 0; step < 2; ++step) {  // StepLR leaves the first step's rate as it is
    auto local = accelerator.no_sync(model);
    CHECK(accelerator.sync_gradients());
    optimizer.zero_grad();
    accelerator.backward(model(at::ones({2, 8})).sum());
    optimizer.step();
    scheduler.step();
  }
  CHECK_FALSE(at::equal(before, net->fc1->weight));
  CHECK(opt.param_groups()[0].options().get_lr() == doctest::Approx(0.5e-2));

  // accumulate() decides stepping, also inside no_sync: its first micro-step of 2 does not step
  acc::Accelerator<> accumulating(cpu_options().gradient_accumulation_steps(2));
  auto [model2, optimizer2] = accumulating.prepare(net, opt);
  const auto held = net->fc1->weight.detach().clone();
  auto local = accumulating.no_sync(model2);
  {
    auto step = accumulating.accumulate(model2);
    CHECK_FALSE(accumulating.sync_gradients());
    accumulating.backward(model2(at::ones({2, 8})).sum());
    optimizer2.step();
    CHECK(at::equal(held, net->fc1->weight));
  }
  {
    auto step = accumulating.accumulate(model2);
    CHECK(accumulating.sync_gradients());
    accumulating.backward(model2(at::ones({2, 8})).sum());
    optimizer2.step();
    CHECK_FALSE(at::equal(held, net->fc1->weight));
  }
}

namespace {
// Example i is the number i.
struct Numbers {
  std::size_t size() const { return 12; }
  at::Tensor get(std::size_t i) const { return at::scalar_tensor(static_cast<int64_t>(i), at::kLong); }
};
template <class Loader>
std::vector<int64_t> numbers_of_epoch(Loader& loader) {
  std::vector<int64_t> seen;
  for (auto& batch : loader)
    for (int64_t i = 0; i < batch.size(0); ++i) seen.push_back(batch[i].template item<int64_t>());
  return seen;
}
}  // namespace

TEST_CASE("a loader that names its sampler keeps it; the Accelerator's sampler orders the others") {
  acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> accelerator(cpu_options());
  const auto in_order = acc::Sequential::indices(12, 0, 0);
  const auto shuffled = acc::Shuffled::indices(12, 0, 0);
  REQUIRE(in_order != shuffled);
  auto unnamed = accelerator.prepare(acc::DataLoader(Numbers{}, 4));
  CHECK(numbers_of_epoch(unnamed) == shuffled);
  auto sequential = accelerator.prepare(acc::DataLoader<Numbers, acc::DefaultCollate, acc::Sequential>(Numbers{}, 4));
  CHECK(numbers_of_epoch(sequential) == in_order);
}

TEST_CASE("DataLoaderOptions::shuffle names the order, whatever the Accelerator's sampler") {
  acc::Accelerator<acc::Single, acc::FP32, acc::Shuffled> shuffling(cpu_options());
  auto in_order = shuffling.prepare(acc::DataLoader(Numbers{}, acc::DataLoaderOptions(4).shuffle(false)));
  CHECK(numbers_of_epoch(in_order) == acc::Sequential::indices(12, 0, 0));
  acc::Accelerator<acc::Single, acc::FP32, acc::Sequential> sequential(cpu_options());
  auto shuffled = sequential.prepare(acc::DataLoader(Numbers{}, acc::DataLoaderOptions(4).shuffle(true).seed(3)));
  CHECK(numbers_of_epoch(shuffled) == acc::Shuffled::indices(12, 3, 0));
  CHECK(numbers_of_epoch(shuffled) == acc::Shuffled::indices(12, 3, 1));
  // unprepared, as Python's DataLoader
  acc::DataLoader alone(Numbers{}, acc::DataLoaderOptions(4).shuffle(true).seed(3));
  CHECK(numbers_of_epoch(alone) == acc::Shuffled::indices(12, 3, 0));
  CHECK_THROWS_WITH_AS((acc::DataLoader<Numbers, acc::DefaultCollate, acc::Shuffled>(
                           Numbers{}, acc::DataLoaderOptions(4).shuffle(false))),
                       "this DataLoader names its order twice: a sampler policy (shuffled) and "
                       "DataLoaderOptions::shuffle; keep one of them",
                       acc::Error);
}

TEST_CASE("free_memory forgets every prepared object and the step count; preparing again trains and checkpoints") {
  TempDir dir;
  acc::Accelerator<> accelerator(cpu_options().gradient_accumulation_steps(2));
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  torch::optim::StepLR sched(opt, /*step_size=*/1, /*gamma=*/0.5);
  auto [model, optimizer, scheduler, loader] = accelerator.prepare(net, opt, sched, acc::DataLoader(Blobs{}, 16));
  {
    auto step = accelerator.accumulate(model);  // micro-step 1 of 2
    accelerator.backward(model(at::ones({2, 8})).sum());
  }
  accelerator.free_memory();  // the prepared objects above still live
  accelerator.save_state(dir.path / "empty");
  const auto empty = nlohmann::json::parse(read_text(dir.path / "empty" / "acc_state.json"));
  CHECK(empty["models"].empty());
  CHECK(empty["optimizers"].empty());
  CHECK(empty["schedulers"].empty());
  CHECK(empty["data_loaders"].empty());
  CHECK(empty["step"] == 0);

  Mlp again;
  torch::optim::AdamW again_opt(again->parameters(), torch::optim::AdamWOptions(1e-2));
  auto [model2, optimizer2] = accelerator.prepare(again, again_opt);
  const auto before = again->fc1->weight.detach().clone();
  for (int i = 0; i < 2; ++i) {
    auto step = accelerator.accumulate(model2);
    CHECK(accelerator.sync_gradients() == (i == 1));  // counted from 0 again
    accelerator.backward(model2(at::ones({2, 8})).sum());
    optimizer2.step();
    optimizer2.zero_grad();
  }
  CHECK_FALSE(at::equal(before, again->fc1->weight));
  accelerator.save_state(dir.path / "again");
  const auto saved = nlohmann::json::parse(read_text(dir.path / "again" / "acc_state.json"));
  CHECK(saved["models"].size() == 1);
  CHECK(saved["optimizers"].size() == 1);
  CHECK_NOTHROW(accelerator.load_state(dir.path / "again"));
}

namespace {
// Whether user code can call the step functions meant for the prepared optimizer and scheduler,
// without their key or with one it makes up.
template <class A, class = void>
struct steps_without_key : std::false_type {};
template <class A>
struct steps_without_key<A,
                         std::void_t<decltype(std::declval<A&>().optimizer_step(std::declval<torch::optim::AdamW&>()))>>
    : std::true_type {};
template <class A, class = void>
struct steps_with_made_up_key : std::false_type {};
template <class A>
struct steps_with_made_up_key<
    A, std::void_t<decltype(std::declval<A&>().optimizer_step({}, std::declval<torch::optim::AdamW&>()))>>
    : std::true_type {};
template <class A, class = void>
struct zeroes_without_key : std::false_type {};
template <class A>
struct zeroes_without_key<
    A, std::void_t<decltype(std::declval<A&>().optimizer_zero_grad(std::declval<torch::optim::AdamW&>()))>>
    : std::true_type {};
template <class A, class = void>
struct counts_scheduler_steps_without_key : std::false_type {};
template <class A>
struct counts_scheduler_steps_without_key<A, std::void_t<decltype(std::declval<A&>().scheduler_steps_per_step())>>
    : std::true_type {};
template <class A, class = void>
struct counts_scheduler_steps_with_made_up_key : std::false_type {};
template <class A>
struct counts_scheduler_steps_with_made_up_key<A,
                                               std::void_t<decltype(std::declval<A&>().scheduler_steps_per_step({}))>>
    : std::true_type {};
}  // namespace

TEST_CASE("only the prepared optimizer and scheduler reach the Accelerator's step functions") {
  using Accelerator = acc::Accelerator<>;
  CHECK_FALSE(steps_without_key<Accelerator>::value);
  CHECK_FALSE(steps_with_made_up_key<Accelerator>::value);
  CHECK_FALSE(zeroes_without_key<Accelerator>::value);
  CHECK_FALSE(counts_scheduler_steps_without_key<Accelerator>::value);
  CHECK_FALSE(counts_scheduler_steps_with_made_up_key<Accelerator>::value);
}

TEST_CASE("the policies' run-time names are the config's spellings") {
  using Bf16OnOne = acc::Accelerator<acc::Single, acc::BF16>;
  CHECK(Bf16OnOne::distributed_type() == "NO");
  CHECK(Bf16OnOne::mixed_precision() == "bf16");
#if ACC_HAS_GLOO  // the builds without Gloo (the GPU machines') have DDP over NCCL instead
  CHECK(acc::Accelerator<acc::CPU, acc::FP16>::distributed_type() == "MULTI_CPU");
  CHECK(acc::Accelerator<acc::CPU, acc::FP16>::mixed_precision() == "fp16");
#else
  CHECK(acc::Accelerator<acc::DDP<acc::Nccl>, acc::FP16>::distributed_type() == "MULTI_GPU");
  CHECK(acc::Accelerator<acc::DDP<acc::Nccl>, acc::FP16>::mixed_precision() == "fp16");
#endif
}

TEST_CASE("check_trigger is true once after set_trigger, then false until the next") {
  acc::Accelerator<> accelerator(cpu_options());
  CHECK_FALSE(accelerator.check_trigger());
  accelerator.set_trigger();
  CHECK(accelerator.check_trigger());
  CHECK_FALSE(accelerator.check_trigger());
}

TEST_CASE("acc::item reads a loss whose type depends on a template parameter") {
  const auto read = [](const auto& loss) { return acc::item<double>(loss); };
  CHECK(read(at::full({}, 2.5)) == 2.5);
  CHECK(acc::item<int64_t>(at::full({1}, 7, at::kLong)) == 7);
}

TEST_CASE("gradient_accumulation_steps changed after construction takes effect at the next accumulate()") {
  acc::Accelerator<> accelerator(cpu_options());
  accelerator.set_seed(0);
  Mlp net;
  torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
  auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, 8));
  CHECK(accelerator.gradient_accumulation_steps() == 1);
  accelerator.gradient_accumulation_steps(4);
  CHECK(accelerator.gradient_accumulation_steps() == 4);
  std::vector<bool> synced;
  for (auto& b : loader) {  // 10 batches: every 4th synchronizes, and the last
    auto step = accelerator.accumulate(model);
    synced.push_back(accelerator.sync_gradients());
    accelerator.backward(torch::nn::functional::cross_entropy(model(b.data), b.target));
    optimizer.step();
    optimizer.zero_grad();
  }
  CHECK(synced == std::vector<bool>{false, false, false, true, false, false, false, true, false, true});
  CHECK_THROWS_WITH_AS(accelerator.gradient_accumulation_steps(0), doctest::Contains("at least 1"), acc::Error);
  CHECK(accelerator.gradient_accumulation_steps() == 4);
}

TEST_CASE("LocalSGD on one process trains as without it; local_sgd_steps below 1 is an error") {
  const auto train = [](bool local_sgd) {
    acc::Accelerator<> accelerator(cpu_options());
    accelerator.set_seed(0);
    Mlp net;
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(1e-2));
    auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(Blobs{}, 8));
    {
      acc::LocalSGD scope(accelerator, model, /*local_sgd_steps=*/2, /*enabled=*/local_sgd);
      for (auto& b : loader) {
        accelerator.backward(torch::nn::functional::cross_entropy(model(b.data), b.target));
        optimizer.step();
        optimizer.zero_grad();
        scope.step();
      }
    }
    return net->parameters();
  };
  const auto with = train(true), without = train(false);
  for (std::size_t i = 0; i < with.size(); ++i) CHECK(at::equal(with[i], without[i]));

  acc::Accelerator<> accelerator(cpu_options());
  Mlp net;
  auto model = accelerator.prepare(net);
  CHECK_THROWS_WITH_AS(acc::LocalSGD(accelerator, model, 0), doctest::Contains("local_sgd_steps is 0"), acc::Error);
}

#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/accelerator.hpp>
#include <acc/activation_checkpointing/checkpoint.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/precision/autocast.hpp>

#include <malloc.h>
#if defined(__SANITIZE_ADDRESS__)
// From AddressSanitizer's runtime (its allocator_interface.h is not installed everywhere).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

#if ACC_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

// The recompute runs the same operations on the same inputs, in the same order, on the same
// threads, so on the CPU in fp32 every gradient below is compared bit for bit (at::equal): there
// is no summation order or dtype that could differ.
namespace {

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(int64_t width, double dropout = 0)
      : fc1(register_module("fc1", torch::nn::Linear(width, 2 * width))),
        fc2(register_module("fc2", torch::nn::Linear(2 * width, width))),
        dropout(dropout) {}
  at::Tensor forward(const at::Tensor& x) {
    ++calls;
    auto h = torch::tanh(fc1(x));
    if (dropout > 0) h = torch::dropout(h, dropout, /*train=*/true);
    return x + fc2(h);
  }
  torch::nn::Linear fc1, fc2;
  double dropout;
  int calls = 0;
};
TORCH_MODULE(Block);

std::vector<at::Tensor> gradients(torch::nn::Module& module) {
  std::vector<at::Tensor> grads;
  for (const auto& p : module.parameters()) grads.push_back(p.grad().clone());
  return grads;
}

void check_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].defined());
    CHECK(at::equal(a[i], b[i]));
  }
}

// Bytes the C library's allocator hands out now (libtorch's CPU tensors come from it): its arenas'
// blocks in use plus the large blocks it maps on its own.
std::size_t heap_bytes_in_use() {
#if defined(__SANITIZE_ADDRESS__)
  return __sanitizer_get_current_allocated_bytes();  // AddressSanitizer's allocator replaces glibc's
#else
  const auto info = mallinfo2();
  return info.uordblks + info.hblkhd;
#endif
}

}  // namespace

TEST_CASE(
    "acc::checkpoint gives the plain forward's output and gradients bit for bit, and runs the forward again in "
    "backward") {
  torch::manual_seed(0);
  Block block(16);
  const auto input = torch::randn({8, 16});

  auto x = input.clone().requires_grad_(true);
  const auto plain_out = block(x);
  plain_out.square().sum().backward();
  const auto plain_grads = gradients(*block);
  const auto plain_input_grad = x.grad().clone();
  block->zero_grad();
  block->calls = 0;

  auto y = input.clone().requires_grad_(true);
  const auto out = acc::checkpoint([&](const at::Tensor& t) { return block(t); }, y);
  CHECK(block->calls == 1);
  CHECK(at::equal(out, plain_out));
  CHECK(out.requires_grad());
  out.square().sum().backward();
  CHECK(block->calls == 2);  // recomputed once, in backward
  check_equal(gradients(*block), plain_grads);
  CHECK(at::equal(y.grad(), plain_input_grad));
}

TEST_CASE(
    "acc::checkpoint: parameters get gradients when no input requires one, and only inputs that require one get "
    "theirs") {
  torch::manual_seed(1);
  Block block(8);
  const auto a = torch::randn({4, 8}), b = torch::randn({4, 8});
  auto twice = [&](const at::Tensor& p, const at::Tensor& q) { return block(p) * q; };

  twice(a, b).sum().backward();
  const auto plain = gradients(*block);
  block->zero_grad();

  // No input requires a gradient (a first block's input rarely does): the parameters still get theirs.
  const auto out = acc::checkpoint(twice, a, b);
  REQUIRE(out.requires_grad());
  out.sum().backward();
  check_equal(gradients(*block), plain);
  block->zero_grad();

  // One of two does.
  auto q = b.clone().requires_grad_(true);
  auto p = a.clone();
  twice(p, q).sum().backward();
  const auto plain_q = q.grad().clone();
  block->zero_grad();
  auto q2 = b.clone().requires_grad_(true);
  acc::checkpoint(twice, p, q2).sum().backward();
  CHECK(at::equal(q2.grad(), plain_q));
  CHECK_FALSE(p.grad().defined());
  check_equal(gradients(*block), plain);
}

TEST_CASE(
    "acc::checkpoint: dropout recomputes the same mask, and the caller's generator moves as without checkpointing") {
  Block block(16, /*dropout=*/0.5);
  const auto input = torch::ones({8, 16});

  torch::manual_seed(7);
  block(input).sum().backward();
  const auto plain = gradients(*block);
  const auto next_draw = torch::rand({4});
  block->zero_grad();

  torch::manual_seed(7);
  acc::checkpoint([&](const at::Tensor& t) { return block(t); }, input).sum().backward();
  check_equal(gradients(*block), plain);
  CHECK(at::equal(torch::rand({4}), next_draw));  // the recompute drew from a saved state, not the live one
}

// Without the autocast state of the first run the recompute would compute in fp32 and give other
// gradients than the bf16 forward; the last check shows those differ, so the equality is no accident.
TEST_CASE("acc::checkpoint: a bf16 autocast forward recomputes under the same autocast") {
  torch::manual_seed(3);
  Block block(32);
  const auto input = torch::randn({16, 32});
  auto loss_of = [&](bool checkpointed) {
    acc::AutocastGuard autocast(c10::DeviceType::CPU, at::kBFloat16);
    const auto out =
        checkpointed ? acc::checkpoint([&](const at::Tensor& t) { return block(t); }, input) : block(input);
    return out.to(at::kFloat).square().sum();
  };
  loss_of(false).backward();  // outside autocast, as a training loop does
  const auto plain = gradients(*block);
  block->zero_grad();
  loss_of(true).backward();
  CHECK_FALSE(acc::compat::autocast_enabled(c10::DeviceType::CPU));
  check_equal(gradients(*block), plain);
  block->zero_grad();
  block(input).square().sum().backward();
  bool fp32_differs = false;
  const auto fp32 = gradients(*block);
  for (std::size_t i = 0; i < fp32.size(); ++i) fp32_differs = fp32_differs || !at::equal(fp32[i], plain[i]);
  CHECK(fp32_differs);
}

TEST_CASE("acc::checkpoint nests: the inner segment recomputes inside the outer one's recompute") {
  torch::manual_seed(4);
  Block inner(8), outer(8);
  const auto input = torch::randn({4, 8}).requires_grad_(true);
  outer(inner(input)).sum().backward();
  auto plain = gradients(*inner);
  for (const auto& g : gradients(*outer)) plain.push_back(g);
  const auto plain_input_grad = input.grad().clone();
  inner->zero_grad();
  outer->zero_grad();
  input.mutable_grad().reset();
  inner->calls = 0;

  const auto out = acc::checkpoint(
      [&](const at::Tensor& x) { return outer(acc::checkpoint([&](const at::Tensor& t) { return inner(t); }, x)); },
      input);
  out.sum().backward();
  // Forward (grad off, so the inner checkpoint just runs), the outer recompute, the inner recompute.
  CHECK(inner->calls == 3);
  auto grads = gradients(*inner);
  for (const auto& g : gradients(*outer)) grads.push_back(g);
  check_equal(grads, plain);
  CHECK(at::equal(input.grad(), plain_input_grad));
}

TEST_CASE("acc::checkpoint takes containers and plain values, and returns containers with integer tensors") {
  torch::manual_seed(5);
  Block block(8);
  auto fn = [&](const std::vector<at::Tensor>& xs, double scale) {
    const auto y = block(xs[0] + xs[1]) * scale;
    return std::make_pair(y, y.argmax(1));
  };
  const std::vector<at::Tensor> xs{torch::randn({4, 8}), torch::randn({4, 8}).requires_grad_(true)};
  const auto plain = fn(xs, 0.5);
  plain.first.sum().backward();
  const auto plain_grads = gradients(*block);
  const auto plain_x1 = xs[1].grad().clone();
  block->zero_grad();
  xs[1].mutable_grad().reset();

  const auto [y, index] = acc::checkpoint(fn, xs, 0.5);
  CHECK(at::equal(index, plain.second));
  CHECK_FALSE(index.requires_grad());
  y.sum().backward();
  check_equal(gradients(*block), plain_grads);
  CHECK(at::equal(xs[1].grad(), plain_x1));

  torch::NoGradGuard no_grad;  // evaluation: fn just runs
  block->calls = 0;
  CHECK(at::equal(acc::checkpoint(fn, xs, 0.5).first, plain.first));
  CHECK(block->calls == 1);
}

// A stack of 8 blocks holds, without checkpointing, at least one batch-sized activation per linear
// layer until backward (16 of 128 x 512 floats, 4 MiB); checkpointed as one segment it holds its
// input (kept by the node) and its output, 2 of them: at most 1/8 of it, checked as under 1/4.
TEST_CASE("acc::checkpoint: the memory held between forward and backward drops to the segment's inputs and output") {
  torch::manual_seed(6);
  std::vector<Block> blocks;
  for (int i = 0; i < 8; ++i) blocks.emplace_back(256);
  const auto input = torch::randn({128, 256});
  auto stack = [&](const at::Tensor& x) {
    auto h = x;
    for (auto& block : blocks) h = block(h);
    return h;
  };
  auto held = [&](bool checkpointed, std::vector<at::Tensor>& grads) {
    for (auto& block : blocks) block->zero_grad();
    const auto before = heap_bytes_in_use();
    auto out = checkpointed ? acc::checkpoint(stack, input) : stack(input);
    const auto after = heap_bytes_in_use();
    out.sum().backward();
    grads.clear();
    for (auto& block : blocks)
      for (const auto& g : gradients(*block)) grads.push_back(g);
    return static_cast<double>(after) - static_cast<double>(before);
  };
  std::vector<at::Tensor> plain_grads, checkpointed_grads;
  held(false, plain_grads);  // the first backward allocates the gradients: measure from the second
  const double plain = held(false, plain_grads);
  const double checkpointed = held(true, checkpointed_grads);
  const double activation = 128.0 * 256 * sizeof(float);
  MESSAGE("held between forward and backward: plain " << plain / activation << " activations, checkpointed "
                                                      << checkpointed / activation);
  CHECK(plain >= 16 * activation);
  CHECK(checkpointed < plain / 4);
  check_equal(checkpointed_grads, plain_grads);
}

#if ACC_HAS_CUDA
namespace {
std::size_t cuda_bytes_allocated() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return static_cast<std::size_t>(
      stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)].current);
}
}  // namespace
#endif

// On CUDA the two runs may differ by more than nothing: cuBLAS may add a GEMM's partial sums in
// another order the second time, and under bf16 autocast that can flip the rounding of single
// elements (2^-8 relative). Such flips move a gradient's norm by far less than 1%; a different
// dropout mask (30% of the elements) or a recompute in fp32 changes it by tens of percent.
TEST_CASE("CUDA: acc::checkpoint recomputes dropout's mask and bf16 autocast there, holding less memory" *
          doctest::skip(!torch::cuda::is_available())) {
#if ACC_HAS_CUDA
  const c10::Device cuda(c10::kCUDA, 0);
  torch::manual_seed(12);
  std::vector<Block> blocks;
  for (int i = 0; i < 8; ++i) {
    blocks.emplace_back(256, /*dropout=*/0.3);
    blocks.back()->to(cuda);
  }
  const auto input = torch::randn({128, 256}, at::TensorOptions(cuda));
  auto stack = [&](const at::Tensor& x) {
    auto h = x;
    for (auto& block : blocks) h = block(h);
    return h;
  };
  struct Result {
    double held;
    std::vector<at::Tensor> grads;
    at::Tensor next_draw;
  };
  auto run = [&](bool checkpointed) {
    for (auto& block : blocks) block->zero_grad();
    torch::manual_seed(13);
    torch::cuda::synchronize();
    const double before = static_cast<double>(cuda_bytes_allocated());
    at::Tensor loss;
    {
      acc::AutocastGuard autocast(c10::DeviceType::CUDA, at::kBFloat16);
      const auto out = checkpointed ? acc::checkpoint(stack, input) : stack(input);
      loss = out.to(at::kFloat).square().mean();
    }
    Result result{static_cast<double>(cuda_bytes_allocated()) - before, {}, {}};
    loss.backward();
    for (auto& block : blocks)
      for (const auto& g : gradients(*block)) result.grads.push_back(g);
    result.next_draw = torch::rand({4}, at::TensorOptions(cuda));
    return result;
  };
  run(false);  // the first backward allocates the gradients
  const auto plain = run(false);
  const auto checkpointed = run(true);
  MESSAGE("CUDA memory held between forward and backward: plain " << plain.held / (1 << 20) << " MiB, checkpointed "
                                                                  << checkpointed.held / (1 << 20) << " MiB");
  CHECK(checkpointed.held < plain.held / 4);
  REQUIRE(checkpointed.grads.size() == plain.grads.size());
  for (std::size_t i = 0; i < plain.grads.size(); ++i) {
    const double difference = (checkpointed.grads[i] - plain.grads[i]).norm().item<double>();
    CHECK(difference <= 1e-2 * plain.grads[i].norm().item<double>());
  }
  CHECK(at::equal(checkpointed.next_draw, plain.next_draw));
#endif
}

namespace {

struct StackImpl : torch::nn::Module {
  explicit StackImpl(int64_t width) {
    for (int i = 0; i < 3; ++i) blocks.emplace_back(register_module("block" + std::to_string(i), Block(width, 0.25)));
  }
  at::Tensor forward(at::Tensor x) {
    for (auto& block : blocks) x = block(x);
    return x;
  }
  std::vector<acc::Unit<Block>> blocks;
};
TORCH_MODULE(Stack);

acc::AcceleratorOptions cpu_options() {
  return acc::AcceleratorOptions().environment(acc::ProcessEnvironment{}).cpu(true);
}

// Three SGD steps with dropout; returns the parameters and how often block 0's forward ran.
template <class Model>
std::pair<std::vector<at::Tensor>, int> train(Model net, bool activation_checkpointing, Block first) {
  acc::Accelerator<> accelerator(cpu_options().activation_checkpointing(activation_checkpointing));
  accelerator.set_seed(11);
  torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1));
  auto [model, optimizer] = accelerator.prepare(net, sgd);
  const auto x = torch::randn({8, 16});
  for (int step = 0; step < 3; ++step) {
    optimizer.zero_grad();
    accelerator.backward(model(x).square().mean());
    optimizer.step();
  }
  std::vector<at::Tensor> parameters;
  for (const auto& p : net->parameters()) parameters.push_back(p.detach().clone());
  acc::checkpoint_units(net, false);
  return {parameters, first->calls};
}

}  // namespace

TEST_CASE("activation_checkpointing: the Accelerator recomputes each acc::Unit, training as without it") {
  torch::manual_seed(8);
  Stack reference(16);
  auto copy = [&] {
    Stack net(16);
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < net->parameters().size(); ++i) net->parameters()[i].copy_(reference->parameters()[i]);
    return net;
  };
  const auto plain_net = copy(), checkpointed_net = copy();
  const auto plain = train(plain_net, false, plain_net->blocks[0]);
  const auto checkpointed = train(checkpointed_net, true, checkpointed_net->blocks[0]);
  CHECK(plain.second == 3);
  CHECK(checkpointed.second == 6);
  check_equal(checkpointed.first, plain.first);
}

TEST_CASE("activation_checkpointing: a Sequential model's children are its units") {
  torch::manual_seed(9);
  auto make = [] {
    torch::manual_seed(9);
    return torch::nn::Sequential(Block(16, 0.25), Block(16, 0.25));
  };
  const auto plain_net = make(), checkpointed_net = make();
  const auto plain = train(plain_net, false, plain_net->ptr<BlockImpl>(0));
  const auto checkpointed = train(checkpointed_net, true, checkpointed_net->ptr<BlockImpl>(0));
  CHECK(plain.second == 3);
  CHECK(checkpointed.second == 6);
  check_equal(checkpointed.first, plain.first);
}

TEST_CASE("activation_checkpointing on a model without units says how to declare them") {
  acc::Accelerator<> accelerator(cpu_options().activation_checkpointing(true));
  Block net(4);
  const auto message = error_of([&] { accelerator.prepare(net); });
  CHECK(message.find("has no units to checkpoint") != std::string::npos);
  CHECK(message.find("acc::Unit<...>") != std::string::npos);
}

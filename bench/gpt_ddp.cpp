// gpt_ddp: the GPT-2-small-sized model (common/gpt.hpp) trained with acc in bf16 (or --precision)
// with fused AdamW on arithmetic sequences of tokens (each sequence a random start and stride, so
// that the next token is learnt in context; the final loss is comparable between precisions), on one GPU (Single) or on
// every GPU of `acc launch --multi_gpu` (DDP over NCCL, or with --strategy fsdp FSDP FULL_SHARD with one unit per
// block). Prints, on rank 0, ms/step and tokens/s (all ranks together), the peak GPU memory, and how much of the
// gradient all-reduce is hidden behind backward: the step with synchronization vs the same step inside no_sync (no
// communication), against the time the same all-reduces take alone.
//
//   acc launch --multi_gpu --num_processes 2 build-gpu/bin/gpt_ddp [--steps 30] [--warmup 5] [--repeats 1]
// (ms/step: the median of --repeats windows of --steps steps)
// With --data FILE the model learns that text instead, its bytes as tokens: random windows of the
// first 90% for training, and at the end the mean loss over 16 fixed batches of the last 10%
// (eval_loss), the loss to compare between precisions.
#include <acc/acc.hpp>

#include "common/gpt.hpp"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Settings {
  int steps = 30, warmup = 5, repeats = 1, breakdown = 10;  // breakdown: steps timed phase by phase
  int64_t batch = 16;
  std::string precision = "bf16";
  std::string strategy = "ddp";            // with more than one process; fsdp: FULL_SHARD, one unit per block
  bool offload = false;                    // FSDP's offload_params: shards and AdamW state in host memory
  bool activation_checkpointing = false;   // every block recomputes its forward in backward
  bool largest_batch = false;              // one process: search the largest batch a step fits with
  std::string fp8_scaling = "tensorwise";  // --precision fp8: tensorwise (torchao's) or delayed (TE's)
  std::string data;                        // a text file: its bytes are the tokens (see the top)
  bool capture = false;                    // each step replays one CUDA graph (acc::capture_step)
  bench::GptConfig model;
};

// The median over `repeats` windows of `steps` steps each, after `warmup` steps.
template <class Accelerator, class Step>
double ms_per_step(Accelerator& accelerator, int warmup, int steps, int repeats, Step&& step) {
  for (int i = 0; i < warmup; ++i) step();
  accelerator.wait_for_everyone();
  std::vector<double> windows;
  for (int r = 0; r < repeats; ++r) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    for (int i = 0; i < steps; ++i) step();
    stop.record();
    stop.synchronize();
    windows.push_back(start.elapsed_time(stop) / steps);
  }
  std::sort(windows.begin(), windows.end());
  return windows[windows.size() / 2];
}

template <class Strategy, class Precision>
int run(const Settings& s) {
  // Gradients reduce in the compute dtype, as Python Accelerate's FSDP plugin sets reduce_dtype
  // under mixed_precision (our default reduces in the shards' float32).
  acc::Accelerator<Strategy, Precision> accelerator(
      acc::AcceleratorOptions()
          .fsdp(acc::FSDPOptions().offload_params(s.offload).reduce_dtype(Precision::compute_dtype))
          .activation_checkpointing(s.activation_checkpointing)
          .fp8(acc::FP8Recipe().scaling(s.fp8_scaling == "delayed" ? acc::FP8Recipe::Scaling::delayed
                                                                   : acc::FP8Recipe::Scaling::tensorwise)));
  accelerator.set_seed(0);
  const bench::GptConfig config = s.model;
  bench::Gpt net(config);
  acc::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.01));
  auto [model, optimizer] = accelerator.prepare(net, opt);
  // A pool of batches, cycled: sequence i is start_i + t stride_i (mod vocab).
  constexpr int64_t kBatches = 32;
  const auto on_device = at::TensorOptions(accelerator.device()).dtype(at::kLong);
  const auto starts = torch::randint(0, config.vocab, {kBatches, s.batch, 1}, on_device);
  const auto strides = torch::randint(1, 64, {kBatches, s.batch, 1}, on_device);
  const auto pool = (starts + strides * torch::arange(config.seq + 1, on_device)).remainder(config.vocab);
  // --data: the text's bytes, windows drawn from the first 90% by the seeded generator (the same
  // windows under every precision), the rest held out.
  at::Tensor text, window;
  int64_t held_out_from = 0;
  if (!s.data.empty()) {
    std::ifstream in(s.data, std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!in || static_cast<int64_t>(bytes.size()) < 20 * (config.seq + 1))
      throw acc::Error("--data " + s.data + ": not readable or shorter than 20 windows of --seq + 1 bytes");
    text = torch::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())}, at::kByte)
               .to(on_device);
    held_out_from = text.size(0) * 9 / 10;
    window = torch::arange(config.seq + 1, on_device);
  }
  auto text_batch = [&](int64_t from, int64_t to) {
    return text.index({torch::randint(from, to - config.seq - 1, {s.batch, 1}, on_device) + window});
  };
  int64_t next_batch = 0;
  at::Tensor recent_loss = torch::zeros({}, at::TensorOptions(accelerator.device()));
  constexpr int kLossWindow = 10;  // the final loss: the mean of the last steps'
  int steps_taken = 0;
  const int total_steps = s.warmup + s.steps * s.repeats;
  auto train_step = [&](const at::Tensor& ids) {
    const auto inputs = ids.narrow(1, 0, config.seq), targets = ids.narrow(1, 1, config.seq);
    optimizer.zero_grad();
    auto logits = model(inputs);
    auto loss = torch::nn::functional::cross_entropy(logits.view({-1, config.vocab}), targets.reshape({-1}));
    accelerator.backward(loss);
    optimizer.step();
    return loss.detach();
  };
  std::optional<decltype(acc::capture_step(accelerator, optimizer, train_step))> captured;
  if (s.capture) captured.emplace(accelerator, optimizer, train_step, acc::CaptureOptions());
  auto step = [&] {
    const auto ids = text.defined() ? text_batch(0, held_out_from) : pool[next_batch++ % kBatches];
    const auto loss = captured ? (*captured)(ids) : train_step(ids);
    if (++steps_taken > total_steps - kLossWindow) recent_loss += loss / kLossWindow;
  };
  const double ms = ms_per_step(accelerator, s.warmup, s.steps, s.repeats, step);
  const double final_loss = recent_loss.item<double>();
  double eval_loss = 0;
  if (text.defined()) {
    constexpr int kEvalBatches = 16;
    torch::NoGradGuard no_grad;
    at::manual_seed(1);  // the same held-out batches whatever the training drew
    for (int i = 0; i < kEvalBatches; ++i) {
      const auto ids = text_batch(held_out_from, text.size(0));
      const auto logits = model(ids.narrow(1, 0, config.seq));
      const auto loss = torch::nn::functional::cross_entropy(logits.view({-1, config.vocab}),
                                                             ids.narrow(1, 1, config.seq).reshape({-1}));
      eval_loss += acc::item<double>(loss) / kEvalBatches;
    }
  }
  const auto inputs = pool[0].narrow(1, 0, config.seq), targets = pool[0].narrow(1, 1, config.seq);
  {  // where a step's time goes: forward (to the loss), backward, optimizer
    at::cuda::CUDAEvent begin(cudaEventDefault), modelled(cudaEventDefault), forward(cudaEventDefault),
        backward(cudaEventDefault), done(cudaEventDefault);
    double phase[3] = {0, 0, 0}, host_forward = 0, model_only = 0;
    for (int i = 0; i < s.breakdown; ++i) {
      begin.record();
      const auto host_start = std::chrono::steady_clock::now();
      optimizer.zero_grad();
      auto logits = model(inputs);
      modelled.record();
      auto loss = torch::nn::functional::cross_entropy(logits.view({-1, config.vocab}), targets.reshape({-1}));
      host_forward += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start).count() /
                      s.breakdown;
      forward.record();
      accelerator.backward(loss);
      backward.record();
      optimizer.step();
      done.record();
      done.synchronize();
      phase[0] += begin.elapsed_time(forward) / s.breakdown;
      model_only += begin.elapsed_time(modelled) / s.breakdown;
      phase[1] += forward.elapsed_time(backward) / s.breakdown;
      phase[2] += backward.elapsed_time(done) / s.breakdown;
    }
    accelerator.print("acc gpt breakdown ms: forward", phase[0], "(model", model_only, ") backward", phase[1],
                      "optimizer", phase[2], "host time to issue the forward", host_forward);
  }
  const int world = accelerator.num_processes();
  const double tokens_per_s = world * s.batch * config.seq / (ms / 1000.0);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(accelerator.device().index());
  const double peak_gib =
      static_cast<double>(
          stats.allocated_bytes[static_cast<std::size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak) /
      (1024.0 * 1024.0 * 1024.0);
  const std::string precision =
      std::string(Precision::name) + (std::is_same_v<Precision, acc::FP8> ? "_" + s.fp8_scaling : std::string());
  accelerator.print("acc gpt ranks=" + std::to_string(world), "precision=" + precision,
                    "layers=" + std::to_string(config.layers), "dim=" + std::to_string(config.dim),
                    "ms_per_step=" + std::to_string(ms), "tokens_per_s=" + std::to_string(tokens_per_s),
                    "final_loss=" + std::to_string(final_loss), "eval_loss=" + std::to_string(eval_loss),
                    "peak_gib=" + std::to_string(peak_gib),
                    "strategy=" + std::string(Strategy::name) + (s.offload ? "_offload" : ""),
                    "batch=" + std::to_string(s.batch), "steps=" + std::to_string(s.warmup + s.steps * s.repeats),
                    "activation_checkpointing=" + std::to_string(static_cast<int>(s.activation_checkpointing)),
                    "captured=" + std::to_string(static_cast<int>(captured && captured->captured())));
  if (s.largest_batch) {
    // Doubling from --batch until a step runs out of memory, then halving the gap: the largest batch
    // whose step (forward, backward, AdamW) fits, within 1/16 of it. One process only: an
    // out-of-memory error on one rank of several would leave the others in a collective.
    if (world != 1) throw acc::Error("gpt_ddp --largest_batch 1 runs on one process");
    auto fits = [&](int64_t batch) {
      try {
        const auto more = torch::randint(0, config.vocab, {batch, config.seq + 1},
                                         at::TensorOptions(accelerator.device()).dtype(at::kLong));
        optimizer.zero_grad();
        auto logits = model(more.narrow(1, 0, config.seq));
        accelerator.backward(torch::nn::functional::cross_entropy(logits.view({-1, config.vocab}),
                                                                  more.narrow(1, 1, config.seq).reshape({-1})));
        optimizer.step();
        torch::cuda::synchronize();
        return true;
      } catch (const c10::Error& error) {
        if (!acc::detail::is_out_of_memory(error)) throw;
        optimizer.zero_grad();
        acc::free_memory();
        return false;
      }
    };
    int64_t good = 0, bad = s.batch;
    while (fits(bad)) {
      good = bad;
      bad *= 2;
    }
    while (good > 0 && bad - good > std::max<int64_t>(1, good / 16)) {
      const int64_t middle = (good + bad) / 2;
      (fits(middle) ? good : bad) = middle;
    }
    accelerator.print("acc gpt largest_batch=" + std::to_string(good),
                      "activation_checkpointing=" + std::to_string(static_cast<int>(s.activation_checkpointing)),
                      "layers=" + std::to_string(config.layers));
  }

  if constexpr (std::is_same_v<Strategy, acc::DDP<acc::Nccl>>) {
    // The same step without communication: forward and backward under no_sync, plus the
    // optimizer's kernel.
    auto local_step = [&] {
      {
        auto local = accelerator.no_sync(model);
        auto logits = model(inputs);
        accelerator.backward(
            torch::nn::functional::cross_entropy(logits.view({-1, config.vocab}), targets.reshape({-1})));
      }
      opt.step();
      optimizer.zero_grad();
    };
    const double local_ms = ms_per_step(accelerator, s.warmup, s.steps, s.repeats, local_step);
    // The gradient all-reduces alone: the same bucket sizes, back to back.
    int64_t numel = 0;
    for (const auto& p : net->parameters()) numel += p.numel();
    auto& comm = accelerator.strategy().comm();
    const int64_t bucket = 25 * 1024 * 1024 / 4;
    std::vector<at::Tensor> buffers;
    for (int64_t done = 0; done < numel; done += bucket)
      buffers.push_back(at::ones({std::min(bucket, numel - done)}, at::TensorOptions(accelerator.device())));
    auto reduce_all = [&] {
      for (auto& b : buffers) comm.all_reduce(b, acc::ReduceOp::mean);
    };
    const double allreduce_ms = ms_per_step(accelerator, s.warmup, s.steps, s.repeats, reduce_all);
    const double exposed = std::max(0.0, ms - local_ms);
    accelerator.print("acc gpt ranks=" + std::to_string(world), "step_without_comm_ms=" + std::to_string(local_ms),
                      "exposed_comm_ms=" + std::to_string(exposed),
                      "allreduce_alone_ms=" + std::to_string(allreduce_ms),
                      "hidden_fraction=" + std::to_string(1.0 - exposed / allreduce_ms),
                      "buckets=" + std::to_string(accelerator.strategy().bucket_count()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  const std::map<std::string, std::function<void(const std::string&)>> flags{
      {"--steps", [&](const std::string& v) { s.steps = std::stoi(v); }},
      {"--warmup", [&](const std::string& v) { s.warmup = std::stoi(v); }},
      {"--repeats", [&](const std::string& v) { s.repeats = std::stoi(v); }},
      {"--breakdown", [&](const std::string& v) { s.breakdown = std::max(1, std::stoi(v)); }},
      {"--batch", [&](const std::string& v) { s.batch = std::stoll(v); }},
      {"--precision", [&](const std::string& v) { s.precision = v; }},
      {"--layers", [&](const std::string& v) { s.model.layers = std::stoll(v); }},
      {"--seq", [&](const std::string& v) { s.model.seq = std::stoll(v); }},
      {"--vocab", [&](const std::string& v) { s.model.vocab = std::stoll(v); }},
      {"--dim", [&](const std::string& v) { s.model.dim = std::stoll(v); }},
      {"--heads", [&](const std::string& v) { s.model.heads = std::stoll(v); }},
      {"--strategy", [&](const std::string& v) { s.strategy = v; }},
      {"--offload", [&](const std::string& v) { s.offload = v == "1" || v == "true"; }},
      {"--activation_checkpointing",
       [&](const std::string& v) { s.activation_checkpointing = v == "1" || v == "true"; }},
      {"--largest_batch", [&](const std::string& v) { s.largest_batch = v == "1" || v == "true"; }},
      {"--fp8_scaling", [&](const std::string& v) { s.fp8_scaling = v; }},
      {"--data", [&](const std::string& v) { s.data = v; }},
      {"--capture", [&](const std::string& v) { s.capture = v == "1" || v == "true"; }},
  };
  for (int i = 1; i + 1 < argc; i += 2) {
    const auto flag = flags.find(argv[i]);
    if (flag == flags.end()) {
      std::cerr << "gpt_ddp: unknown flag " << argv[i]
                << " (use --steps, --warmup, --repeats, --breakdown, --batch, --precision no|fp16|bf16|fp8, --layers, "
                   "--seq, --vocab, --dim, "
                   "--heads, --strategy ddp|fsdp, --offload 0|1, --activation_checkpointing 0|1, --largest_batch 0|1, "
                   "--fp8_scaling tensorwise|delayed, --data FILE, --capture 0|1)\n";
      return 2;
    }
    flag->second(argv[i + 1]);
  }
  const auto env = acc::ProcessEnvironment::from_environment();
  if (s.strategy == "fsdp")
    return s.precision == "fp8" ? run<acc::FSDP<acc::Nccl, acc::FullShard>, acc::FP8>(s)
                                : run<acc::FSDP<acc::Nccl, acc::FullShard>, acc::BF16>(s);
  if (env.world_size > 1)
    return s.precision == "fp8" ? run<acc::DDP<acc::Nccl>, acc::FP8>(s) : run<acc::DDP<acc::Nccl>, acc::BF16>(s);
  if (s.precision == "no") return run<acc::Single, acc::FP32>(s);
  if (s.precision == "fp16") return run<acc::Single, acc::FP16>(s);
  if (s.precision == "fp8") return run<acc::Single, acc::FP8>(s);
  return run<acc::Single, acc::BF16>(s);
}

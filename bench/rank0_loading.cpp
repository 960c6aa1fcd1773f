// rank0_loading: host memory of loading a GPT-like model (common/gpt.hpp, about 1 B parameters by
// default) from safetensors into FSDP (FULL_SHARD over Gloo), with and without rank-0 loading
// (FSDPOptions::cpu_ram_efficient_loading), per rank, as a ratio of the model's bytes. Run by
// bench/rank0_loading.sh:
//   rank0_loading save DIR                          one process: a seeded model, DIR/model.safetensors
//   acc launch --cpu --num_processes N rank0_loading load DIR [--rank0]
// `load` without --rank0: every rank builds the model with real weights and loads the file into it
// (the normal path). With --rank0: rank 0 builds it empty and loads the file tensor by tensor, the
// other ranks build it empty; prepare() sends each rank its shards from rank 0. Each rank prints
// its peak resident memory (VmHWM: the whole process, libtorch included) over the model's bytes,
// and the loss of one forward pass, which both paths must give alike.
#include "common/gpt.hpp"
#include "common/peak_rss.hpp"

#include <acc/acc.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/module_state.hpp>

#include <ATen/core/grad_mode.h>
#include <torch/nn/functional/loss.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

// d = 2048, 18 blocks: 12 d^2 + 13 d per block, 2 x 32768 x d for the embedding and the head,
// 256 x d positions: 1.04 B parameters, 4.2 GB in float32.
bench::GptConfig config() {
  bench::GptConfig c;
  c.layers = 18;
  c.dim = 2048;
  c.heads = 16;
  c.vocab = 32768;
  c.seq = 256;
  return c;
}

int64_t model_bytes(const torch::nn::Module& model) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  for (const auto& b : model.buffers()) bytes += b.numel() * static_cast<int64_t>(b.element_size());
  return bytes;
}

bench::Gpt empty_gpt() {
  const auto empty = acc::init_empty_weights();
  return bench::Gpt(config());
}

int save(const std::filesystem::path& dir) {
  torch::manual_seed(0);
  bench::Gpt model(config());
  std::filesystem::create_directories(dir);
  acc::safetensors::save_file(acc::detail::module_state(*model), dir / "model.safetensors", {{"format", "pt"}});
  std::printf("saved %s: %.3f B parameters, %lld bytes\n", (dir / "model.safetensors").c_str(),
              model_bytes(*model) / 4e9, static_cast<long long>(model_bytes(*model)));
  return 0;
}

int load(const std::filesystem::path& dir, bool rank0_loading) {
  acc::Accelerator<acc::FSDP<acc::Gloo, acc::FullShard>> accelerator(
      acc::AcceleratorOptions().cpu(true).fsdp(acc::FSDPOptions().cpu_ram_efficient_loading(rank0_loading)));
  bench::Gpt model{nullptr};
  if (rank0_loading) {
    model = empty_gpt();
    if (accelerator.is_main_process()) acc::load_checkpoint_in_model(*model, dir);
  } else {
    model = bench::Gpt(config());
    acc::load_checkpoint_in_model(*model, dir);
  }
  const auto bytes = model_bytes(*model);
  const double loaded = static_cast<double>(peak_rss::peak()) / static_cast<double>(bytes);
  auto prepared = accelerator.prepare(model);
  const double prepared_peak = static_cast<double>(peak_rss::peak()) / static_cast<double>(bytes);
  const double resident = static_cast<double>(peak_rss::current()) / static_cast<double>(bytes);
  // One forward pass on the same tokens everywhere: equal losses say the shards are alike.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(1);
  const auto ids = at::randint(config().vocab, {1, 16}, generator);
  at::Tensor loss;
  {
    at::NoGradGuard no_grad;
    const auto logits = prepared(ids);
    loss = torch::nn::functional::cross_entropy(logits.view({-1, config().vocab}), ids.view({-1}));
  }
  std::printf(
      "rank0_loading mode=%s rank=%d of=%d model_bytes=%lld peak_after_load=%.3f peak_after_prepare=%.3f "
      "resident_after_prepare=%.3f loss=%.6f\n",
      rank0_loading ? "rank0" : "normal", accelerator.process_index(), accelerator.num_processes(),
      static_cast<long long>(bytes), loaded, prepared_peak, resident, loss.item<double>());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::strcmp(argv[1], "save") == 0) return save(argv[2]);
    if ((argc == 3 || argc == 4) && std::strcmp(argv[1], "load") == 0)
      return load(argv[2], argc == 4 && std::strcmp(argv[3], "--rank0") == 0);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: rank0_loading save DIR | rank0_loading load DIR [--rank0] (under acc launch)\n";
  return 2;
}

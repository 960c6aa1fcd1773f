// big_model_inference: a small GPT saved as a safetensors checkpoint, then built empty
// (acc::init_empty_weights) and loaded tensor by tensor onto memory budgets
// (acc::load_checkpoint_and_dispatch with device_map "auto"), and used for greedy decoding with
// and without a KV cache; it checks that the dispatched model generates the tokens the model
// generated before, both ways, and exits with 1 if not.
//
//   build/bin/big_model_inference --max_memory cpu=1MB,disk=10MB --offload_dir /tmp/offload
//
// With budgets too small for the whole model on the CPU, the last blocks go to disk: their weights
// are read, memory-mapped, from the checkpoint's file for each of their calls.
#include "../common/flags.hpp"
#include "gpt.hpp"

#include <torch/torch.h>
#include <acc/acc.hpp>

#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {

// "cpu=1MB,disk=10MB" -> {{"cpu", "1MB"}, {"disk", "10MB"}}.
acc::MaxMemory parse_max_memory(const std::string& text) {
  acc::MaxMemory budgets;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto equals = item.rfind('=');
    if (equals == std::string::npos)
      throw acc::Error("--max_memory '" + text +
                       "': write device=size pairs separated by commas, e.g. cpu=1MB,disk=10MB");
    budgets.emplace(item.substr(0, equals), item.substr(equals + 1));
  }
  return budgets;
}

// Seconds `generate` takes, and what it returns.
template <class Generate>
std::pair<at::Tensor, double> timed(Generate&& generate) {
  const auto start = std::chrono::steady_clock::now();
  auto tokens = generate();
  return {tokens, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

}  // namespace

int run(int argc, char** argv) {
  std::string max_memory = "cpu=1MB,disk=10MB", offload_dir = "big_model_offload";
  int64_t new_tokens = 24, seed = 0;
  examples::Flags flags("big_model_inference",
                        "Saves a small GPT, loads it onto memory budgets, and checks that greedy decoding (with and "
                        "without a KV cache) gives the tokens of the model before.");
  flags.add("--max_memory", max_memory, "device=size budgets: GPU indices, cpu, disk")
      .add("--offload_dir", offload_dir, "where the checkpoint is written (and converted disk weights would be)")
      .add("--new_tokens", new_tokens, "tokens to generate")
      .add("--seed", seed, "weights and prompt");
  flags.parse(argc, argv);

  torch::manual_seed(seed);
  const big_model::GptConfig config;
  big_model::Gpt trained(config);
  const auto prompt = torch::randint(config.vocab, {1, 8});
  torch::NoGradGuard no_grad;  // offloaded weights come and go: inference only
  const auto [expected, plain] = timed([&] { return big_model::generate(trained, prompt, new_tokens); });

  // The weights as Hugging Face's model.safetensors holds them: each parameter and buffer by name.
  const auto checkpoint = std::filesystem::path(offload_dir) / "checkpoint";
  std::filesystem::create_directories(checkpoint);
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : trained->named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : trained->named_buffers()) state.emplace_back(b.key(), b.value());
  acc::safetensors::save_file(state, checkpoint / "model.safetensors", {{"format", "pt"}});

  big_model::Gpt gpt{nullptr};
  {
    const auto empty = acc::init_empty_weights();
    gpt = big_model::Gpt(config);  // shapes and dtypes, no memory
  }
  acc::LoadAndDispatchOptions options;
  options.max_memory = parse_max_memory(max_memory);
  options.no_split = {"Block"};
  options.offload_dir = offload_dir;
  auto model = acc::load_checkpoint_and_dispatch(gpt, checkpoint, "auto", options);
  std::cout << "device map: " << model.device_map() << "\n";

  const auto [tokens, dispatched] = timed([&] { return big_model::generate(model, prompt, new_tokens); });
  const auto [cached_tokens, cached] =
      timed([&] { return big_model::generate_cached(model, config, prompt, new_tokens); });
  std::cout << new_tokens << " tokens: " << new_tokens / plain << " tokens/s undispatched, " << new_tokens / dispatched
            << " tokens/s dispatched, " << new_tokens / cached << " tokens/s dispatched with a KV cache\n";
  if (!at::equal(tokens, expected)) {
    std::cout << "the dispatched model generated other tokens than the undispatched model\n";
    return 1;
  }
  std::cout << "the same tokens as the undispatched model\n";
  if (!at::equal(cached_tokens, expected)) {
    std::cout << "with a KV cache, the dispatched model generated other tokens: " << cached_tokens << "\n";
    return 1;
  }
  std::cout << "with a KV cache, the same tokens again\n";
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const acc::Error& e) {  // a budget, map or flag that cannot work: the message says why
    std::cerr << "big_model_inference: " << e.what() << "\n";
    return 2;
  }
}

// big_inference: big-model inference with acc, the C++ half of bench/big_inference.sh (the Python
// half is bench/py/big_inference_accelerate.py, which reads the same files).
//   big_inference save DIR [--layers 24 --dim 2048 --heads 16 --vocab 32000 --context 512
//                           --dtype bf16 --gpus 1 --offload 0.5 --prompt 32 --max_shard_size 2GB
//                           --gpu_budget SIZE]
//     a seeded GPT (examples/big_model_inference/gpt.hpp) written in Hugging Face's layout:
//     DIR/model-0000i-of-0000n.safetensors and model.safetensors.index.json (or one
//     model.safetensors), DIR/config.json with the model's sizes, its dtype and the device map both
//     sides load it with, and DIR/prompt.safetensors.
//   big_inference run DIR [--new_tokens 64]
//     builds the model empty, loads and dispatches the checkpoint with that map
//     (acc::load_checkpoint_and_dispatch), decodes greedily with a KV cache, and prints one line:
//     time to first token from the start of the process, load time, decoding tokens/s (after the
//     first token), peak host memory (VmHWM) and the tokens.
// The map: the last `offload` of the blocks on "cpu" (offloaded, copied to GPU 0 for each call),
// the others split evenly over the GPUs in order, the rest of the model on GPU 0. With --gpus 0 the
// model runs on the CPU and the offloaded blocks go to "disk" instead: a small run of the whole
// path on a machine without a GPU. With --gpu_budget the map is acc::infer_auto_device_map's for GPU 0
// within that budget and the CPU for the rest, whole blocks each.
#include "../examples/big_model_inference/gpt.hpp"
#include "../examples/common/flags.hpp"
#include "common/peak_rss.hpp"

#include <acc/big_modeling/init_empty_weights.hpp>
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/dispatch/infer_auto_device_map.hpp>
#include <acc/dispatch/load_checkpoint_and_dispatch.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Seconds since this process started, as the kernel counts them (/proc/self/stat's starttime
// against /proc/uptime, in 10 ms ticks): its loading of libtorch included, as Python's time to
// first token includes its imports.
double seconds_since_process_start() {
  std::ifstream stat("/proc/self/stat");
  std::string text;
  std::getline(stat, text);
  std::istringstream fields(text.substr(text.rfind(')') + 2));  // from field 3, the state, on
  std::string field;
  for (int number = 3; number <= 22; ++number) fields >> field;  // 22: starttime
  double uptime = 0;
  std::ifstream("/proc/uptime") >> uptime;
  return uptime - std::stod(field) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

at::ScalarType dtype_of(const std::string& name) {
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp16") return at::kHalf;
  if (name == "fp32") return at::kFloat;
  throw acc::Error("--dtype '" + name + "': give bf16, fp16 or fp32");
}

// See the top of this file.
acc::DeviceMap device_map(int64_t layers, int64_t gpus, double offload) {
  const auto offloaded = static_cast<int64_t>(std::lround(static_cast<double>(layers) * offload));
  const auto resident = layers - offloaded;
  acc::DeviceMap map{{"", gpus > 0 ? acc::Placement(0) : acc::Placement::cpu()}};
  for (int64_t i = 0; i < layers; ++i) {
    const auto name = "blocks." + std::to_string(i);
    if (i >= resident)
      map.set(name, gpus > 0 ? acc::Placement::cpu() : acc::Placement::disk());
    else if (gpus > 1)
      map.set(name, static_cast<int>(i * gpus / resident));
  }
  return map;
}

nlohmann::ordered_json map_json(const acc::DeviceMap& map) {
  auto json = nlohmann::ordered_json::object();
  for (const auto& [name, placement] : map.entries()) {
    if (placement.is_gpu())
      json[name] = placement.gpu_index();
    else
      json[name] = placement.to_string();
  }
  return json;
}

acc::DeviceMap map_from_json(const nlohmann::ordered_json& json) {
  acc::DeviceMap map;
  for (const auto& [name, placement] : json.items())
    map.set(name, placement.is_number() ? acc::Placement(placement.get<int>())
                                        : acc::Placement(placement.get<std::string>()));
  return map;
}

int save(const fs::path& dir, int argc, char** argv) {
  big_model::GptConfig config{32000, 2048, 16, 24, 512};
  std::string dtype = "bf16", max_shard_size = "2GB";
  int64_t gpus = 1, prompt = 32;
  double offload = 0.5;
  std::string gpu_budget;
  examples::Flags flags("big_inference save", "Writes a seeded GPT checkpoint, its config and a prompt.");
  flags.add("--layers", config.layers, "blocks")
      .add("--dim", config.dim, "width")
      .add("--heads", config.heads, "attention heads")
      .add("--vocab", config.vocab, "vocabulary")
      .add("--context", config.context, "positions")
      .add("--dtype", dtype, "bf16, fp16 or fp32")
      .add("--gpus", gpus, "GPUs the map spreads the resident blocks over (0: CPU and disk)")
      .add("--offload", offload, "the fraction of the blocks offloaded (to cpu, or disk without GPUs)")
      .add("--gpu_budget", gpu_budget,
           "GPU 0's budget (e.g. 20GiB): the map is then infer_auto_device_map's, "
           "the rest on the CPU (instead of --gpus and --offload)")
      .add("--prompt", prompt, "prompt tokens")
      .add("--max_shard_size", max_shard_size, "largest checkpoint file");
  flags.parse(argc, argv);

  torch::manual_seed(0);
  big_model::Gpt gpt(config);
  gpt->to(dtype_of(dtype));
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& p : gpt->named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : gpt->named_buffers()) state.emplace_back(b.key(), b.value());
  std::vector<uint64_t> bytes;
  uint64_t total = 0;
  for (const auto& entry : state) {
    bytes.push_back(static_cast<uint64_t>(entry.second.numel() * entry.second.element_size()));
    total += bytes.back();
  }
  // Hugging Face's layout, as Accelerator::save_model writes it.
  const auto shards = acc::weights::plan_shards(bytes, static_cast<uint64_t>(acc::ShardSize(max_shard_size).bytes()));
  std::vector<std::string> names;
  std::map<std::string, std::string> weight_map;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    names.push_back(shards.size() == 1 ? acc::weights::kSingleFile : acc::weights::shard_file_name(i, shards.size()));
    for (const auto t : shards[i]) weight_map[state[t].first] = names.back();
  }
  acc::weights::write_model_files(
      dir, names,
      [&](std::size_t i, const fs::path& path) {
        std::vector<std::pair<std::string, at::Tensor>> tensors;
        for (const auto t : shards[i]) tensors.push_back(state[t]);
        acc::safetensors::save_file(tensors, path, {{"format", "pt"}});
      },
      acc::weights::index_json(total, weight_map));

  nlohmann::ordered_json json;
  json["vocab"] = config.vocab;
  json["dim"] = config.dim;
  json["heads"] = config.heads;
  json["layers"] = config.layers;
  json["context"] = config.context;
  json["dtype"] = dtype;
  json["device_map"] =
      map_json(gpu_budget.empty() ? device_map(config.layers, gpus, offload)
                                  : acc::infer_auto_device_map(gpt, {{"0", gpu_budget}, {"cpu", "4096GiB"}},
                                                               acc::DeviceMapOptions{{"Block"}}));
  std::ofstream(dir / "config.json") << json.dump(2) << "\n";
  acc::safetensors::save_file({{"ids", torch::randint(config.vocab, {1, prompt})}}, dir / "prompt.safetensors");
  std::printf("big_inference saved %s: %zu file(s), %llu bytes, device map %s\n", dir.c_str(), names.size(),
              static_cast<unsigned long long>(total), map_from_json(json["device_map"]).to_string().c_str());
  return 0;
}

int run(const fs::path& dir, int argc, char** argv) {
  int64_t new_tokens = 64;
  examples::Flags flags("big_inference run", "Loads the checkpoint with acc and decodes greedily with a KV cache.");
  flags.add("--new_tokens", new_tokens, "tokens to generate");
  flags.parse(argc, argv);
  if (new_tokens < 2) throw acc::Error("--new_tokens " + std::to_string(new_tokens) + ": give 2 or more");

  nlohmann::ordered_json json;
  std::ifstream(dir / "config.json") >> json;
  const auto size = [&](const char* key) { return json.at(key).get<int64_t>(); };
  const big_model::GptConfig config{size("vocab"), size("dim"), size("heads"), size("layers"), size("context")};
  const auto map = map_from_json(json.at("device_map"));

  big_model::Gpt gpt{nullptr};
  {
    const auto empty = acc::init_empty_weights();
    gpt = big_model::Gpt(config);
  }
  acc::LoadAndDispatchOptions options;
  options.dtype = dtype_of(json.at("dtype").get<std::string>());
  // Counted on the empty model: after dispatch an offloaded unit's parameters hold no storage.
  int64_t model_bytes = 0;
  for (const auto& p : gpt->parameters())
    model_bytes += p.numel() * static_cast<int64_t>(c10::elementSize(*options.dtype));
  options.offload_dir = dir / "acc_offload";
  const auto load_start = Clock::now();
  auto model = acc::load_checkpoint_and_dispatch(gpt, dir, map, options);
  const auto load_s = seconds_since(load_start);

  c10::InferenceMode inference;
  const auto prompt =
      acc::safetensors::load_file(dir / "prompt.safetensors").tensors.at("ids").to(model.execution_device());
  double first_token_s = 0;
  Clock::time_point first_token;
  int64_t chosen = 0;
  const auto tokens = big_model::generate_cached(model, config, prompt, new_tokens, [&](const at::Tensor& next) {
    if (chosen++ > 0) return;
    (void)next.to(at::kCPU);  // waits for the GPU: the token is there
    first_token = Clock::now();
    first_token_s = seconds_since_process_start();
  });
  const auto generated = tokens.narrow(1, prompt.size(1), new_tokens).to(at::kCPU).contiguous();
  const auto decode_s = seconds_since(first_token);

  std::string text;
  for (int64_t i = 0; i < new_tokens; ++i) text += (i ? "," : "") + std::to_string(generated[0][i].item<int64_t>());
  std::printf(
      "acc big_inference ttft_s=%.3f load_s=%.3f tokens_per_s=%.2f peak_host_bytes=%lld model_bytes=%lld "
      "new_tokens=%lld tokens=%s\n",
      first_token_s, load_s, static_cast<double>(new_tokens - 1) / decode_s, static_cast<long long>(peak_rss::peak()),
      static_cast<long long>(model_bytes), static_cast<long long>(new_tokens), text.c_str());
  std::printf("acc big_inference device_map=%s\n", map.to_string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string usage = "usage: big_inference save|run DIR [flags]";
    if (argc < 3) throw acc::Error(usage);
    const std::string mode = argv[1];
    const fs::path dir = argv[2];
    if (mode == "save") return save(dir, argc - 2, argv + 2);
    if (mode == "run") return run(dir, argc - 2, argv + 2);
    throw acc::Error(usage);
  } catch (const acc::Error& e) {
    std::cerr << "big_inference: " << e.what() << "\n";
    return 2;
  }
}

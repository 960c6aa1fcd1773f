// acc_device_map: the device map that `acc estimate-memory MODEL --device_map NAME --max_memory LIST`
// shows. A libtorch program, unlike acc itself, built and installed next to it (as acc_sanity_check
// is for acc test). It builds an empty model shaped like the checkpoint, on the meta device, and
// plans it with the library's own named device maps (acc::infer_auto_device_map and
// acc::balanced_memory, as load_checkpoint_and_dispatch plans), so that the map printed is the one
// a program would get for a model whose units are the checkpoint's modules. Without the model's
// class, every module a tensor name implies ("layers.3" in "layers.3.attn.weight") is a unit, in the
// order the tensors were saved, and its class name is its path with each number as `*`
// ("layers.*"): what --no_split names.
//
//   acc_device_map COMMAND MODEL DEVICE_MAP MAX_MEMORY NO_SPLIT DTYPE
//   acc_device_map --free_memory     (for acc env: the budgets "auto" plans within by default)
//
// COMMAND is the acc command that runs it (estimate-memory or env), which its errors name;
// MAX_MEMORY is "DEVICE=SIZE,..." or empty (what the devices have free), NO_SPLIT is class names
// separated by commas, DTYPE is float32, bfloat16, float16 or empty (the checkpoint's dtypes).
#include <acc/checkpoint/safetensors.hpp>
#include <acc/checkpoint/weight_shards.hpp>
#include <acc/dispatch/available_memory.hpp>
#include <acc/dispatch/load_checkpoint_and_dispatch.hpp>
#include <acc/dispatch/memory_size.hpp>
#include <acc/error.hpp>
#include <acc/fsdp/unit.hpp>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace {

// A module of the checkpoint's names: it holds what the tensor names put in it, nothing else.
struct CheckpointModuleImpl : torch::nn::Module {
  explicit CheckpointModuleImpl(std::string class_name) : torch::nn::Module(std::move(class_name)) {}
};
TORCH_MODULE(CheckpointModule);

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> pieces;
  if (text.empty()) return pieces;
  std::size_t start = 0;
  for (std::size_t at; (at = text.find(separator, start)) != std::string::npos; start = at + 1)
    pieces.push_back(text.substr(start, at - start));
  pieces.push_back(text.substr(start));
  return pieces;
}

// "layers.3.attn" -> "layers.*.attn": the modules a repeated block makes share a class name.
std::string class_name(const std::string& path) {
  std::string name;
  for (const auto& component : split(path, '.')) {
    const bool number =
        std::all_of(component.begin(), component.end(), [](unsigned char c) { return std::isdigit(c); });
    name += (name.empty() ? "" : ".") + (number ? std::string("*") : component);
  }
  return name;
}

std::optional<at::ScalarType> parse_dtype(const std::string& text) {
  if (text.empty()) return std::nullopt;
  if (text == "float32") return at::kFloat;
  if (text == "bfloat16") return at::kBFloat16;
  if (text == "float16") return at::kHalf;
  throw acc::Error("--dtype '" + text + "' is not one of float32, bfloat16, float16");
}

acc::MaxMemory parse_max_memory(const std::string& text) {
  acc::MaxMemory budgets;
  for (const auto& entry : split(text, ',')) {
    const auto equals = entry.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == entry.size())
      throw acc::Error("--max_memory '" + text + "': '" + entry +
                       "' is not DEVICE=SIZE; give budgets such as 0=20GiB,1=20GiB,cpu=64GiB,disk=1TB");
    budgets.emplace(entry.substr(0, equals), acc::MemorySize(entry.substr(equals + 1)));
  }
  return budgets;
}

// The empty model: a module per name prefix, each a unit, its tensors in the order they were saved
// (file by file, by their place in the file), so that the map places them in model order, each in
// the dtype of the file.
std::shared_ptr<torch::nn::Module> empty_model_like(const std::string& checkpoint) {
  struct Entry {
    std::size_t file;
    uint64_t begin;
    std::string name;
    acc::safetensors::TensorInfo info;
  };
  std::vector<Entry> entries;
  const auto files = acc::weights::model_files(checkpoint);
  for (std::size_t f = 0; f < files.size(); ++f) {
    const acc::safetensors::File file(files[f]);
    for (const auto& [name, info] : file.tensors()) entries.push_back({f, info.begin, name, info});
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.file, a.begin) < std::tie(b.file, b.begin); });

  auto root = CheckpointModule("model").ptr();
  std::map<std::string, std::shared_ptr<torch::nn::Module>> modules{{"", root}};
  for (const auto& entry : entries) {
    const auto components = split(entry.name, '.');
    if (std::any_of(components.begin(), components.end(), [](const std::string& c) { return c.empty(); }))
      throw acc::Error(checkpoint + " holds tensor '" + entry.name +
                       "', whose name has an empty component; a module's tensors are named like 'layers.0.weight'");
    std::string path;
    std::shared_ptr<torch::nn::Module> module = root;
    for (std::size_t i = 0; i + 1 < components.size(); ++i) {
      path += (path.empty() ? "" : ".") + components[i];
      auto& child = modules[path];
      if (!child) {
        const acc::Unit<CheckpointModule> unit{CheckpointModule(class_name(path))};
        child = module->register_module(components[i], unit.ptr());
      }
      module = child;
    }
    const auto options = at::TensorOptions().dtype(entry.info.dtype).device(at::kMeta);
    module->register_parameter(components.back(), at::empty(entry.info.shape, options), /*requires_grad=*/false);
  }
  return root;
}

std::string budgets_text(const acc::MaxMemory& budgets) {
  std::string text;
  for (const auto& [device, size] : budgets)
    text += (text.empty() ? "" : ", ") + device + " " + acc::format_memory_size(size.bytes());
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  const bool free_memory = argc == 2 && std::string(argv[1]) == "--free_memory";
  if (argc != 7 && !free_memory) {
    std::cerr << "usage: acc_device_map COMMAND MODEL DEVICE_MAP MAX_MEMORY NO_SPLIT DTYPE, or acc_device_map "
                 "--free_memory (acc estimate-memory and acc env run it; see acc estimate-memory --help)\n";
    return 2;
  }
  const std::string command = free_memory ? "env" : argv[1];
  try {
    if (free_memory) {
      std::cout << budgets_text(acc::available_memory()) << "\n";
      return 0;
    }
    const std::string checkpoint = argv[2], device_map = argv[3], max_memory = argv[4], no_split = argv[5];
    acc::LoadAndDispatchOptions options;
    options.dtype = parse_dtype(argv[6]);
    options.max_memory = parse_max_memory(max_memory);
    options.no_split = split(no_split, ',');
    const auto model = empty_model_like(checkpoint);
    const auto map = acc::detail::auto_device_map(model, device_map, options);  // in options.dtype from here on

    std::map<acc::Placement, uint64_t> placed;
    for (const auto& parameter : model->named_parameters()) {
      const auto& tensor = parameter.value();
      placed[*map.find(parameter.key())] += static_cast<uint64_t>(tensor.numel()) * tensor.element_size();
    }
    std::cout << "Device map for inference: device_map=\"" << device_map << "\" within "
              << (max_memory.empty() ? "what the devices have free (" +
                                           budgets_text(acc::detail::default_budgets(acc::available_memory(),
                                                                                     device_map == "sequential")) +
                                           ")"
                                     : budgets_text(options.max_memory))
              << (options.no_split.empty() ? "" : ", no_split " + no_split) << "\n"
              << map << "\n";
    for (const auto& [placement, bytes] : placed)
      std::cout << "  " << placement.to_string() << ": " << acc::format_memory_size(bytes)
                << (bytes < 1024 ? "" : " (" + std::to_string(bytes) + " bytes)") << "\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "acc " << command << ": " << error.what() << "\n";
    return 1;
  }
}

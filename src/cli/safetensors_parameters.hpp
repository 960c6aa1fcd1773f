// The parameter count of a model saved as safetensors, read from the files' headers alone (no
// tensor data is read): for `acc estimate-memory MODEL`.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

namespace acc::cli {

struct SafetensorsParameters {
  std::uint64_t count = 0;  // elements of every tensor, summed
  std::uint64_t files = 0;  // safetensors files read
};

// `path` is a .safetensors file, a sharded model's index (*.safetensors.index.json, whose
// weight_map names the shard files beside it), or a folder holding model.safetensors or
// model.safetensors.index.json (as save_model and Hugging Face write them). On failure, the message
// names the file and what is wrong with it.
std::variant<SafetensorsParameters, std::string> count_safetensors_parameters(const std::string& path);

}  // namespace acc::cli

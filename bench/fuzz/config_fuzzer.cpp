// libFuzzer target: the YAML config loader. The input is a config file, optionally preceded by a
// line "<variable index> <value>" that sets one of the environment variables `acc launch` exports
// on top of it. Bad input must be an acc::Error; any other exception or a crash is a finding.
#include <acc/config/config.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

// Every variable Config::with_environment reads.
constexpr std::string_view kVariables[] = {"ACCELERATE_MIXED_PRECISION",
                                           "ACCELERATE_USE_CPU",
                                           "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
                                           "ACCELERATE_DEBUG_MODE",
                                           "ACC_DISTRIBUTED_TYPE",
                                           "ACC_COLLECTIVE_TIMEOUT",
                                           "FSDP_SHARDING_STRATEGY",
                                           "FSDP_AUTO_WRAP_POLICY",
                                           "FSDP_TRANSFORMER_CLS_TO_WRAP",
                                           "FSDP_MIN_NUM_PARAMS",
                                           "FSDP_BACKWARD_PREFETCH",
                                           "FSDP_FORWARD_PREFETCH",
                                           "FSDP_STATE_DICT_TYPE",
                                           "FSDP_OFFLOAD_PARAMS",
                                           "FSDP_SYNC_MODULE_STATES",
                                           "FSDP_USE_ORIG_PARAMS",
                                           "FSDP_CPU_RAM_EFFICIENT_LOADING",
                                           "FSDP_ACTIVATION_CHECKPOINTING",
                                           "ACCELERATE_USE_FSDP",
                                           "WORLD_SIZE"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<std::string> variable, value;
  if (!text.empty() && text[0] == '%') {  // "%<index> <value>\n" then the file
    const auto end = text.find('\n');
    const auto line = text.substr(1, end == std::string::npos ? std::string::npos : end - 1);
    const auto space = line.find(' ');
    std::size_t index = 0;
    for (char c : line.substr(0, space))
      index = index * 10 + static_cast<std::size_t>(c >= '0' && c <= '9' ? c - '0' : 0);
    variable = std::string(kVariables[index % std::size(kVariables)]);
    value = space == std::string::npos ? std::string() : line.substr(space + 1);
    text = end == std::string::npos ? std::string() : text.substr(end + 1);
  }
  try {
    const auto config = acc::Config::from_yaml(text, "fuzz.yaml");
    config.with_environment([&](std::string_view name) -> std::optional<std::string> {
      if (variable && name == *variable) return value;
      return std::nullopt;
    });
  } catch (const acc::Error&) {
  }
  return 0;
}

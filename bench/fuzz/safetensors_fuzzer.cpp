// libFuzzer target: the safetensors reader, on the bytes of a whole file. Bad input must be an
// acc::Error; any other exception, a crash, a leak or an allocation beyond the input's size is a
// finding.
#include <acc/checkpoint/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  try {
    const auto contents = acc::safetensors::load(std::string_view(reinterpret_cast<const char*>(data), size));
    std::size_t bytes = 0;
    for (const auto& [name, tensor] : contents.tensors) bytes += tensor.nbytes();
    if (bytes > size) __builtin_trap();  // every tensor's bytes come from the input
  } catch (const acc::Error&) {
  }
  return 0;
}

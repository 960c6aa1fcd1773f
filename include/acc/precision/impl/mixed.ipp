// The bodies of precision/mixed.hpp's non-template functions.
#pragma once

#include <acc/detail/torch_compat.hpp>
#include <acc/error.hpp>
#include <acc/precision/mixed.hpp>

#include <string>

namespace acc::detail {

ACC_DECL void check_autocast_device(std::string_view name, c10::ScalarType dtype, c10::Device device) {
  if (compat::autocast_supported(device.type(), dtype)) return;
  // Named as the flag and the config spell it: most users chose it there, not as a C++ type.
  std::string supported = "no";
  if (compat::autocast_supported(device.type(), at::kHalf)) supported += ", fp16";
  supported += compat::autocast_supported(device.type(), at::kBFloat16) ? " or bf16" : "";
  throw Error("--mixed_precision " + std::string(name) + " (mixed_precision: " + std::string(name) +
              ") has no autocast on " + device.str() + " in this libtorch; on " + device.str() +
              " use --mixed_precision " + supported + " (a program that names its policies: acc::FP32 or acc::BF16)");
}

ACC_DECL void refuse_half_parameters(std::string_view name, const torch::nn::Module& module) {
  for (const auto& p : module.named_parameters())
    if (p.value().scalar_type() == at::kHalf || p.value().scalar_type() == at::kBFloat16)
      throw Error("parameter '" + p.key() + "' is " + c10::toString(p.value().scalar_type()) +
                  " but mixed precision '" + std::string(name) +
                  "' expects fp32 parameters (it keeps fp32 master weights and computes in half under "
                  "autocast); keep the model in fp32, or use acc::FP16True / acc::BF16True for half parameters");
}

}  // namespace acc::detail

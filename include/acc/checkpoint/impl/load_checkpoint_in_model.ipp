// The body of checkpoint/load_checkpoint_in_model.hpp.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/checkpoint/checkpoint_files.hpp>
#include <acc/checkpoint/load_checkpoint_in_model.hpp>

#include <ATen/core/grad_mode.h>

#include <string>

namespace acc {

ACC_DECL void load_checkpoint_in_model(torch::nn::Module& module, const std::filesystem::path& path,
                                       c10::Device device) {
  const detail::CheckpointFiles checkpoint(path);
  checkpoint.check_fits(module);

  at::NoGradGuard no_grad;
  const auto load = [&](const std::string& name, const at::Tensor& target) {
    const auto value = checkpoint.read(name);
    if (target.is_meta())
      detail::assign_in_place(target, value.to(device, target.scalar_type()));
    else
      target.copy_(value);
  };
  for (const auto& p : module.named_parameters()) load(p.key(), p.value());
  for (const auto& b : module.named_buffers()) load(b.key(), b.value());
}

}  // namespace acc

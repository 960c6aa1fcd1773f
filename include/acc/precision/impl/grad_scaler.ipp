// The bodies of precision/grad_scaler.hpp's non-template functions.
#pragma once

#include <acc/precision/grad_scaler.hpp>

namespace acc {

ACC_DECL void GradScaler::unscale(const std::vector<at::Tensor>& grads) {
  found_inf_.zero_();
  const auto inv_scale = scale_.reciprocal();
  std::vector<at::Tensor> here, elsewhere;
  for (const auto& g : grads) (g.device() == scale_.device() ? here : elsewhere).push_back(g);
  compat::amp_unscale(here, found_inf_, inv_scale);
  while (!elsewhere.empty()) {
    const auto device = elsewhere.front().device();
    std::vector<at::Tensor> same, rest;
    for (const auto& g : elsewhere) (g.device() == device ? same : rest).push_back(g);
    auto found = at::zeros({1}, found_inf_.options().device(device));
    compat::amp_unscale(same, found, inv_scale.to(device));
    found_inf_.copy_(at::maximum(found_inf_, found.to(found_inf_.device())));
    elsewhere = std::move(rest);
  }
}

}  // namespace acc

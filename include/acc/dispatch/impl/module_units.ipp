// The bodies of dispatch/module_units.hpp.
#pragma once

#include <acc/dispatch/device_map.hpp>
#include <acc/dispatch/module_units.hpp>
#include <acc/fsdp/unit_registry.hpp>

#include <torch/nn/modules/container/sequential.h>

namespace acc::detail {

ACC_DECL std::vector<ModelUnit> model_units(const std::shared_ptr<torch::nn::Module>& model) {
  auto& registry = UnitRegistry::instance();
  const bool sequential = dynamic_cast<const torch::nn::SequentialImpl*>(model.get()) != nullptr;
  std::vector<ModelUnit> units{{"", model->name(), model, 0, {}, {}}};
  // The innermost unit holding a name: the unit with its longest prefix.
  const auto owner = [&](const std::string& name) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < units.size(); ++i)
      if (is_name_prefix(units[i].name, name) && units[i].name.size() > units[best].name.size()) best = i;
    return best;
  };
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    const bool child_of_sequential = sequential && item.key().find('.') == std::string::npos;
    if (!child_of_sequential && !registry.is_declared(*item.value())) continue;
    const auto parent = owner(item.key());
    units[parent].children.push_back(units.size());
    units.push_back({item.key(), item.value()->name(), item.value(), parent, {}, {}});
  }
  for (const auto& p : model->named_parameters()) units[owner(p.key())].tensors.push_back({p.key(), p.value(), true});
  for (const auto& b : model->named_buffers()) units[owner(b.key())].tensors.push_back({b.key(), b.value(), false});
  return units;
}

}  // namespace acc::detail

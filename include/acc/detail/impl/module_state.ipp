// The bodies of detail/module_state.hpp's non-template functions.
#pragma once

#include <acc/detail/module_state.hpp>

namespace acc::detail {

ACC_DECL void check_state_fits(const std::vector<std::pair<std::string, at::Tensor>>& own,
                               const std::map<std::string, at::Tensor>& state) {
  std::vector<std::string> missing, misshapen;
  std::set<std::string> known;
  for (const auto& [name, tensor] : own) {
    known.insert(name);
    const auto it = state.find(name);
    if (it == state.end())
      missing.push_back(name);
    else if (it->second.sizes() != tensor.sizes())
      misshapen.push_back(name + " is " + shape_text(it->second) + " there but " + shape_text(tensor) +
                          " in the model");
  }
  std::vector<std::string> unexpected;
  for (const auto& entry : state)
    if (!known.count(entry.first)) unexpected.push_back(entry.first);
  if (!missing.empty() || !unexpected.empty() || !misshapen.empty()) {
    const auto list = [](const std::vector<std::string>& names) {
      std::string text;
      for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
      return text;
    };
    std::string problem = "the saved state does not fit the model:";
    if (!missing.empty()) problem += " missing keys: " + list(missing) + ";";
    if (!unexpected.empty()) problem += " unexpected keys: " + list(unexpected) + ";";
    if (!misshapen.empty()) problem += " wrong shapes: " + list(misshapen) + ";";
    problem.pop_back();
    throw Error(problem);
  }
}

}  // namespace acc::detail

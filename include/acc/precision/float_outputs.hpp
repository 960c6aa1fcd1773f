// What the half precisions do to the forward's result: half tensors come back in fp32, as losses
// and metrics computed from them outside the model are more accurate there (Python Accelerate
// converts them the same way).
#pragma once

#include <acc/detail/tensor_tree.hpp>

#include <ATen/core/Tensor.h>

#include <utility>

namespace acc::detail {

template <class Output>
Output float_outputs(Output output) {
  if constexpr (is_tensor_tree_v<Output>)
    return map_tensors(output, [](const at::Tensor& t) {
      const bool reduced = t.defined() && (t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16);
      return reduced ? t.to(at::kFloat) : t;
    });
  else
    return output;
}

}  // namespace acc::detail

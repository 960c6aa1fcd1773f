// acc::item<T>(tensor): a one-element tensor's value as T. Inside acc::run's generic function the
// loss has a dependent type, where `loss.item<double>()` does not compile (C++ needs
// `loss.template item<double>()`); this reads the same without the keyword.
//
//   acc::run(config, [&](auto& accelerator) { ... accelerator.print("loss", acc::item<double>(loss)); });
#pragma once

#include <ATen/core/Tensor.h>

namespace acc {

template <class T>
T item(const at::Tensor& tensor) {
  return tensor.item<T>();
}

}  // namespace acc

// The parameters of one offloaded unit between its calls: their values kept in host memory
// ("cpu" offload, pinned so that the copy to the GPU is asynchronous) or in safetensors files
// ("disk" offload: a file of the offload folder written once, or the checkpoint's own files, read
// tensor by tensor at each call), while the parameters themselves hold no memory (nor, before the
// first call, any values: they may be meta tensors, as acc::init_empty_weights makes them). load() gives them their
// values on the device the unit runs on, release() takes them away again. The parameter tensors stay the same objects,
// so the module's members (Linear::weight) and tied names see every change.
#pragma once

#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/dispatch/module_units.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace acc::detail {

class OffloadedWeights {
 public:
  // Keeps the parameters' current values (no copy unless `pin` asks for pinned memory).
  ACC_DECL static OffloadedWeights in_memory(const std::vector<UnitTensor>& parameters, bool pin);
  // Writes the parameters' values to `file`, each tensor once under its first name.
  ACC_DECL static OffloadedWeights on_disk(const std::vector<UnitTensor>& parameters,
                                           const std::filesystem::path& file);
  // Where a parameter's value already is: tensor `key` of a safetensors file.
  struct Stored {
    std::shared_ptr<const safetensors::File> file;
    std::string key;
  };
  // Reads each parameter from `stored[i]` (one per parameter, in order, tied ones included),
  // converted to the parameter's dtype.
  ACC_DECL static OffloadedWeights in_files(const std::vector<UnitTensor>& parameters,
                                            const std::vector<Stored>& stored);

  ACC_DECL void load(c10::Device device);
  // Leaves each parameter an empty tensor (no elements, no storage) of its dtype on the CPU.
  ACC_DECL void release();
  const std::vector<UnitTensor>& parameters() const { return parameters_; }

 private:
  ACC_DECL explicit OffloadedWeights(const std::vector<UnitTensor>& parameters);

  std::vector<UnitTensor> parameters_;  // each tensor once
  std::vector<at::Tensor> values_;      // in memory: one per parameter
  std::vector<Stored> stored_;          // on disk: one per parameter
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/offloaded_weights.ipp>
#endif

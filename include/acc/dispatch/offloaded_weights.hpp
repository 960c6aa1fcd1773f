// The parameters of one offloaded unit between its calls: their values kept in host memory
// ("cpu" offload, pinned so that the copy to the GPU is asynchronous) or in safetensors files
// ("disk" offload: a file of the offload folder written once, or the checkpoint's own files,
// memory-mapped and taken tensor by tensor at each call), while the parameters themselves hold no
// memory (nor, before the first call, any values: they may be meta tensors, as
// acc::init_empty_weights makes them). load() gives them their values on the device the unit runs
// on, release() takes them away again. The parameter tensors stay the same objects, so the
// module's members (Linear::weight) and tied names see every change.
//
// prefetch(device) starts the next load()'s values coming while the unit before computes. Disk
// offload asks the kernel to read the files' pages ahead (madvise WILLNEED), so that the views or
// copies of load() find them in memory. With CUDA, copy_on(stream) gives the weights a copy stream
// of their own, and prefetch also queues their copies to the GPU there (from pinned memory, or
// from the mapped file, which the host stages); the next load() takes them, making the compute
// stream (not the host) wait for an event recorded after the copies.
#pragma once

#include <acc/checkpoint/safetensors.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/detail/cuda_event.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/dispatch/module_units.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/Stream.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace acc::detail {

// A copy of `value` in `dtype` in page-locked host memory, from which copies to a GPU run
// asynchronously: with CUDA, memory of its exact size registered with the driver in place
// (cudaHostRegister), not taken from libtorch's pinned allocator, which rounds each block up to a
// power of two (up to twice the weights); without CUDA, a plain copy.
ACC_DECL at::Tensor pinned_copy(const at::Tensor& value, at::ScalarType dtype);

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
  // Leaves each parameter a meta tensor (no storage) of its shape and dtype, as Accelerate does.
  ACC_DECL void release();
  const std::vector<UnitTensor>& parameters() const { return parameters_; }
  // The values kept in host memory ("cpu" offload; none for "disk").
  const std::vector<at::Tensor>& host_values() const { return values_; }

  // Starts the values of the next load() on `device` coming: the files' pages read ahead (disk),
  // and the copies queued on the copy stream (CUDA); nothing more when they are coming already.
  ACC_DECL void prefetch(c10::Device device);
  // Whether a prefetch is pending, for the next load() to take.
  ACC_DECL bool prefetched() const;
#if ACC_HAS_CUDA
  // The CUDA stream the prefetched copies go on.
  void copy_on(c10::Stream stream) { copy_stream_ = stream; }
#endif

 private:
  ACC_DECL explicit OffloadedWeights(const std::vector<UnitTensor>& parameters);
  // Parameter i's value on `device`, in its dtype: copied from pinned memory without blocking, or
  // from the mapped file (on the CPU in its dtype, a view of the file).
  ACC_DECL at::Tensor value_on(std::size_t i, c10::Device device) const;

  std::vector<UnitTensor> parameters_;  // each tensor once
  std::vector<at::Tensor> values_;      // in memory: one per parameter
  std::vector<Stored> stored_;          // on disk: one per parameter
  bool read_ahead_ = false;             // the files' pages asked for since the last load()
#if ACC_HAS_CUDA
  std::optional<c10::Stream> copy_stream_;
  std::vector<at::Tensor> prefetched_;  // on the GPU, written by the copy stream
  CudaEvent copied_;                    // recorded on the copy stream after them
#endif
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/dispatch/impl/offloaded_weights.ipp>
#endif

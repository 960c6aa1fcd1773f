// The bodies of dispatch/offloaded_weights.hpp.
#pragma once

#include <acc/big_modeling/materialize.hpp>
#include <acc/detail/files.hpp>
#include <acc/dispatch/offloaded_weights.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#if ACC_HAS_CUDA
#include <acc/detail/impl/cuda_event.ipp>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/from_blob.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#endif

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <utility>

namespace acc::detail {

// Asks the kernel to read the pages of `mapped` (a view of a mapped file) into the page cache in
// the background. Advice only: where the kernel declines it, the pages are read when touched.
ACC_DECL void read_ahead(const at::Tensor& mapped) {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(mapped.data_ptr());
  const auto end = begin + mapped.nbytes();
  if (end == begin) return;
  const auto first = begin / page * page;
  ::madvise(reinterpret_cast<void*>(first), end - first, MADV_WILLNEED);
}

ACC_DECL at::Tensor pinned_copy(const at::Tensor& value, at::ScalarType dtype) {
#if ACC_HAS_CUDA
  const auto bytes = static_cast<std::size_t>(value.numel()) * c10::elementSize(dtype);
  if (bytes == 0) return at::empty(value.sizes(), at::TensorOptions().dtype(dtype));
  constexpr std::size_t page = 4096;  // cudaHostRegister pins whole pages
  void* memory = std::aligned_alloc(page, (bytes + page - 1) / page * page);
  if (!memory) throw Error("cannot allocate " + std::to_string(bytes) + " bytes of host memory for offloaded weights");
  if (const auto status = cudaHostRegister(memory, bytes, cudaHostRegisterDefault); status != cudaSuccess) {
    std::free(memory);
    (void)cudaGetLastError();  // clear it: the next CUDA call must not report it
    throw Error("cannot pin " + std::to_string(bytes) + " bytes of host memory for offloaded weights (" +
                cudaGetErrorString(status) + "): lower the \"cpu\" budget, or raise the locked-memory limit");
  }
  auto pinned = at::from_blob(
      memory, value.sizes(),
      [](void* data) {
        cudaHostUnregister(data);
        std::free(data);
      },
      at::TensorOptions().dtype(dtype));
  pinned.copy_(value);
  return pinned;
#else
  return value.to(at::kCPU, dtype, /*non_blocking=*/false, /*copy=*/true);
#endif
}

ACC_DECL OffloadedWeights::OffloadedWeights(const std::vector<UnitTensor>& parameters) {
  std::set<const c10::TensorImpl*> seen;
  for (const auto& p : parameters)
    if (seen.insert(p.tensor.unsafeGetTensorImpl()).second) parameters_.push_back(p);
}

ACC_DECL OffloadedWeights OffloadedWeights::in_memory(const std::vector<UnitTensor>& parameters, bool pin) {
  OffloadedWeights weights(parameters);
  at::NoGradGuard no_grad;
  for (const auto& p : weights.parameters_) {
    auto value = p.tensor.detach().to(at::kCPU);
    // Loaded by acc::load_checkpoint_and_dispatch straight into pinned memory: no second copy.
    weights.values_.push_back(pin && !value.is_pinned() ? pinned_copy(value, value.scalar_type()) : value);
  }
  return weights;
}

ACC_DECL OffloadedWeights OffloadedWeights::on_disk(const std::vector<UnitTensor>& parameters,
                                                    const std::filesystem::path& file) {
  OffloadedWeights weights(parameters);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : weights.parameters_) tensors.emplace_back(p.name, p.tensor.detach());
  // Another dispatch into the same folder writes a file of the same name: staged and renamed into
  // place, it gets a new inode, and the file mapped here (at once, not at the first call) keeps
  // these weights. Written in place, it would truncate and refill the file under this mapping.
  const auto staged = file.string() + ".staged";
  safetensors::save_file(tensors, staged, {{"format", "pt"}});
  if (std::rename(staged.c_str(), file.c_str()) != 0)
    throw Error("cannot rename '" + staged + "' to '" + file.string() + "': " + detail::system_error_text(errno));
  const auto written = std::make_shared<const safetensors::File>(file);
  for (const auto& p : weights.parameters_) {
    weights.stored_.push_back({written, p.name});
    written->map(p.name);
  }
  return weights;
}

ACC_DECL OffloadedWeights OffloadedWeights::in_files(const std::vector<UnitTensor>& parameters,
                                                     const std::vector<Stored>& stored) {
  OffloadedWeights weights(parameters);
  for (const auto& p : weights.parameters_) {
    std::size_t i = 0;
    while (parameters[i].tensor.unsafeGetTensorImpl() != p.tensor.unsafeGetTensorImpl()) ++i;
    weights.stored_.push_back(stored.at(i));
    // Mapped now, as its header was read: a checkpoint saved again later (renamed into place, as
    // save_model does) leaves this mapping the file whose offsets were read.
    stored.at(i).file->map(stored.at(i).key);
  }
  return weights;
}

ACC_DECL at::Tensor OffloadedWeights::value_on(std::size_t i, c10::Device device) const {
  if (stored_.empty()) return values_[i].to(at::TensorOptions().device(device), /*non_blocking=*/true);
  // A file is mapped, not read: the copy reads its pages (or the view is them), no buffer between.
  return stored_[i].file->map(stored_[i].key).to(device, parameters_[i].tensor.scalar_type(), /*non_blocking=*/true);
}

ACC_DECL void OffloadedWeights::load(c10::Device device) {
  at::NoGradGuard no_grad;
  read_ahead_ = false;
#if ACC_HAS_CUDA
  if (copied_) {
    const auto compute = c10::cuda::getCurrentCUDAStream(device.index());
    copied_->event.block(compute);  // the compute stream waits for the copies; the host does not
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      // Allocated on the copy stream, used on the compute stream: once released, the caching
      // allocator must not hand this memory to the copy stream before the compute stream is done.
      prefetched_[i].record_stream(compute);
      assign_in_place(parameters_[i].tensor, prefetched_[i]);
    }
    prefetched_.clear();
    copied_.reset();
    return;
  }
#endif
  // Ordered on the stream with the forward; pinned memory copies to the GPU without blocking.
  for (std::size_t i = 0; i < parameters_.size(); ++i) assign_in_place(parameters_[i].tensor, value_on(i, device));
}

ACC_DECL void OffloadedWeights::prefetch([[maybe_unused]] c10::Device device) {
  if (prefetched()) return;
  at::NoGradGuard no_grad;
  for (const auto& stored : stored_) read_ahead(stored.file->map(stored.key));
  read_ahead_ = !stored_.empty();
#if ACC_HAS_CUDA
  if (!copy_stream_) return;
  {
    // The copies (and their memory) go on the copy stream; their sources (pinned memory, a mapped
    // file) never change, so they need not wait for the compute stream.
    c10::cuda::CUDAStreamGuard on_copy_stream(*copy_stream_);
    for (std::size_t i = 0; i < parameters_.size(); ++i) prefetched_.push_back(value_on(i, device));
  }
  copied_ = make_cuda_event();
  copied_->event.record(c10::cuda::CUDAStream(c10::cuda::CUDAStream::UNCHECKED, *copy_stream_));
#endif
}

ACC_DECL bool OffloadedWeights::prefetched() const {
#if ACC_HAS_CUDA
  if (copied_) return true;
#endif
  return read_ahead_;
}

ACC_DECL void OffloadedWeights::release() {
  at::NoGradGuard no_grad;
  // Meta tensors of their shapes, as Accelerate leaves offloaded weights: the module still
  // describes itself, and a later dispatch sees that these parameters have no values.
  for (const auto& p : parameters_)
    assign_in_place(p.tensor, at::empty(p.tensor.sizes(), p.tensor.options().device(at::kMeta)));
}

}  // namespace acc::detail

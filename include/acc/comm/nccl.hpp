// Nccl: collectives between GPUs, NCCL called directly on the current CUDA stream (no c10d
// ProcessGroup in between). The unique id travels through the rendezvous store. Built only where
// libtorch has CUDA and nccl.h is found (ACC_HAS_NCCL).
//
// Collectives run on the GPU while the host goes on, so a stuck one (a peer died or skipped it)
// would hang the job at the next synchronization. A watchdog thread polls a CUDA event recorded
// behind each collective: when one is not done within the timeout, or NCCL reports an
// asynchronous error, it aborts the communicator (ncclCommAbort: the GPU's kernels and the host's
// waits return), prints the message, and the next call on the communicator throws it.
//
// The communicator and its watchdog live in impl/nccl.ipp, so that nccl.h stays out of the users'
// translation units when the library is compiled separately.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_NCCL
#include <acc/detail/cuda_event.hpp>

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstdint>
#include <memory>
#include <vector>
#endif

namespace acc {

#if ACC_HAS_NCCL

// Over every rank of the job, or over a group of them (rank_group.hpp, with a unique id of its
// own): rank(), world_size() and a broadcast's root are then numbers within the group.
class Nccl {
 public:
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = true;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CUDA;  // where its tensors live

  // Over every rank of the job.
  Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store,
       const ProcessGroupOptions& process_group)
      : Nccl(env, store, process_group, RankGroup::world(env.world_size, env.rank)) {}

  // Over `group`: each member calls this with the job's store (acc::job_store), in the same order
  // as its other communicators over the same ranks. The group's rank 0 makes the unique id.
  ACC_DECL Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
                const ProcessGroupOptions& process_group, const RankGroup& group);
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;
  ACC_DECL ~Nccl();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return device_; }
  // Collectives started so far.
  ACC_DECL uint64_t sequence() const;

  ACC_DECL void all_reduce(at::Tensor& tensor, ReduceOp op);

  // A collective on a stream of its own, so that it overlaps the work queued after it on the
  // caller's stream (the rest of backward, the next unit's forward); wait() makes the caller's
  // stream wait for it, or throws when the watchdog found a collective stuck.
  class Pending {
   public:
    explicit Pending(Nccl& owner) : owner_(&owner), done_(detail::make_cuda_event()) {}
    ACC_DECL void wait();
    detail::CudaEventBox& done() { return *done_; }

   private:
    Nccl* owner_;
    detail::CudaEvent done_;  // recorded on the collective's stream after it
  };

  ACC_DECL Pending all_reduce_async(at::Tensor& tensor, ReduceOp op);

  // Every rank's `input` side by side in `output` (world_size times its size), on the side stream.
  ACC_DECL Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input);
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  ACC_DECL Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op);
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  ACC_DECL void broadcast(at::Tensor& tensor, int root);
  ACC_DECL std::vector<at::Tensor> all_gather(const at::Tensor& tensor);

  // Returns once every rank got here; a rank that never does ends the wait after the timeout
  // with the communicator aborted, so that the process can exit instead of hanging.
  ACC_DECL void barrier();

  // Blocks the host until the work queued so far on the caller's stream is done; a collective
  // that fails or runs out of time ends the wait with its message (the watchdog aborted it).
  ACC_DECL void synchronize();

  // Throws the watchdog's message once it has aborted the communicator.
  ACC_DECL void throw_if_failed() const;

  // Hands the work queued so far on the caller's stream to the watchdog as one collective named
  // `what`: a CUDA graph's replay (acc::capture_step) runs collectives that were queued only once,
  // at the capture, and a peer that never arrives at them must still end the job.
  ACC_DECL void watch_queued_work(const char* what);

 private:
  struct State;  // the NCCL communicator and its watchdog (impl/nccl.ipp)

  int rank_;        // in the group
  int world_size_;  // the group's size
  c10::Device device_;
  std::unique_ptr<State> state_;
};

#else

// This build has no NCCL (libtorch without CUDA, or nccl.h not found): the tag exists so that
// code naming it compiles, and the strategies reject it with a message.
struct Nccl {
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = false;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CUDA;
};

#endif

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/comm/impl/nccl.ipp>
#endif

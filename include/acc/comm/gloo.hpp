// Gloo: collectives between CPU processes through libtorch's c10d ProcessGroupGloo. Optional at
// build time: libtorch wheels ship no Gloo headers (ACC_HAS_GLOO is 0 there). The c10d Gloo
// headers are included by impl/gloo.ipp only (the group lives behind a pointer), so that with
// ACC_SEPARATE_COMPILATION they leave the users' translation units.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_GLOO
#include <acc/comm/collective_ledger.hpp>

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#endif

namespace acc {

#if ACC_HAS_GLOO

// Over every rank of the job, or over a group of them (rank_group.hpp): rank(), world_size() and a
// broadcast's root are then numbers within the group. Every collective is numbered (sequence());
// one that fails or outlasts the timeout is an acc::Error naming this rank, the collective, its
// number and tensor; with options.debug(), the members compare each collective first
// (collective_ledger.hpp).
class Gloo {
 public:
  static constexpr std::string_view name = "gloo";
  static constexpr bool available = true;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CPU;  // where its tensors live

  // Over every rank of the job.
  Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store,
       const ProcessGroupOptions& process_group);
  // Over `group`: each member calls this with the job's store (acc::job_store), in the same order
  // as its other communicators over the same ranks.
  Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
       const ProcessGroupOptions& process_group, const RankGroup& group);
  ~Gloo();
  Gloo(const Gloo&) = delete;  // its Pendings point at its ledger
  Gloo& operator=(const Gloo&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return c10::Device(c10::kCPU); }
  // Collectives started so far.
  uint64_t sequence() const { return ledger_.started(); }

  // A collective running on Gloo's threads; wait() also does what is left to do on this side
  // (Gloo has no mean: a sum divided here).
  class Pending {
   public:
    void wait();

   private:
    friend class Gloo;
    Pending(const detail::CollectiveLedger& ledger, uint64_t sequence, detail::Collective collective,
            c10::intrusive_ptr<c10d::Work> work, std::function<void()> then);
    [[noreturn]] void fail(const std::string& cause) const;

    const detail::CollectiveLedger* ledger_;
    uint64_t sequence_;
    detail::Collective collective_;
    std::chrono::steady_clock::time_point started_;
    c10::intrusive_ptr<c10d::Work> work_;
    std::function<void()> then_;
  };

  Pending all_reduce_async(at::Tensor& tensor, ReduceOp op);
  void all_reduce(at::Tensor& tensor, ReduceOp op) { all_reduce_async(tensor, op).wait(); }

  // Every rank's `input` side by side in `output` (world_size times its size, contiguous).
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input);
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  // libtorch 1.13's Gloo group has no reduce-scatter: the whole input is all-reduced (in place,
  // `input` is consumed) and the slice copied out, twice the traffic of a true reduce-scatter.
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op);
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  void broadcast(at::Tensor& tensor, int root);
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor);
  void barrier();

 private:
  struct Group;  // c10d's ProcessGroupGloo (impl/gloo.ipp)

  // Numbers the collective (comparing it across ranks in debug mode), then starts it.
  Pending start(detail::Collective collective, std::function<void()> then,
                const std::function<c10::intrusive_ptr<c10d::Work>()>& launch);

  int rank_;                               // in the group
  int world_size_;                         // the group's size
  c10::intrusive_ptr<c10d::Store> store_;  // this communicator's key space
  detail::CollectiveLedger ledger_;
  std::unique_ptr<Group> group_;
};

#else

// This build has no Gloo (libtorch without its headers): the tag exists so that code naming it
// compiles, and the strategies reject it with a message.
struct Gloo {
  static constexpr std::string_view name = "gloo";
  static constexpr bool available = false;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CPU;
};

#endif

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/comm/impl/gloo.ipp>
#endif

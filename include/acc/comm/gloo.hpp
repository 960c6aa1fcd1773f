// Gloo: collectives between CPU processes through libtorch's c10d ProcessGroupGloo. Optional at
// build time: libtorch wheels ship no Gloo headers (ACC_HAS_GLOO is 0 there).
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_GLOO
#include <acc/comm/collective_ledger.hpp>
#include <acc/comm/network.hpp>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>
#endif

namespace acc {

#if ACC_HAS_GLOO

namespace detail {

inline c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::max:
      return c10d::ReduceOp::MAX;
    case ReduceOp::min:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;  // Gloo has no AVG: mean is a sum divided afterwards
  }
}

}  // namespace detail

// Over every rank of the job, or over a group of them (rank_group.hpp): rank(), world_size() and a
// broadcast's root are then numbers within the group. Every collective is numbered (sequence());
// one that fails or outlasts the timeout is an acc::Error naming this rank, the collective, its
// number and tensor; with options.debug(), the members compare each collective first
// (collective_ledger.hpp).
class Gloo {
 public:
  static constexpr std::string_view name = "gloo";
  static constexpr bool available = true;

  // Over every rank of the job.
  Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store,
       const ProcessGroupOptions& process_group)
      : Gloo(env, store, process_group, RankGroup::world(env.world_size, env.rank)) {}

  // Over `group`: each member calls this with the job's store (acc::job_store), in the same order
  // as its other communicators over the same ranks.
  Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
       const ProcessGroupOptions& process_group, const RankGroup& group)
      : rank_(group.rank()),
        world_size_(group.size()),
        store_(detail::communicator_store(job_store, group)),
        ledger_(group, process_group, store_) {
    // Gloo's own timeout ends a stuck send or receive; the ledger turns that into our message.
    auto options = c10d::ProcessGroupGloo::Options::create(process_group.timeout());
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    else if (env.num_nodes == 1)  // one machine: stay on loopback
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
          detail::local_address_towards(env.master_addr, env.master_port)));
    options->threads = 2;
    try {
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, rank_, world_size_, options);
    } catch (const std::exception& e) {
      throw Error(group.who() + ": Gloo could not connect to its peers " + group.describe() + ": " + e.what());
    }
  }
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
    void wait() {
      try {
        work_->wait();
      } catch (const c10::Error& e) {
        fail(e.what_without_backtrace());
      } catch (const std::exception& e) {
        fail(e.what());
      }
      if (then_) then_();
    }

   private:
    friend class Gloo;
    Pending(const detail::CollectiveLedger& ledger, uint64_t sequence, detail::Collective collective,
            c10::intrusive_ptr<c10d::Work> work, std::function<void()> then)
        : ledger_(&ledger),
          sequence_(sequence),
          collective_(std::move(collective)),
          started_(std::chrono::steady_clock::now()),
          work_(std::move(work)),
          then_(std::move(then)) {}
    [[noreturn]] void fail(const std::string& cause) const {
      throw Error(ledger_->failure(sequence_, collective_, std::chrono::steady_clock::now() - started_, cause));
    }

    const detail::CollectiveLedger* ledger_;
    uint64_t sequence_;
    detail::Collective collective_;
    std::chrono::steady_clock::time_point started_;
    c10::intrusive_ptr<c10d::Work> work_;
    std::function<void()> then_;
  };

  Pending all_reduce_async(at::Tensor& tensor, ReduceOp op) {
    auto wire = on_the_wire(tensor);
    auto then = [tensor, wire, op, world = world_size_]() mutable {
      if (op == ReduceOp::mean) wire.div_(world);
      if (!wire.is_same(tensor)) tensor.copy_(wire);
    };
    return start(detail::Collective("all_reduce", tensor, op), std::move(then), [&] {
      std::vector<at::Tensor> tensors{wire};
      c10d::AllreduceOptions options;
      options.reduceOp = detail::to_c10d(op);
      return group_->allreduce(tensors, options);
    });
  }
  void all_reduce(at::Tensor& tensor, ReduceOp op) { all_reduce_async(tensor, op).wait(); }

  // Every rank's `input` side by side in `output` (world_size times its size, contiguous).
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
    auto wire_output = on_the_wire(output);
    std::function<void()> then;
    if (!wire_output.is_same(output)) then = [output, wire_output]() mutable { output.copy_(wire_output); };
    return start(detail::Collective("all_gather_into", input), std::move(then), [&] {
      std::vector<at::Tensor> inputs{on_the_wire(input).contiguous()};
      std::vector<std::vector<at::Tensor>> outputs{wire_output.view({-1}).chunk(world_size_)};
      return group_->allgather(outputs, inputs);
    });
  }
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  // libtorch 1.13's Gloo group has no reduce-scatter: the whole input is all-reduced (in place,
  // `input` is consumed) and the slice copied out, twice the traffic of a true reduce-scatter.
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    auto wire = on_the_wire(input);
    auto then = [output, wire, op, world = world_size_, rank = rank_]() mutable {
      auto slice = wire.view({-1}).narrow(0, rank * output.numel(), output.numel()).view_as(output);
      if (op == ReduceOp::mean) slice.div_(world);
      output.copy_(slice);
    };
    return start(detail::Collective("reduce_scatter", input, op), std::move(then), [&] {
      std::vector<at::Tensor> tensors{wire};
      c10d::AllreduceOptions options;
      options.reduceOp = detail::to_c10d(op);
      return group_->allreduce(tensors, options);
    });
  }
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  void broadcast(at::Tensor& tensor, int root) {
    auto wire = on_the_wire(tensor);
    start(detail::Collective("broadcast", tensor, std::nullopt, root), nullptr, [&] {
      std::vector<at::Tensor> tensors{wire};
      c10d::BroadcastOptions options;
      options.rootRank = root;
      return group_->broadcast(tensors, options);
    }).wait();
    if (!wire.is_same(tensor)) tensor.copy_(wire);
  }

  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) {
    std::vector<at::Tensor> inputs{on_the_wire(tensor).contiguous()};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(inputs[0]));
    start(detail::Collective("all_gather", tensor), nullptr, [&] { return group_->allgather(outputs, inputs); }).wait();
    for (auto& piece : outputs[0]) piece = piece.to(tensor.scalar_type());
    return outputs[0];
  }

  void barrier() {
    start(detail::Collective("barrier"), nullptr, [&] { return group_->barrier(); }).wait();
  }

 private:
  // The tensor a collective sends: `tensor` itself, or a float32 copy of a bfloat16 one (libtorch
  // 1.13's Gloo has no bfloat16 and fails with "Invalid scalar type"). Widening is exact, so
  // broadcasts and gathers return the very values sent, and a sum is rounded once, at the end.
  static at::Tensor on_the_wire(const at::Tensor& tensor) {
    return tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
  }

  // Numbers the collective (comparing it across ranks in debug mode), then starts it.
  template <class Launch>
  Pending start(detail::Collective collective, std::function<void()> then, Launch&& launch) {
    const uint64_t sequence = ledger_.begin(collective);
    c10::intrusive_ptr<c10d::Work> work;
    try {
      work = launch();
    } catch (const c10::Error& e) {
      throw Error(ledger_.failure(sequence, collective, {}, e.what_without_backtrace()));
    }
    return Pending(ledger_, sequence, std::move(collective), std::move(work), std::move(then));
  }

  int rank_;                               // in the group
  int world_size_;                         // the group's size
  c10::intrusive_ptr<c10d::Store> store_;  // this communicator's key space
  detail::CollectiveLedger ledger_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

#else

// This build has no Gloo (libtorch without its headers): the tag exists so that code naming it
// compiles, and the strategies reject it with a message.
struct Gloo {
  static constexpr std::string_view name = "gloo";
  static constexpr bool available = false;
};

#endif

}  // namespace acc

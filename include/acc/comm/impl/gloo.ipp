#pragma once

#include <acc/comm/gloo.hpp>

#if ACC_HAS_GLOO
#include <acc/comm/network.hpp>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <optional>

namespace acc {

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

// The tensor a collective sends: `tensor` itself, or a float32 copy of a bfloat16 one (libtorch
// 1.13's Gloo has no bfloat16 and fails with "Invalid scalar type"). Widening is exact, so
// broadcasts and gathers return the very values sent, and a sum is rounded once, at the end.
inline at::Tensor on_the_wire(const at::Tensor& tensor) {
  return tensor.scalar_type() == at::kBFloat16 ? tensor.to(at::kFloat) : tensor;
}

}  // namespace detail

struct Gloo::Group {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

ACC_DECL Gloo::Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store,
                    const ProcessGroupOptions& process_group)
    : Gloo(env, store, process_group, RankGroup::world(env.world_size, env.rank)) {}

ACC_DECL Gloo::Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
                    const ProcessGroupOptions& process_group, const RankGroup& group)
    : rank_(group.rank()),
      world_size_(group.size()),
      store_(detail::communicator_store(job_store, group)),
      ledger_(group, process_group, store_),
      group_(std::make_unique<Group>()) {
  // Gloo's own timeout ends a stuck send or receive; the ledger turns that into our message.
  auto options = c10d::ProcessGroupGloo::Options::create(process_group.timeout());
  if (env.socket_interface)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(*env.socket_interface));
  else if (env.num_nodes == 1)  // one machine: stay on loopback
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
        detail::local_address_towards(env.master_addr, env.master_port)));
  options->threads = 2;
  try {
    group_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, rank_, world_size_, options);
  } catch (const std::exception& e) {
    throw Error(group.who() + ": Gloo could not connect to its peers " + group.describe() + ": " + e.what());
  }
}

ACC_DECL Gloo::~Gloo() = default;

ACC_DECL Gloo::Pending::Pending(const detail::CollectiveLedger& ledger, uint64_t sequence,
                                detail::Collective collective, c10::intrusive_ptr<c10d::Work> work,
                                std::function<void()> then)
    : ledger_(&ledger),
      sequence_(sequence),
      collective_(std::move(collective)),
      work_(std::move(work)),
      then_(std::move(then)) {}

ACC_DECL void Gloo::Pending::wait() {
  try {
    work_->wait();
  } catch (const c10::Error& e) {
    fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    fail(e.what());
  }
  if (then_) then_();
}

ACC_DECL void Gloo::Pending::fail(const std::string& cause) const {
  throw Error(ledger_->failure(sequence_, collective_, std::chrono::steady_clock::now() - started_, cause));
}

ACC_DECL Gloo::Pending Gloo::start(detail::Collective collective, std::function<void()> then,
                                   const std::function<c10::intrusive_ptr<c10d::Work>()>& launch) {
  const uint64_t sequence = ledger_.begin(collective);
  // Before the launch: Gloo's own timeout counts from inside it, and a collective that Gloo ends
  // for taking the timeout must be reported as having waited that long (under load the launch
  // itself can take a noticeable share of it).
  const auto started = std::chrono::steady_clock::now();
  c10::intrusive_ptr<c10d::Work> work;
  try {
    work = launch();
  } catch (const c10::Error& e) {
    throw Error(ledger_.failure(sequence, collective, {}, e.what_without_backtrace()));
  }
  Pending pending(ledger_, sequence, std::move(collective), std::move(work), std::move(then));
  pending.started_ = started;
  return pending;
}

ACC_DECL Gloo::Pending Gloo::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  auto wire = detail::on_the_wire(tensor);
  auto then = [tensor, wire, op, world = world_size_]() mutable {
    if (op == ReduceOp::mean) wire.div_(world);
    if (!wire.is_same(tensor)) tensor.copy_(wire);
  };
  return start(detail::Collective("all_reduce", tensor, op), std::move(then), [&] {
    std::vector<at::Tensor> tensors{wire};
    c10d::AllreduceOptions options;
    options.reduceOp = detail::to_c10d(op);
    return group_->gloo->allreduce(tensors, options);
  });
}

ACC_DECL Gloo::Pending Gloo::all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
  auto wire_output = detail::on_the_wire(output);
  std::function<void()> then;
  if (!wire_output.is_same(output)) then = [output, wire_output]() mutable { output.copy_(wire_output); };
  return start(detail::Collective("all_gather_into", input), std::move(then), [&] {
    std::vector<at::Tensor> inputs{detail::on_the_wire(input).contiguous()};
    std::vector<std::vector<at::Tensor>> outputs{wire_output.view({-1}).chunk(world_size_)};
    return group_->gloo->allgather(outputs, inputs);
  });
}

ACC_DECL Gloo::Pending Gloo::reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
  auto wire = detail::on_the_wire(input);
  auto then = [output, wire, op, world = world_size_, rank = rank_]() mutable {
    auto slice = wire.view({-1}).narrow(0, rank * output.numel(), output.numel()).view_as(output);
    if (op == ReduceOp::mean) slice.div_(world);
    output.copy_(slice);
  };
  return start(detail::Collective("reduce_scatter", input, op), std::move(then), [&] {
    std::vector<at::Tensor> tensors{wire};
    c10d::AllreduceOptions options;
    options.reduceOp = detail::to_c10d(op);
    return group_->gloo->allreduce(tensors, options);
  });
}

ACC_DECL void Gloo::broadcast(at::Tensor& tensor, int root) {
  auto wire = detail::on_the_wire(tensor);
  start(detail::Collective("broadcast", tensor, std::nullopt, root), nullptr, [&] {
    std::vector<at::Tensor> tensors{wire};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return group_->gloo->broadcast(tensors, options);
  }).wait();
  if (!wire.is_same(tensor)) tensor.copy_(wire);
}

ACC_DECL std::vector<at::Tensor> Gloo::all_gather(const at::Tensor& tensor) {
  std::vector<at::Tensor> inputs{detail::on_the_wire(tensor).contiguous()};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(inputs[0]));
  start(detail::Collective("all_gather", tensor), nullptr, [&] {
    return group_->gloo->allgather(outputs, inputs);
  }).wait();
  for (auto& piece : outputs[0]) piece = piece.to(tensor.scalar_type());
  return outputs[0];
}

ACC_DECL void Gloo::barrier() {
  start(detail::Collective("barrier"), nullptr, [&] { return group_->gloo->barrier(); }).wait();
}

}  // namespace acc

#endif

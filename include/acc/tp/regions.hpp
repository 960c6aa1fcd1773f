// The collectives at the edges of a tensor-parallel region (Megatron-LM's mappings), as autograd
// functions over the tensor-parallel group's communicator. Each is the other's transpose:
//   copy_to_region     forward: identity                 backward: all-reduce (sum)
//   reduce_from_region forward: all-reduce (sum)         backward: identity
//   gather_from_region forward: all-gather, last dim     backward: keep this rank's slice
//   scatter_to_region  forward: keep this rank's slice   backward: all-gather, last dim
// and, for sequence parallelism, along the sequence (dimension 1 of [batch, sequence, ...]):
//   gather_from_sequence       forward: all-gather       backward: reduce-scatter (sum)
//   reduce_scatter_to_sequence forward: reduce-scatter   backward: all-gather
// A column-parallel layer starts with copy_to_region (its input is replicated; the input's
// gradient is the sum of every rank's partial one); a row-parallel layer ends with
// reduce_from_region (every rank holds a partial product). Under sequence parallelism (Megatron-LM's)
// the activations between a row-parallel layer and the next column-parallel one are each rank's
// slice of the sequence, so that the LayerNorms and dropouts there run on 1/ranks of it: the
// row-parallel layer reduce-scatters its partial products along the sequence instead of summing
// them whole (the same bytes as an all-reduce's second half), and the column-parallel layer gathers
// the sequence first. The communicator must outlive the autograd graphs built through it.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <string>
#include <vector>

namespace acc::tp {

namespace detail {

// The communicator, as autograd's saved data holds it.
template <class Comm>
struct CommHandle : torch::CustomClassHolder {
  explicit CommHandle(Comm& comm_) : comm(comm_) {}
  Comm& comm;
};

template <class Comm>
void save_comm(torch::autograd::AutogradContext* ctx, Comm& comm) {
  ctx->saved_data["comm"] = c10::IValue::make_capsule(c10::make_intrusive<CommHandle<Comm>>(comm));
}

template <class Comm>
Comm& saved_comm(torch::autograd::AutogradContext* ctx) {
  return c10::static_intrusive_pointer_cast<CommHandle<Comm>>(ctx->saved_data.at("comm").toCapsule())->comm;
}

template <class Comm>
at::Tensor all_reduced(const at::Tensor& tensor, Comm& comm) {
  auto sum = tensor.contiguous().clone();
  comm.all_reduce(sum, ReduceOp::sum);
  return sum;
}

template <class Comm>
at::Tensor gathered_last_dim(const at::Tensor& tensor, Comm& comm) {
  return at::cat(comm.all_gather(tensor.contiguous()), -1);
}

template <class Comm>
at::Tensor own_slice_last_dim(const at::Tensor& tensor, Comm& comm) {
  const int64_t size = tensor.size(-1);
  if (size % comm.world_size() != 0)
    throw Error("a tensor-parallel region splits the last dimension (" + std::to_string(size) + ") over " +
                std::to_string(comm.world_size()) +
                " ranks, which does not divide it; make the layer's features a "
                "multiple of the tensor-parallel size");
  const int64_t slice = size / comm.world_size();
  return tensor.narrow(-1, comm.rank() * slice, slice).contiguous();
}

// Activations are [batch, sequence, ...].
inline constexpr int64_t kSequenceDim = 1;

template <class Comm>
at::Tensor gathered_sequence(const at::Tensor& tensor, Comm& comm) {
  return at::cat(comm.all_gather(tensor.contiguous()), kSequenceDim);
}

// The sum over the group of every rank's `tensor`, this rank's slice of the sequence of it.
template <class Comm>
at::Tensor reduce_scattered_sequence(const at::Tensor& tensor, Comm& comm) {
  const int64_t length = tensor.size(kSequenceDim);
  if (length % comm.world_size() != 0)
    throw Error("sequence parallelism splits the sequence (dimension 1, of length " + std::to_string(length) +
                ") over " + std::to_string(comm.world_size()) +
                " ranks, which does not divide it; make the sequence length a multiple of the tensor-parallel size");
  // The sequence first: each rank's slice is then one contiguous block of the collective's input.
  auto input = tensor.movedim(kSequenceDim, 0).contiguous();
  auto sizes = input.sizes().vec();
  sizes[0] /= comm.world_size();
  auto output = at::empty(sizes, input.options());
  comm.reduce_scatter(output, input, ReduceOp::sum);
  return output.movedim(0, kSequenceDim).contiguous();
}

template <class Comm>
struct CopyToRegion : torch::autograd::Function<CopyToRegion<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Comm* comm) {
    save_comm(ctx, *comm);
    return input.view_as(input);  // a new tensor for autograd, sharing the input's storage
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {all_reduced(grads[0], saved_comm<Comm>(ctx)), at::Tensor()};
  }
};

template <class Comm>
struct ReduceFromRegion : torch::autograd::Function<ReduceFromRegion<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& input, Comm* comm) {
    return all_reduced(input, *comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list grads) {
    return {grads[0], at::Tensor()};
  }
};

template <class Comm>
struct GatherFromRegion : torch::autograd::Function<GatherFromRegion<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Comm* comm) {
    save_comm(ctx, *comm);
    return gathered_last_dim(input, *comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {own_slice_last_dim(grads[0], saved_comm<Comm>(ctx)), at::Tensor()};
  }
};

template <class Comm>
struct ScatterToRegion : torch::autograd::Function<ScatterToRegion<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Comm* comm) {
    save_comm(ctx, *comm);
    return own_slice_last_dim(input, *comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {gathered_last_dim(grads[0], saved_comm<Comm>(ctx)), at::Tensor()};
  }
};

template <class Comm>
struct GatherFromSequence : torch::autograd::Function<GatherFromSequence<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Comm* comm) {
    save_comm(ctx, *comm);
    return gathered_sequence(input, *comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {reduce_scattered_sequence(grads[0], saved_comm<Comm>(ctx)), at::Tensor()};
  }
};

template <class Comm>
struct ReduceScatterToSequence : torch::autograd::Function<ReduceScatterToSequence<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, Comm* comm) {
    save_comm(ctx, *comm);
    return reduce_scattered_sequence(input, *comm);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    return {gathered_sequence(grads[0], saved_comm<Comm>(ctx)), at::Tensor()};
  }
};

}  // namespace detail

template <class Comm>
at::Tensor copy_to_region(const at::Tensor& input, Comm& comm) {
  return detail::CopyToRegion<Comm>::apply(input, &comm);
}

template <class Comm>
at::Tensor reduce_from_region(const at::Tensor& input, Comm& comm) {
  return detail::ReduceFromRegion<Comm>::apply(input, &comm);
}

template <class Comm>
at::Tensor gather_from_region(const at::Tensor& input, Comm& comm) {
  return detail::GatherFromRegion<Comm>::apply(input, &comm);
}

template <class Comm>
at::Tensor scatter_to_region(const at::Tensor& input, Comm& comm) {
  return detail::ScatterToRegion<Comm>::apply(input, &comm);
}

template <class Comm>
at::Tensor gather_from_sequence(const at::Tensor& input, Comm& comm) {
  return detail::GatherFromSequence<Comm>::apply(input, &comm);
}

template <class Comm>
at::Tensor reduce_scatter_to_sequence(const at::Tensor& input, Comm& comm) {
  return detail::ReduceScatterToSequence<Comm>::apply(input, &comm);
}

// A parameter used on each rank's slice of the sequence (a LayerNorm's, a row-parallel layer's
// bias under sequence parallelism) gets a partial gradient on each rank: from now on its gradient
// is summed over the group before it reaches .grad (and a data-parallel strategy's hooks), so that
// every rank holds the whole one.
template <class Comm>
void sum_gradient_over(const at::Tensor& parameter, Comm& comm) {
  parameter.register_hook([&comm](const at::Tensor& grad) { return detail::all_reduced(grad, comm); });
}

}  // namespace acc::tp

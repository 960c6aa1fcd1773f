// Cross-entropy over vocabulary-parallel logits (Megatron-LM's vocab_parallel_cross_entropy): each
// rank holds the logits of its slice of the vocabulary (a column-parallel LM head's output, not
// gathered), and no rank ever holds the full logits. Per token:
//   m = max over the vocabulary: the local max, all-reduced (max);
//   S = sum of exp(logit - m): the local sum, all-reduced (sum);
//   t = logit of the target - m: taken by the rank holding the target, zero elsewhere, all-reduced;
//   loss = log S - t.
// The gradient with respect to the local logits is softmax - one_hot(target), from what the
// forward kept: no collective in backward.
#pragma once

#include <acc/comm/comm.hpp>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/custom_function.h>

namespace acc::tp {

namespace detail {

template <class Comm>
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy<Comm>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& target,
                            Comm* comm) {
    const int64_t vocab = logits.size(-1);
    const int64_t first = comm->rank() * vocab;
    auto max = logits.amax(-1);
    comm->all_reduce(max, ReduceOp::max);
    const auto shifted = logits - max.unsqueeze(-1);
    const auto elsewhere = target.lt(first).logical_or(target.ge(first + vocab));
    const auto local_target = (target - first).masked_fill(elsewhere, 0);
    auto target_logit = shifted.gather(-1, local_target.unsqueeze(-1)).squeeze(-1).masked_fill(elsewhere, 0);
    comm->all_reduce(target_logit, ReduceOp::sum);
    auto exp = shifted.exp();
    auto sum_exp = exp.sum(-1);
    comm->all_reduce(sum_exp, ReduceOp::sum);
    const auto softmax = exp.div_(sum_exp.unsqueeze(-1));
    ctx->save_for_backward({softmax, local_target, elsewhere});
    return sum_exp.log_() - target_logit;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& softmax = saved[0];
    const auto& local_target = saved[1];
    const auto& elsewhere = saved[2];
    auto grad = softmax.clone();
    const auto held_here = elsewhere.logical_not().to(grad.scalar_type()).unsqueeze(-1);
    grad.scatter_add_(-1, local_target.unsqueeze(-1), held_here.neg());
    grad.mul_(grads[0].unsqueeze(-1));
    return {grad, at::Tensor(), at::Tensor()};
  }
};

}  // namespace detail

// The loss of each token ([...], the shape of `target`) from `logits` ([..., vocabulary / ranks]:
// this rank's slice of the vocabulary, in rank order) over the tensor-parallel group `comm`; take
// its mean for torch::nn::functional::cross_entropy's default. Every target must be a row of the
// vocabulary (no ignore_index).
template <class Comm>
at::Tensor vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& target, Comm& comm) {
  return detail::VocabParallelCrossEntropy<Comm>::apply(logits, target, &comm);
}

}  // namespace acc::tp

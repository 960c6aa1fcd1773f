// acc::JoinUnevenInputs: Python Accelerate's join_uneven_inputs as a scope, for processes that
// have different numbers of batches (loaders prepared after set_even_batches(false)). Inside it,
// each backward first counts the processes still training. A process whose loop has ended waits
// at the end of the scope and takes part in the others' gradient averaging with zeros, so the
// average stays over all processes (PyTorch's Join with divide_by_initial_world_size), until every
// process is done; then every process takes the weights of the one that trained longest.
// DDP (MULTI_CPU, MULTI_GPU) only; on one process, or disabled, it does nothing.
//
//   accelerator.set_even_batches(false);
//   auto [model, optimizer, loader] = accelerator.prepare(net, opt, acc::DataLoader(data, 16));
//   {
//     acc::JoinUnevenInputs join(accelerator, model);
//     for (auto& batch : loader) {
//       accelerator.backward(loss_of(model, batch));
//       optimizer.step();
//       optimizer.zero_grad();
//     }
//   }
//
// Inside the scope the loop may not call other collectives (gather, reduce, check_trigger): the
// processes that are done would not match them.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/error.hpp>
#include <acc/precision/no_loss_scaling.hpp>

#include <ATen/core/grad_mode.h>
#include <ATen/ops/tensor.h>

#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

namespace acc {
namespace detail {
// Strategies whose gradient averaging a process that is done can take part in (DDP's).
template <class Strategy, class = void>
struct joins_gradient_averaging : std::false_type {};
template <class Strategy>
struct joins_gradient_averaging<Strategy, std::void_t<decltype(std::declval<Strategy&>().average_zero_gradients())>>
    : std::true_type {};
}  // namespace detail

template <class Accelerator, class Model>
class JoinUnevenInputs {
 public:
  JoinUnevenInputs(Accelerator& accelerator, Model& model, bool enabled = true)
      : accelerator_(accelerator),
        model_(model),
        enabled_(enabled && accelerator.num_processes() > 1),
        uncaught_at_start_(std::uncaught_exceptions()) {
    // Run-time errors, not static_asserts: acc::run compiles the training loop for every strategy.
    if (enabled_ && !detail::joins_gradient_averaging<typename Accelerator::strategy_type>::value)
      throw Error("join_uneven_inputs joins DDP's gradient averaging, and " + Accelerator::distributed_type() +
                  " has other collectives (FSDP gathers parameters in forward): give every process the same "
                  "number of batches (even_batches on), or train with distributed_type MULTI_CPU or MULTI_GPU");
    if (enabled_ && !std::is_same_v<typename Accelerator::precision_type::loss_scaler, NoLossScaling>)
      throw Error(
          "join_uneven_inputs cannot join fp16's loss scaling, whose overflow check is a collective of its own: "
          "use mixed_precision bf16 or no, or give every process the same number of batches (even_batches on)");
    if (enabled_) accelerator_.before_backward([this](bool synchronizes) { announce(synchronizes); });
  }
  // Waits for the other processes as described above, unless the scope is left by an exception
  // (the others may not be here to join).
  ~JoinUnevenInputs() noexcept(false) {
    if (!enabled_) return;
    accelerator_.before_backward(nullptr);
    if (std::uncaught_exceptions() == uncaught_at_start_) join();
  }
  JoinUnevenInputs(const JoinUnevenInputs&) = delete;
  JoinUnevenInputs& operator=(const JoinUnevenInputs&) = delete;

 private:
  // Every backward of a process still training, and every round of a process that is done, is
  // one sum over all processes of (training, averaging gradients in this backward).
  at::Tensor count(int64_t training, bool averaging) {
    const auto mine = at::tensor({training, averaging ? int64_t{1} : int64_t{0}}, at::kLong);
    return accelerator_.reduce(mine.to(accelerator_.device()), ReduceOp::sum);
  }

  void announce(bool averaging) {
    ++backwards_;
    count(1, averaging);
  }

  void join() {
    // Only a process that is done reads the counts: one still training never waits for them.
    for (auto counts = count(0, false).cpu(); counts[0].template item<int64_t>() > 0; counts = count(0, false).cpu())
      if constexpr (detail::joins_gradient_averaging<typename Accelerator::strategy_type>::value)
        if (counts[1].template item<int64_t>() > 0) accelerator_.strategy().average_zero_gradients();
    // The process that ran the most backwards (the lowest rank among equals) holds the weights
    // that every step trained; the others' optimizers skipped the steps after they were done.
    const int world = accelerator_.num_processes();
    const auto key = at::tensor({backwards_ * world + (world - 1 - accelerator_.process_index())}, at::kLong);
    const auto longest = accelerator_.reduce(key.to(accelerator_.device()), ReduceOp::max).cpu();
    const int source = world - 1 - static_cast<int>(longest.template item<int64_t>() % world);
    at::NoGradGuard no_grad;
    for (auto& parameter : model_->parameters()) parameter.copy_(accelerator_.broadcast(parameter, source));
    for (auto& buffer : model_->buffers()) buffer.copy_(accelerator_.broadcast(buffer, source));
  }

  Accelerator& accelerator_;
  Model& model_;
  bool enabled_;
  int uncaught_at_start_;
  int64_t backwards_ = 0;
};

}  // namespace acc

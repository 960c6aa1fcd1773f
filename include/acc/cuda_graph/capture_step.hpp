// acc::capture_step: a whole training step (forward, backward, the gradients' all-reduce, the
// optimizer step) recorded once as a CUDA graph and replayed for every batch, so that a step costs
// one graph launch instead of hundreds of kernel launches from the host. For static shapes; the
// step function is the loop's body as it is, returning what the loop wants back:
//
//   #include <acc/cuda_graph/capture_step.hpp>
//
//   auto step = acc::capture_step(accelerator, optimizer, [&](const torch::data::Example<>& batch) {
//     optimizer.zero_grad();
//     auto loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
//     accelerator.backward(loss);
//     optimizer.step();
//     return loss;
//   });
//   for (auto& batch : loader) {
//     auto loss = step(batch);  // this step's loss; the next step overwrites it (clone to keep it)
//     scheduler.step();         // the replays read the optimizer's learning rate from the device
//   }
//
// The first CaptureOptions::warmup_steps calls run the function eagerly (lazy state: the
// optimizer's moments, DDP's bucket layout after its first step, cuBLAS workspaces); the next one
// records it on a stream of its own, with its batch copied into buffers the graph reads, and every
// call then copies its batch into those buffers and replays. Each call is exactly one training step
// on its batch. On a CPU device the function always runs eagerly, so that one program runs on both.
//
// What the function may do: anything that queues work on the GPU. It must not wait for the GPU
// (.item(), printing or copying a tensor to the host) nor make host decisions from tensor values:
// the host part runs once, at the capture. It needs an optimizer whose step reads its step counts
// and learning rate from the device (acc::optim::AdamW on CUDA), gradient_accumulation_steps 1,
// a strategy that replicates the model (Single, DDP), and zero_grad inside the function.
#pragma once

#include <acc/cuda_graph/step_graph.hpp>
#include <acc/detail/tensor_tree.hpp>
#include <acc/error.hpp>
#include <acc/prepared/optimizer.hpp>
#include <acc/strategy/strategy.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/arg.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

namespace acc {

class CaptureOptions {
 public:
  // Eager steps before the capture (at least 1), for the state a step creates the first time.
  TORCH_ARG(int64_t, warmup_steps) = 3;
};

namespace detail {
// The optimizer itself, under a prepared optimizer.
template <class Optimizer>
Optimizer& underlying_optimizer(Optimizer& optimizer) {
  return optimizer;
}
template <class Optimizer, class Owner>
Optimizer& underlying_optimizer(PreparedOptimizer<Optimizer, Owner>& optimizer) {
  return optimizer.unwrap();
}

// A strategy whose gradient hooks belong to a stream (DDP's), which a capture moves.
template <class Strategy, class = void>
struct adopts_current_stream : std::false_type {};
template <class Strategy>
struct adopts_current_stream<Strategy, std::void_t<decltype(std::declval<Strategy&>().adopt_current_stream())>>
    : std::true_type {};

// A communicator whose watchdog can be handed work queued outside its own calls (Nccl's).
template <class Comm, class = void>
struct watches_queued_work : std::false_type {};
template <class Comm>
struct watches_queued_work<Comm, std::void_t<decltype(std::declval<Comm&>().watch_queued_work(""))>> : std::true_type {
};

template <class Optimizer, class = void>
struct steps_on_device_capable : std::false_type {};
template <class Optimizer>
struct steps_on_device_capable<Optimizer, std::void_t<decltype(std::declval<const Optimizer&>().steps_on_device()),
                                                      decltype(std::declval<Optimizer&>().load_learning_rates())>>
    : std::true_type {};
}  // namespace detail

template <class Accelerator, class Optimizer, class Step>
class CapturedStep {
  using Underlying = std::decay_t<decltype(detail::underlying_optimizer(std::declval<Optimizer&>()))>;
  static constexpr bool optimizer_steps_on_device = detail::steps_on_device_capable<Underlying>::value;
  static_assert(optimizer_steps_on_device,
                "capture_step needs an optimizer whose step reads its step counts and learning rate from the device, "
                "so that a replayed graph sees them change: use acc::optim::AdamW (include/acc/optim/adamw.hpp); "
                "libtorch's optimizers compute them on the host");

 public:
  CapturedStep(Accelerator& accelerator, Optimizer& optimizer, Step step, CaptureOptions options)
      : accelerator_(accelerator), optimizer_(optimizer), step_(std::move(step)), options_(options) {
    if (options_.warmup_steps() < 1)
      throw Error("CaptureOptions::warmup_steps is " + std::to_string(options_.warmup_steps()) +
                  "; it must be at least 1 (the optimizer's state and DDP's buckets are made by a first eager step)");
    if (shards_model_v<typename Accelerator::strategy_type>)
      throw Error(
          "capture_step captures the step of a replicated model (distributed_type NO or MULTI_GPU/MULTI_CPU, "
          "DDP); FSDP gathers and frees its shards on the host's schedule: train it without capture_step");
    if (accelerator_.device().is_cuda()) graph_ = std::make_unique<detail::StepGraph>(accelerator_.device());
  }

  // One training step on `batch` (a tensor, a torch::data::Example, or vectors, pairs, tuples and
  // string maps of them, always of the same shapes): what the step function returns, which after
  // the capture is the graph's own output, overwritten by the next call.
  template <class Batch>
  auto operator()(const Batch& batch) {
    static_assert(detail::is_tensor_tree_v<Batch>,
                  "capture_step's batch must be an at::Tensor, a torch::data::Example, or std::vector, std::pair, "
                  "std::tuple and std::map<std::string, ...> of them");
    using Result = std::decay_t<decltype(step_(batch))>;
    check_step_settings();
    check_same_shapes(batch);
    ++steps_;
    if (!graph_) return step_(batch);
    if (steps_ < options_.warmup_steps()) return step_(batch);
    if (steps_ == options_.warmup_steps()) {  // the last eager step runs where the capture will
      if constexpr (std::is_void_v<Result>) {
        on_graph_stream([&] { step_(batch); });
        return;
      } else {
        std::optional<Result> result;
        on_graph_stream([&] { result.emplace(step_(batch)); });
        return std::move(*result);
      }
    }
    if (!graph_->captured()) {
      try {
        capture<Result>(batch);
      } catch (...) {
        --steps_;  // not taken
        throw;
      }
    }
    std::size_t i = 0;
    detail::for_each_tensor(batch, [&](const at::Tensor& t) { inputs_[i++].copy_(t, /*non_blocking=*/true); });
    detail::underlying_optimizer(optimizer_).load_learning_rates();
    replay();
    if constexpr (!std::is_void_v<Result>) return *std::static_pointer_cast<Result>(output_);
  }

  // Whether the step runs as a CUDA graph now (false on a CPU device, and during the warm-up).
  bool captured() const { return graph_ && graph_->captured(); }
  // Steps taken through this object.
  int64_t steps() const { return steps_; }

 private:
  void check_step_settings() const {
    if (accelerator_.gradient_accumulation_steps() != 1)
      throw Error("capture_step replays one optimizer step per call, but gradient_accumulation_steps is " +
                  std::to_string(accelerator_.gradient_accumulation_steps()) +
                  ": set it to 1 (AcceleratorOptions().gradient_accumulation_steps(1), or the config's "
                  "gradient_accumulation_steps) and make the batch that many times larger");
  }

  struct Layout {
    std::vector<int64_t> sizes;
    at::ScalarType dtype;
    c10::Device device;
    bool operator==(const Layout& other) const {
      return sizes == other.sizes && dtype == other.dtype && device == other.device;
    }
    std::string str() const {
      std::ostringstream text;
      text << "[";
      for (std::size_t i = 0; i < sizes.size(); ++i) text << (i ? ", " : "") << sizes[i];
      text << "] (" << dtype << ", " << device << ")";
      return text.str();
    }
  };
  static Layout layout_of(const at::Tensor& t) { return {t.sizes().vec(), t.scalar_type(), t.device()}; }

  // Every batch is laid out as the first one: a graph replays fixed shapes (checked on a CPU
  // device too, so that a program tried there fails the same way).
  template <class Batch>
  void check_same_shapes(const Batch& batch) {
    std::vector<at::Tensor> leaves;
    detail::for_each_tensor(batch, [&](const at::Tensor& t) { leaves.push_back(t); });
    if (!batch_type_) {
      batch_type_ = std::type_index(typeid(Batch));
      for (std::size_t i = 0; i < leaves.size(); ++i) {
        if (graph_ && leaves[i].device() != accelerator_.device())
          throw Error("capture_step: tensor " + std::to_string(i) + " of the batch is on " + leaves[i].device().str() +
                      "; a captured step reads its batch on " + accelerator_.device().str() +
                      " (a prepared acc::DataLoader puts it there)");
        layout_.push_back(layout_of(leaves[i]));
      }
      return;
    }
    if (*batch_type_ != std::type_index(typeid(Batch)))
      throw Error("capture_step: this batch is of another type than the first one; a captured step takes one type");
    if (leaves.size() != layout_.size())
      throw Error("capture_step: this batch holds " + std::to_string(leaves.size()) + " tensors, the first one held " +
                  std::to_string(layout_.size()) + "; a CUDA graph replays a fixed layout");
    for (std::size_t i = 0; i < leaves.size(); ++i)
      if (!(layout_of(leaves[i]) == layout_[i]))
        throw Error("capture_step: tensor " + std::to_string(i) + " of the batch is " + layout_of(leaves[i]).str() +
                    " but the first batch's was " + layout_[i].str() +
                    ": a CUDA graph replays fixed shapes. Give every batch the same shape (a short last batch: "
                    "acc::DataLoaderOptions().drop_last(true)), or run the odd batch through your step function "
                    "directly");
  }

  // The graph's replay; its collectives (DDP's all-reduces over NCCL) are handed to the
  // communicator's watchdog as one, so that a peer that never arrives ends the job with a message
  // instead of a hang.
  void replay() {
    auto& comm = accelerator_.strategy().comm();
    if constexpr (detail::watches_queued_work<std::decay_t<decltype(comm)>>::value) {
      comm.throw_if_failed();  // an aborted communicator's collectives would never end
      graph_->replay();
      if (comm.world_size() > 1) comm.watch_queued_work("a captured step's collectives (acc::capture_step)");
    } else {
      graph_->replay();
    }
  }

  // Runs `body` on the graph's stream, the strategy's gradient hooks moved there first.
  template <class Body>
  void on_graph_stream(Body&& body) {
    graph_->on_own_stream([&] {
      if constexpr (detail::adopts_current_stream<typename Accelerator::strategy_type>::value)
        accelerator_.strategy().adopt_current_stream();
      body();
    });
  }

  template <class Result, class Batch>
  void capture(const Batch& batch) {
    auto& optimizer = detail::underlying_optimizer(optimizer_);
    if (!optimizer.steps_on_device())
      throw Error(
          "capture_step: the optimizer does not step on the device: acc::optim::AdamW does on CUDA with "
          "Kernel::fastest and amsgrad off, with every parameter on the GPU (libtorch >= 2.1)");
    // The graph reads the batch from buffers of its own, which each call fills.
    auto static_batch =
        std::make_shared<Batch>(detail::map_tensors(batch, [](const at::Tensor& t) { return t.clone(); }));
    inputs_.clear();
    detail::for_each_tensor(*static_batch, [&](const at::Tensor& t) { inputs_.push_back(t); });
    optimizer.load_learning_rates();  // now, so that the capture records no copy of it
    try {
      graph_->capture([&] {
        if constexpr (std::is_void_v<Result>)
          step_(*static_batch);
        else
          output_ = std::make_shared<Result>(step_(*static_batch));
      });
    } catch (const std::exception& failure) {
      output_.reset();
      throw Error(std::string("capture_step: the step could not be captured as a CUDA graph, and was not taken: ") +
                  failure.what() +
                  "\nA captured step must not wait for the GPU: no .item(), no printing or copying a tensor to the "
                  "host, no shapes that depend on values, inside the step function; do those outside it");
    }
    static_batch_ = std::move(static_batch);
  }

  Accelerator& accelerator_;
  Optimizer& optimizer_;
  Step step_;
  CaptureOptions options_;
  std::unique_ptr<detail::StepGraph> graph_;  // on a CUDA device
  int64_t steps_ = 0;
  std::optional<std::type_index> batch_type_;
  std::vector<Layout> layout_;  // the first batch's tensors
  std::shared_ptr<void> static_batch_, output_;
  std::vector<at::Tensor> inputs_;  // the static batch's tensors, in for_each_tensor's order
};

// A CapturedStep of `step` for this accelerator and (prepared) optimizer; see the top of this file.
template <class Accelerator, class Optimizer, class Step>
CapturedStep<Accelerator, Optimizer, std::decay_t<Step>> capture_step(Accelerator& accelerator, Optimizer& optimizer,
                                                                      Step&& step, CaptureOptions options = {}) {
  return {accelerator, optimizer, std::forward<Step>(step), options};
}

}  // namespace acc

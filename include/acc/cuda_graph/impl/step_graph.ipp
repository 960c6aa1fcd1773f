// The bodies of cuda_graph/step_graph.hpp.
#pragma once

#include <acc/cuda_graph/step_graph.hpp>
#include <acc/error.hpp>

#if ACC_HAS_CUDA
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <exception>
#include <optional>

namespace acc::detail {

#if ACC_HAS_CUDA
struct StepGraph::State {
  explicit State(c10::Device device)
      : device(device), stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())) {}
  c10::Device device;
  c10::cuda::CUDAStream stream;  // a graph is captured on a stream other than the default one
  std::optional<at::cuda::CUDAGraph> graph;
};

ACC_DECL StepGraph::StepGraph(c10::Device device) : state_(std::make_unique<State>(device)) {
  if (!device.is_cuda()) throw Error("acc::detail::StepGraph needs a CUDA device, not " + device.str());
}
ACC_DECL StepGraph::~StepGraph() = default;

ACC_DECL void StepGraph::on_own_stream(const std::function<void()>& body) {
  auto& s = *state_;
  const auto caller = c10::cuda::getCurrentCUDAStream(s.device.index());
  at::cuda::CUDAEvent queued;
  queued.record(caller);
  queued.block(s.stream);
  std::exception_ptr failure;
  {
    c10::cuda::CUDAStreamGuard on_stream(s.stream);
    try {
      body();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  at::cuda::CUDAEvent done;
  done.record(s.stream);
  done.block(caller);
  if (failure) std::rethrow_exception(failure);
}

ACC_DECL void StepGraph::capture(const std::function<void()>& body) {
  auto& s = *state_;
  s.graph.reset();
  on_own_stream([&] {
    const bool cache = at::autocast::is_autocast_cache_enabled();
    at::autocast::set_autocast_cache_enabled(false);
    s.graph.emplace();
    const auto pool = at::cuda::graph_pool_handle();  // known here, for a failure's clean-up
    // Thread-local: only this thread is held to the capture's rules, so that a communicator's
    // watchdog thread may keep querying its events meanwhile.
    try {
      s.graph->capture_begin(pool, cudaStreamCaptureModeThreadLocal);
      body();
      s.graph->capture_end();
    } catch (...) {
      at::autocast::set_autocast_cache_enabled(cache);
      // End the capture the failure interrupted (unless capture_end did), drop what it recorded, and
      // let the stream's allocations leave the graph's pool, which CUDAGraph leaves to a complete capture.
      cudaGraph_t partial = nullptr;
      if (cudaStreamEndCapture(s.stream.stream(), &partial) == cudaSuccess && partial) cudaGraphDestroy(partial);
      (void)cudaGetLastError();
      try {
        c10::cuda::CUDACachingAllocator::endAllocateToPool(s.device.index(), pool);
      } catch (const c10::Error&) {  // capture_end got that far
      }
      try {
        c10::cuda::CUDACachingAllocator::releasePool(s.device.index(), pool);
      } catch (const c10::Error&) {  // capture_begin failed: no pool
      }
      s.graph.reset();
      // The default CUDA generator still counts itself as capturing, which makes every later random
      // op on the device fail; a capture that ends normally is what settles it.
      try {
        at::cuda::CUDAGraph settle;
        settle.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
        at::empty({1}, at::TensorOptions(s.device)).zero_();
        settle.capture_end();
      } catch (const c10::Error&) {  // the failure above is the one to report
      }
      throw;
    }
    at::autocast::set_autocast_cache_enabled(cache);
  });
}

ACC_DECL bool StepGraph::captured() const { return state_->graph.has_value(); }

ACC_DECL void StepGraph::replay() {
  if (!state_->graph) throw Error("acc::detail::StepGraph::replay: nothing was captured");
  state_->graph->replay();
}
#else
struct StepGraph::State {};

ACC_DECL StepGraph::StepGraph(c10::Device device) {
  throw Error("a CUDA graph was asked for on " + device.str() +
              ", but this build of accelerate-cpp has no CUDA (ACC_HAS_CUDA is 0)");
}
ACC_DECL StepGraph::~StepGraph() = default;
ACC_DECL void StepGraph::on_own_stream(const std::function<void()>& body) { body(); }
ACC_DECL void StepGraph::capture(const std::function<void()>&) {}
ACC_DECL bool StepGraph::captured() const { return false; }
ACC_DECL void StepGraph::replay() {}
#endif

}  // namespace acc::detail

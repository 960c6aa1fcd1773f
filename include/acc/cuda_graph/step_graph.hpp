// acc::detail::StepGraph: the CUDA side of acc::capture_step (cuda_graph/capture_step.hpp), out of
// its template. A graph captured on a stream of its own and replayed on the caller's; on a build
// without CUDA every call is an error.
#pragma once

#include <acc/detail/build_config.hpp>
#include <acc/detail/linkage.hpp>

#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace acc::detail {

class StepGraph {
 public:
  explicit StepGraph(c10::Device device);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Runs `body` with the graph's stream as the device's current one, after the work queued so far
  // on the caller's stream; the caller's stream then waits for what it queued.
  void on_own_stream(const std::function<void()>& body);
  // The same, but what `body` queues is recorded into the graph instead of run. The autocast cache
  // is off meanwhile (a cast weight must be cast again at each replay). An exception from `body`
  // leaves no graph and no capture behind.
  void capture(const std::function<void()>& body);
  bool captured() const;
  // Queues the captured work on the caller's stream.
  void replay();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/cuda_graph/impl/step_graph.ipp>
#endif

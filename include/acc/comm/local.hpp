// LocalComm: the communicator of a job with one process; every collective is the identity.
#pragma once

#include <acc/comm/comm.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string_view>
#include <vector>

namespace acc {

class LocalComm {
 public:
  static constexpr std::string_view name = "local";
  static constexpr bool available = true;

  explicit LocalComm(c10::Device device = c10::Device(c10::kCPU)) : device_(device) {}

  int rank() const { return 0; }
  int world_size() const { return 1; }
  c10::Device device() const { return device_; }
  struct Pending {
    void wait() {}
  };
  void all_reduce(at::Tensor&, ReduceOp) {}
  Pending all_reduce_async(at::Tensor&, ReduceOp) { return {}; }
  void broadcast(at::Tensor&, int) {}
  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) { return {tensor}; }
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { output.view_as(input).copy_(input); }
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
    all_gather_into(output, input);
    return {};
  }
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp) { output.copy_(input.view_as(output)); }
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter(output, input, op);
    return {};
  }
  void barrier() {}

 private:
  c10::Device device_;
};

}  // namespace acc

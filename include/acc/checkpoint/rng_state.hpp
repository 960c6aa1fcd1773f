// The states of libtorch's default random generators, the CPU's and every visible CUDA
// device's: what a checkpoint keeps per process (random_states_<rank>.bin) so that dropout and
// other random operations continue as if training had never stopped. CUDA generators are
// reached through ATen's device-generic context, so this builds with and without CUDA.
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/cuda.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace acc {

struct RngState {
  at::Tensor cpu;
  std::vector<at::Tensor> cuda;  // by device index

  static RngState capture() {
    RngState state;
    state.cpu = generator_state(c10::Device(c10::kCPU));
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      state.cuda.push_back(generator_state(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i))));
    return state;
  }

  // Sets the generators; CUDA devices beyond those saved, or saved beyond those visible, are
  // left alone (a process uses its own device).
  void restore() const {
    set_generator_state(c10::Device(c10::kCPU), cpu);
    const auto visible = static_cast<std::size_t>(torch::cuda::device_count());
    for (std::size_t i = 0; i < cuda.size() && i < visible; ++i)
      set_generator_state(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)), cuda[i]);
  }

  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("cpu", cpu);
    archive.write("cuda_devices", c10::IValue(static_cast<int64_t>(cuda.size())));
    for (std::size_t i = 0; i < cuda.size(); ++i) archive.write("cuda_" + std::to_string(i), cuda[i]);
  }
  void load(torch::serialize::InputArchive& archive) {
    archive.read("cpu", cpu);
    c10::IValue devices;
    archive.read("cuda_devices", devices);
    cuda.assign(static_cast<std::size_t>(devices.toInt()), at::Tensor());
    for (std::size_t i = 0; i < cuda.size(); ++i) archive.read("cuda_" + std::to_string(i), cuda[i]);
  }

 private:
  static at::Tensor generator_state(c10::Device device) {
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    return generator.get_state();
  }
  static void set_generator_state(c10::Device device, const at::Tensor& state) {
    auto generator = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
};

}  // namespace acc

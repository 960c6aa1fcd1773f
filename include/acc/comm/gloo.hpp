// Gloo: collectives between CPU processes through libtorch's c10d ProcessGroupGloo. Optional at
// build time: libtorch wheels ship no Gloo headers (ACC_HAS_GLOO is 0 there).
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_GLOO
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ops/empty.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>
#endif

namespace acc {

#if ACC_HAS_GLOO

namespace detail {

// The address of this machine that routes to `host` (no packet is sent: connecting a UDP socket
// only picks the route), so that peers on other machines can reach us.
inline std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    throw Error("cannot resolve MASTER_ADDR '" + host + "'; set it to an IP address or resolvable host name");
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  const bool ok = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
  freeaddrinfo(found);
  if (fd >= 0) ::close(fd);
  if (!ok) throw Error("no network route to MASTER_ADDR '" + host + "'; check the address or set GLOO_SOCKET_IFNAME");
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
  return text;
}

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

class Gloo {
 public:
  static constexpr std::string_view name = "gloo";
  static constexpr bool available = true;

  Gloo(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout)
      : rank_(env.rank), world_size_(env.world_size) {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    else if (env.num_nodes == 1)  // one machine: stay on loopback
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
          detail::local_address_towards(env.master_addr, env.master_port)));
    options->threads = 2;
    try {
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, world_size_, options);
    } catch (const std::exception& e) {
      throw Error("rank " + std::to_string(rank_) + ": Gloo could not connect to its peers: " + e.what());
    }
  }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return c10::Device(c10::kCPU); }

  // A collective running on Gloo's threads; wait() also does what is left to do on this side
  // (Gloo has no mean: a sum divided here).
  class Pending {
   public:
    Pending(c10::intrusive_ptr<c10d::Work> work, std::function<void()> then)
        : work_(std::move(work)), then_(std::move(then)) {}
    void wait() {
      work_->wait();
      if (then_) then_();
    }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    std::function<void()> then_;
  };

  Pending all_reduce_async(at::Tensor& tensor, ReduceOp op) {
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions options;
    options.reduceOp = detail::to_c10d(op);
    std::function<void()> then;
    if (op == ReduceOp::mean) then = [tensor, world = world_size_]() mutable { tensor.div_(world); };
    return Pending(group_->allreduce(tensors, options), std::move(then));
  }
  void all_reduce(at::Tensor& tensor, ReduceOp op) { all_reduce_async(tensor, op).wait(); }

  // Every rank's `input` side by side in `output` (world_size times its size, contiguous).
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
    std::vector<at::Tensor> inputs{input.contiguous()};
    std::vector<std::vector<at::Tensor>> outputs{output.view({-1}).chunk(world_size_)};
    return Pending(group_->allgather(outputs, inputs), nullptr);
  }
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  // libtorch 1.13's Gloo group has no reduce-scatter: the whole input is all-reduced (in place,
  // `input` is consumed) and the slice copied out, twice the traffic of a true reduce-scatter.
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    std::vector<at::Tensor> tensors{input};
    c10d::AllreduceOptions options;
    options.reduceOp = detail::to_c10d(op);
    return Pending(group_->allreduce(tensors, options),
                   [output, input, op, world = world_size_, rank = rank_]() mutable {
                     output.copy_(input.view({-1}).narrow(0, rank * output.numel(), output.numel()).view_as(output));
                     if (op == ReduceOp::mean) output.div_(world);
                   });
  }
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  void broadcast(at::Tensor& tensor, int root) {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    group_->broadcast(tensors, options)->wait();
  }

  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) {
    std::vector<at::Tensor> inputs{tensor.contiguous()};
    std::vector<std::vector<at::Tensor>> outputs(1);
    for (int r = 0; r < world_size_; ++r) outputs[0].push_back(at::empty_like(inputs[0]));
    group_->allgather(outputs, inputs)->wait();
    return outputs[0];
  }

  void barrier() { group_->barrier()->wait(); }

 private:
  int rank_;
  int world_size_;
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

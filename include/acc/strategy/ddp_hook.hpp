// DDP communication hooks: what DDP<Comm, Hook> does with a bucket of gradients once all of them
// are ready (Python's register_comm_hook, chosen at compile time). A hook is a default-
// constructible type with
//   template <class Comm> auto operator()(Comm& comm, at::Tensor& bucket);
// `bucket` is the flat buffer of the bucket's gradients (the parameters' .grad are views into it;
// one dtype, one device). The hook starts whatever communication leaves in `bucket` the average
// of all ranks' buckets, and returns a handle whose wait() completes it (and, as Comm::Pending's
// does, makes the result visible to the caller's stream or thread). DDP calls it once per bucket
// of every synchronized step, in bucket order (the same on every rank), from the autograd thread
// that produced the bucket's last gradient, and waits on the handles before the optimizer reads the
// gradients. A process alone (world size 1) calls no hook: its gradient is the average. Hooks with
// state (error feedback, low-rank factors) keep it in the hook object: DDP::hook() returns it.
#pragma once

#include <acc/comm/comm.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <type_traits>
#include <utility>

namespace acc {

// The default: an all-reduce that averages the bucket in place.
struct AllReduceHook {
  template <class Comm>
  auto operator()(Comm& comm, at::Tensor& bucket) {
    return comm.all_reduce_async(bucket, ReduceOp::mean);
  }
};

// Averages the bucket in Dtype (PyTorch's fp16_compress_hook): half the bytes on the wire, for
// Dtype's rounding of each rank's gradients and of their sum. The result goes back into the
// fp32 bucket when waited for. (Gloo in libtorch 1.13 reduces fp16 but not bf16.)
template <c10::ScalarType Dtype>
struct CompressionHook {
  template <class Comm>
  class Pending {
   public:
    Pending(typename Comm::Pending work, at::Tensor compressed, at::Tensor bucket)
        : work_(std::move(work)), compressed_(std::move(compressed)), bucket_(std::move(bucket)) {}
    void wait() {
      work_.wait();
      bucket_.copy_(compressed_);
    }

   private:
    typename Comm::Pending work_;
    at::Tensor compressed_, bucket_;
  };

  template <class Comm>
  Pending<Comm> operator()(Comm& comm, at::Tensor& bucket) {
    auto compressed = bucket.to(Dtype);
    auto work = comm.all_reduce_async(compressed, ReduceOp::mean);
    return Pending<Comm>(std::move(work), std::move(compressed), bucket);
  }
};
using FP16CompressionHook = CompressionHook<c10::ScalarType::Half>;

namespace detail {
template <class Hook, class Comm, class = void>
struct is_ddp_hook : std::false_type {};
template <class Hook, class Comm>
struct is_ddp_hook<
    Hook, Comm, std::void_t<decltype(std::declval<Hook&>()(std::declval<Comm&>(), std::declval<at::Tensor&>()).wait())>>
    : std::is_default_constructible<Hook> {};
}  // namespace detail

template <class Hook, class Comm>
inline constexpr bool is_ddp_hook_v = detail::is_ddp_hook<Hook, Comm>::value;

}  // namespace acc

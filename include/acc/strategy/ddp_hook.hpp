// DDP communication hooks: what DDP<Comm, Hook> does with a bucket of gradients once all of them
// are ready (Python's register_comm_hook, chosen at compile time). A hook is a type with either
//   template <class Comm> auto operator()(Comm& comm, at::Tensor& bucket);
//   template <class Comm> auto operator()(Comm& comm, const GradBucket& bucket);
// the second for hooks that need the bucket's index or its gradients' shapes. `bucket` is the
// flat buffer of the bucket's gradients (the parameters' .grad are views into it; one dtype, one
// device). The hook starts whatever communication leaves in it the average of all ranks'
// buckets, and returns a handle whose wait() completes it (and, as Comm::Pending's does, makes
// the result visible to the caller's stream or thread). DDP calls it once per bucket of every
// synchronized step, in bucket order (the same on every rank), from the autograd thread that
// produced the bucket's last gradient, and waits on the handles before the optimizer reads the
// gradients. A process alone (world size 1) calls no hook: its gradient is the average. Hooks with
// state (error feedback, low-rank factors) keep it in the hook object: DDP::hook() returns it.
//
// A hook is default-constructible or constructed from the DDPOptions DDP is given. Its
// `static constexpr std::string_view name`, if it has one, is the value of the config's
// acc.ddp_comm_hook that makes acc::run choose it; a hook without one is chosen when the config
// names none ("no").
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/strategy/ddp_options.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

// One bucket as a hook sees it (Python's dist.GradBucket).
struct GradBucket {
  // Which bucket: the order buckets start in, unique among the models DDP has prepared.
  std::size_t index = 0;
  // The flat buffer: every gradient of the bucket, one after the other.
  at::Tensor buffer;
  // Each parameter's gradient, a view into `buffer` with the parameter's shape, in buffer order.
  std::vector<at::Tensor> gradients;
  // Which synchronized step of its model this is, from 1 (a step that failed is taken again
  // under the same number): what a hook that changes with the steps reads, per model.
  int64_t step = 0;
};

// The default: an all-reduce that averages the bucket in place.
struct AllReduceHook {
  static constexpr std::string_view name = "no";
  template <class Comm>
  auto operator()(Comm& comm, at::Tensor& bucket) {
    return comm.all_reduce_async(bucket, ReduceOp::mean);
  }
};

// Averages the bucket in Dtype (PyTorch's fp16_compress_hook and bf16_compress_hook): half the
// bytes on the wire, for Dtype's rounding of each rank's gradients and of their sum. The result
// goes back into the fp32 bucket when waited for. (Gloo in libtorch 1.13 reduces fp16 but not bf16.)
template <c10::ScalarType Dtype>
struct CompressionHook {
  static constexpr bool is_half_precision = Dtype == c10::ScalarType::Half || Dtype == c10::ScalarType::BFloat16;
  static_assert(is_half_precision,
                "CompressionHook compresses to a 16-bit type: use CompressionHook<c10::ScalarType::Half> "
                "(acc::FP16CompressionHook) or CompressionHook<c10::ScalarType::BFloat16> (acc::BF16CompressionHook)");
  static constexpr std::string_view name = Dtype == c10::ScalarType::Half ? "fp16" : "bf16";

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
using BF16CompressionHook = CompressionHook<c10::ScalarType::BFloat16>;

namespace detail {
template <class Hook, class = void>
struct hook_name {
  static constexpr std::string_view value = AllReduceHook::name;
};
template <class Hook>
struct hook_name<Hook, std::void_t<decltype(std::string_view{Hook::name})>> {
  static constexpr std::string_view value = Hook::name;
};

template <class Hook, class Comm>
decltype(auto) call_hook(Hook& hook, Comm& comm, GradBucket& bucket) {
  if constexpr (std::is_invocable_v<Hook&, Comm&, const GradBucket&>)
    return hook(comm, std::as_const(bucket));
  else
    return hook(comm, bucket.buffer);
}

template <class Hook>
Hook make_hook(const DDPOptions& options) {
  if constexpr (std::is_constructible_v<Hook, const DDPOptions&>)
    return Hook(options);
  else
    return Hook();
}

template <class Hook, class Comm, class = void>
struct is_ddp_hook : std::false_type {};
template <class Hook, class Comm>
struct is_ddp_hook<
    Hook, Comm,
    std::void_t<decltype(call_hook(std::declval<Hook&>(), std::declval<Comm&>(), std::declval<GradBucket&>()).wait())>>
    : std::bool_constant<std::is_default_constructible_v<Hook> || std::is_constructible_v<Hook, const DDPOptions&>> {};
}  // namespace detail

template <class Hook, class Comm>
inline constexpr bool is_ddp_hook_v = detail::is_ddp_hook<Hook, Comm>::value;

// The config's acc.ddp_comm_hook value that selects Hook.
template <class Hook>
inline constexpr std::string_view hook_name_v = detail::hook_name<Hook>::value;

}  // namespace acc

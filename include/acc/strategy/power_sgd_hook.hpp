// PowerSGD (Vogels et al., 2019; PyTorch's powerSGD_hook and batched_powerSGD_hook) as DDP
// communication hooks: each rank's gradient matrix M is sent as two thin factors, P = M Q and
// Q = M^T P (one power iteration, P orthogonalized in between), so a bucket costs (n + m) r
// elements instead of n m. The ranks' P and Q are summed and averaged, and P Q^T, the projection of
// the ranks' mean gradient onto P's columns, replaces the gradient. What the approximation drops
// is kept per rank and added to its next gradient (error feedback), which makes it converge.
//
//   acc::Accelerator<acc::DDP<acc::Gloo, acc::PowerSGDHook>> accelerator(
//       acc::AcceleratorOptions().ddp(acc::DDPOptions().power_sgd(
//           acc::PowerSGDOptions().matrix_approximation_rank(2).start_iter(10))));
//
// PowerSGDHook compresses each gradient of two or more dimensions (viewed as rows = its first
// dimension) that its factors make min_compression_rate times smaller, and all-reduces the rest
// (biases, small layers) as they are. BatchedPowerSGDHook treats the whole bucket as one square
// matrix (zero-padded): fewer, larger products, but it mixes unrelated gradients into one matrix,
// so keep its rank at 1. Both all-reduce plainly for each bucket's first start_iter steps.
// A round's collectives: the uncompressed gradients and P start as the bucket is ready; Q's
// all-reduce runs in wait(), after P's.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/detail/linkage.hpp>
#include <acc/strategy/ddp_hook.hpp>
#include <acc/strategy/ddp_options.hpp>

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace acc {
namespace detail {

// One bucket's PowerSGD state: how it splits into matrices, and its factors and errors.
struct LowRankBucket {
  bool planned = false;
  int64_t rounds = 0;                    // its model's step at the bucket's last round (GradBucket::step)
  bool has_factors = false;              // Q holds the last round's factors (warm start)
  at::Tensor square;                     // batched: the bucket zero-padded to side x side elements
  std::vector<at::Tensor> matrices;      // what is approximated: views into the bucket, or `square`
  std::vector<at::Tensor> uncompressed;  // gradients all-reduced as they are (views into the bucket)
  at::Tensor p, q, error;                // flat memories of the factors and of the errors
  std::vector<at::Tensor> ps, qs, errors;
  at::Tensor uncompressed_flat;  // this round's uncompressed gradients, side by side
};

// Splits the bucket into matrices and allocates their factors (and errors, with error feedback).
ACC_DECL void plan_low_rank(LowRankBucket& state, const GradBucket& bucket, const PowerSGDOptions& options,
                            bool batched);
// Before P's all-reduce: the errors added in, Q orthogonalized (random at first, or without warm
// start; the same on every rank), P = M Q, the uncompressed gradients gathered.
ACC_DECL void begin_low_rank_round(LowRankBucket& state, const GradBucket& bucket, const PowerSGDOptions& options);
// After P's all-reduce: P orthogonalized, Q = M^T P.
ACC_DECL void project_low_rank(LowRankBucket& state, const PowerSGDOptions& options);
// After Q's all-reduce (the mean): M = P Q^T into the bucket, the errors kept, the uncompressed
// gradients put back.
ACC_DECL void end_low_rank_round(LowRankBucket& state, const GradBucket& bucket);
// Gram-Schmidt on the columns of `matrix`, in place; a zero column stays zero.
ACC_DECL void orthogonalize_columns(const at::Tensor& matrix, double epsilon);
// The options, or an acc::Error naming the one that is out of range.
ACC_DECL PowerSGDOptions checked_power_sgd_options(const PowerSGDOptions& options);

}  // namespace detail

template <bool Batched>
class BasicPowerSGDHook {
 public:
  static constexpr std::string_view name = Batched ? "batched_power_sgd" : "power_sgd";

  BasicPowerSGDHook() : BasicPowerSGDHook(DDPOptions()) {}
  explicit BasicPowerSGDHook(const DDPOptions& options)
      : options_(detail::checked_power_sgd_options(options.power_sgd())) {}

  template <class Comm>
  class Pending {
   public:
    // A plain all-reduce of the whole bucket.
    explicit Pending(typename Comm::Pending whole) : whole_(std::move(whole)) {}
    Pending(Comm& comm, detail::LowRankBucket& state, const GradBucket& bucket, const PowerSGDOptions& options,
            std::optional<typename Comm::Pending> uncompressed, typename Comm::Pending p)
        : comm_(&comm),
          state_(&state),
          bucket_(&bucket),
          options_(&options),
          uncompressed_(std::move(uncompressed)),
          whole_(std::move(p)) {}

    void wait() {
      whole_.wait();
      if (!state_) return;
      if (uncompressed_) uncompressed_->wait();
      detail::project_low_rank(*state_, *options_);
      comm_->all_reduce(state_->q, ReduceOp::mean);
      detail::end_low_rank_round(*state_, *bucket_);
    }

   private:
    Comm* comm_ = nullptr;
    detail::LowRankBucket* state_ = nullptr;  // null: a plain round
    const GradBucket* bucket_ = nullptr;      // DDP keeps it until wait() returns
    const PowerSGDOptions* options_ = nullptr;
    std::optional<typename Comm::Pending> uncompressed_;
    typename Comm::Pending whole_;  // the bucket's all-reduce, or P's
  };

  template <class Comm>
  Pending<Comm> operator()(Comm& comm, const GradBucket& bucket) {
    // The model's step, not a count of this bucket's rounds: a bucket made later (DDP's layout
    // after the first step, a model prepared later) is plain for as long as its model's others.
    auto& state = buckets_[bucket.index];
    state.rounds = bucket.step;
    const bool plain = state.rounds <= options_.start_iter();
    if (!plain && !state.planned) detail::plan_low_rank(state, bucket, options_, Batched);
    if (plain || state.matrices.empty()) {
      auto buffer = bucket.buffer;  // the same storage: the all-reduce averages the bucket
      return Pending<Comm>(comm.all_reduce_async(buffer, ReduceOp::mean));
    }
    detail::begin_low_rank_round(state, bucket, options_);
    std::optional<typename Comm::Pending> uncompressed;
    if (state.uncompressed_flat.defined())
      uncompressed.emplace(comm.all_reduce_async(state.uncompressed_flat, ReduceOp::mean));
    auto p = comm.all_reduce_async(state.p, ReduceOp::sum);  // P is orthogonalized next: no need to average
    elements_uncompressed_ += bucket.buffer.numel();
    elements_sent_ +=
        state.p.numel() + state.q.numel() + (state.uncompressed_flat.defined() ? state.uncompressed_flat.numel() : 0);
    return Pending<Comm>(comm, state, bucket, options_, std::move(uncompressed), std::move(p));
  }

  const PowerSGDOptions& options() const { return options_; }
  // Over the compressed rounds so far: the elements a plain all-reduce would have sent, over
  // those sent (0 before the first).
  double compression_rate() const {
    return elements_sent_ == 0 ? 0.0
                               : static_cast<double>(elements_uncompressed_) / static_cast<double>(elements_sent_);
  }
  // Compressed rounds' elements so far: what a plain all-reduce would have sent, and what was.
  int64_t elements_uncompressed() const { return elements_uncompressed_; }
  int64_t elements_sent() const { return elements_sent_; }

 private:
  PowerSGDOptions options_;
  std::map<std::size_t, detail::LowRankBucket> buckets_;  // by bucket index; nodes stay put
  int64_t elements_uncompressed_ = 0;
  int64_t elements_sent_ = 0;
};

using PowerSGDHook = BasicPowerSGDHook<false>;
using BatchedPowerSGDHook = BasicPowerSGDHook<true>;

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/strategy/impl/power_sgd_hook.ipp>
#endif

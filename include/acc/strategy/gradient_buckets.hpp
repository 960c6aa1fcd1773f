// DDP's gradient synchronization: parameters grouped into buckets, each parameter's .grad a view
// into its bucket's flat buffer, and a bucket handed to the communication hook (an all-reduce by
// default, strategy/ddp_hook.hpp) from an autograd hook the moment its last gradient has been
// accumulated, so communication overlaps the rest of backward. Buckets start in index order on
// every rank, whatever order their gradients arrive in, so that the collectives match.
// The first layout follows reverse registration order (a small first bucket), the order
// gradients usually arrive in; after the first synchronized step the buckets are laid out again
// in the order the gradients did arrive (rank 0's, broadcast), as PyTorch's DDP does: a module
// declared before the ones it follows (a head declared first) would otherwise sit in the last
// bucket while the first one waits for the end of backward, and buckets start in order.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/error.hpp>
#include <acc/strategy/ddp_hook.hpp>
#include <acc/strategy/ddp_options.hpp>

#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace acc::detail {

template <class Comm, class Hook>
class GradientBuckets {
 public:
  // The buckets' indices, as the hook sees them, are taken from *next_index (counting on from
  // it; an own counter from 0 if null), so that they stay unique across models and layouts.
  GradientBuckets(Comm& comm, Hook& hook, const std::vector<std::pair<std::string, at::Tensor>>& parameters,
                  const DDPOptions& options, std::size_t* next_index = nullptr)
      : comm_(comm),
        hook_(hook),
        options_(options),
        next_index_(next_index ? next_index : &own_next_index_),
        laid_out_by_arrival_(comm.world_size() == 1) {  // alone, no bucket is ever sent
    for (auto it = parameters.rbegin(); it != parameters.rend(); ++it)
      params_.push_back(Param{it->first, it->second, torch::autograd::impl::grad_accumulator(it->second)});
    for (const auto& p : params_)
      if (!p.accumulator)
        throw Error("parameter '" + p.name + "' has no gradient accumulator (is it a view of another tensor?)");
    std::vector<std::size_t> reverse_registration(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) reverse_registration[i] = i;
    lay_out(reverse_registration);
    for (std::size_t i = 0; i < params_.size(); ++i)
      params_[i].hook = params_[i].accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i));
    reset();
  }
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;
  ~GradientBuckets() {
    for (auto& p : params_) p.accumulator->del_post_hook(p.hook);
  }

  // Takes each parameter's gradient accumulator anew, so that it belongs to the current stream:
  // autograd runs an accumulator on the stream it was made on, and a CUDA graph is captured on a
  // stream of its own (acc::capture_step calls this there). An accumulator that something else
  // still holds (the graph of a loss kept from an earlier step) stays the one it was.
  void rebind_accumulators() {
    for (auto& p : params_) {
      p.accumulator->del_post_hook(p.hook);
      p.accumulator.reset();
      p.accumulator = torch::autograd::impl::grad_accumulator(p.tensor);
      p.hook = p.accumulator->add_post_hook(
          std::make_unique<ReadyHook>(this, static_cast<std::size_t>(&p - params_.data())));
    }
  }

  // Local accumulation only (no_sync): the hooks leave the gradients alone.
  void set_enabled(bool enabled) { enabled_ = enabled; }

  // Before backward: with find_unused_parameters, parameters the loss does not reach are ready now
  // (with static_graph, those the first step found).
  void prepare_for_backward(const at::Tensor& loss) {
    if (!enabled_) return;
    if (options_.static_graph() && counts_known_) {
      for (const auto i : unused_) on_gradient(i);
      return;
    }
    if (!options_.find_unused_parameters() || !loss.grad_fn()) return;
    std::unordered_set<const torch::autograd::Node*> reached;
    std::vector<torch::autograd::Node*> stack{loss.grad_fn().get()};
    while (!stack.empty()) {
      auto* node = stack.back();
      stack.pop_back();
      if (!reached.insert(node).second) continue;
      for (const auto& edge : node->next_edges())
        if (edge.function) stack.push_back(edge.function.get());
    }
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!reached.count(params_[i].accumulator.get())) {
        if (options_.static_graph()) unused_.push_back(i);
        on_gradient(i);
      }
  }

  // After backward: waits for every bucket (the caller's stream waits, on a GPU), so that the
  // gradients are averaged. A parameter that got no gradient is an error that names it.
  void finish() {
    if (!enabled_ || !dirty_) return;
    if (options_.static_graph() && !counts_known_) {  // the first step: every gradient is in now
      counts_known_ = true;
      for (auto& p : params_) p.expected = p.arrivals;
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (params_[i].expected > 0) mark_ready(i);
    }
    if (next_launch_ < buckets_.size()) {
      std::string missing;
      for (auto p = params_.rbegin(); p != params_.rend(); ++p)  // in registration order
        if (!p->ready) missing += (missing.empty() ? "'" : ", '") + p->name + "'";
      for (auto& bucket : buckets_)  // the buckets that did start finish on every rank
        if (bucket.work) bucket.work->wait();
      reset();
      throw Error("rank " + std::to_string(comm_.rank()) +
                  ": these parameters got no gradient in this step: " + missing +
                  ". DDP needs every parameter in every step; if some are unused on purpose, prepare with "
                  "AcceleratorOptions().ddp(DDPOptions().find_unused_parameters(true)), or set requires_grad(false)");
    }
    for (auto& bucket : buckets_)
      if (bucket.work) bucket.work->wait();
    ++steps_done_;
    if (!laid_out_by_arrival_) lay_out_by_arrival();
    reset();
  }

  // The collectives of one synchronizing step, in the same order, on zeros (the share of a
  // process that has no batch left; see DDP::average_zero_gradients). The buckets themselves are
  // zeroed, not copies made: a hook that keeps views of a bucket's buffer (PowerSGD's matrices)
  // would send the buffer's last gradients instead of a copy's zeros.
  void average_zeros() {
    if (comm_.world_size() == 1) return;
    for (auto& bucket : buckets_) {
      bucket.grad.buffer.zero_();
      bucket.grad.step = steps_done_ + 1;
      call_hook(hook_, comm_, bucket.grad).wait();
      ++collectives_started_;
    }
    ++steps_done_;
    if (!laid_out_by_arrival_) lay_out_by_arrival();  // rank 0's order, as the training ranks get it
  }

  // Drops the gradients. The next backward then hands each parameter a fresh gradient, which its
  // hook copies into the bucket: one copy per element, where zeroing the bucket and letting
  // autograd add into it would cost a fill and an addition.
  void zero_grad() {
    for (auto& p : params_) p.tensor.mutable_grad().reset();
  }

  std::size_t bucket_count() const { return buckets_.size(); }
  // The parameters' names, bucket by bucket (in the order the buckets start).
  std::vector<std::vector<std::string>> bucket_parameters() const {
    std::vector<std::vector<std::string>> names;
    for (const auto& bucket : buckets_) {
      auto& of_bucket = names.emplace_back();
      for (const auto member : bucket.members) of_bucket.push_back(params_[member].name);
    }
    return names;
  }
  // Number of buckets handed to the hook so far (each bucket of each synchronized step).
  int64_t collectives_started() const { return collectives_started_; }

 private:
  struct Bucket {
    Bucket(c10::ScalarType dtype, c10::Device device) : dtype(dtype), device(device) {}
    c10::ScalarType dtype;
    c10::Device device;
    std::vector<std::size_t> members;
    int64_t numel = 0;
    std::size_t bytes = 0;
    GradBucket grad;  // what the hook is given: the flat buffer and its gradients' views
    std::size_t pending = 0;
    std::optional<decltype(call_hook(std::declval<Hook&>(), std::declval<Comm&>(), std::declval<GradBucket&>()))> work;
  };
  struct Param {
    std::string name;
    at::Tensor tensor;
    std::shared_ptr<torch::autograd::Node> accumulator;  // the tensor holds it only weakly
    std::size_t bucket = 0;
    int64_t offset = 0;
    uintptr_t hook = 0;
    bool ready = false;
    int arrivals = 0;  // gradients accumulated in this step
    int expected = 0;  // with static_graph: the first step's arrivals
  };

  // Fills buckets with the parameters in `order` (indices into params_; the first bucket small),
  // gives each a new index, and moves every gradient into its new place. The new buckets wait for
  // all their members, whoever calls this.
  void lay_out(const std::vector<std::size_t>& order) {
    constexpr double kMiB = 1024.0 * 1024.0;
    buckets_.clear();
    for (const auto i : order) {
      auto& p = params_[i];
      const double cap = (buckets_.size() <= 1 ? options_.first_bucket_cap_mb() : options_.bucket_cap_mb()) * kMiB;
      const bool fits = !buckets_.empty() && buckets_.back().dtype == p.tensor.scalar_type() &&
                        buckets_.back().device == p.tensor.device() && options_.bucket_cap_mb() > 0 &&
                        static_cast<double>(buckets_.back().bytes + p.tensor.nbytes()) <= cap;
      if (!fits) buckets_.emplace_back(p.tensor.scalar_type(), p.tensor.device());
      auto& bucket = buckets_.back();
      p.bucket = buckets_.size() - 1;
      p.offset = bucket.numel;
      bucket.members.push_back(i);
      bucket.numel += p.tensor.numel();
      bucket.bytes += p.tensor.nbytes();
    }
    for (auto& bucket : buckets_) {
      bucket.pending = bucket.members.size();  // a new bucket waits for all its members
      bucket.grad.index = (*next_index_)++;
      bucket.grad.buffer = at::zeros({bucket.numel}, at::TensorOptions(bucket.device).dtype(bucket.dtype));
      for (const auto member : bucket.members) bucket.grad.gradients.push_back(view_of(params_[member]));
    }
    for (auto& p : params_) attach_view(p);
  }

  // Once, after the first synchronized step: the layout of the order in which rank 0's gradients
  // arrived (a collective), unless that is the layout already or rank 0 saw no whole step.
  void lay_out_by_arrival() {
    laid_out_by_arrival_ = true;
    const auto n = static_cast<int64_t>(params_.size());
    std::vector<int64_t> values(params_.size(), -1);
    for (std::size_t k = 0; k < arrival_.size() && k < values.size(); ++k)
      values[k] = static_cast<int64_t>(arrival_[k]);
    at::Tensor shared = at::from_blob(values.data(), {n}, at::TensorOptions(at::kLong)).to(buckets_.front().device);
    comm_.broadcast(shared, 0);
    const at::Tensor order = shared.to(at::kCPU).contiguous();
    std::vector<std::size_t> arrived;
    std::vector<bool> seen(params_.size(), false);
    for (int64_t k = 0; k < n; ++k) {
      const auto i = order.data_ptr<int64_t>()[k];
      if (i < 0 || i >= n || seen[static_cast<std::size_t>(i)]) return;  // not a whole step's order
      seen[static_cast<std::size_t>(i)] = true;
      arrived.push_back(static_cast<std::size_t>(i));
    }
    std::vector<std::size_t> current;
    for (const auto& bucket : buckets_) current.insert(current.end(), bucket.members.begin(), bucket.members.end());
    if (arrived != current) lay_out(arrived);
  }

  struct ReadyHook : torch::autograd::FunctionPostHook {
    ReadyHook(GradientBuckets* owner, std::size_t index) : owner(owner), index(index) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list& /*inputs*/) override {
      if (owner->enabled_) owner->on_gradient(index);
      return outputs;
    }
    GradientBuckets* owner;
    std::size_t index;
  };

  static at::Tensor view_in(const at::Tensor& buffer, const Param& p) {
    return buffer.narrow(0, p.offset, p.tensor.numel()).view(p.tensor.sizes());
  }
  at::Tensor view_of(const Param& p) const { return view_in(buckets_[p.bucket].grad.buffer, p); }

  // Makes the parameter's .grad the view into its bucket, holding the gradient it has (zero if
  // it has none).
  void attach_view(Param& p) {
    const auto view = view_of(p);
    const auto& grad = p.tensor.grad();
    if (grad.defined() && grad.data_ptr() == view.data_ptr()) return;
    if (grad.defined())
      view.copy_(grad);
    else
      view.zero_();
    p.tensor.mutable_grad() = view;
  }

  // A gradient of parameter `index` has been accumulated (or it is unused in this step).
  void on_gradient(std::size_t index) {
    auto& p = params_[index];
    if (!laid_out_by_arrival_ && p.arrivals == 0) arrival_.push_back(index);
    ++p.arrivals;
    if (!options_.static_graph()) return mark_ready(index);
    dirty_ = true;
    attach_view(p);                                         // the bucket holds the sum so far
    if (!counts_known_ || p.arrivals < p.expected) return;  // the first step launches in finish()
    if (p.arrivals > p.expected)
      throw Error("parameter '" + p.name + "' received its gradient " + std::to_string(p.arrivals) +
                  " times in this step, " + std::to_string(p.expected) +
                  " times in the first one: with DDPOptions().static_graph(true) every step must use the parameters "
                  "as the first did; turn static_graph off for a model whose graph changes");
    mark_ready(index);
  }

  void mark_ready(std::size_t index) {
    auto& p = params_[index];
    if (p.ready)
      throw Error("parameter '" + p.name +
                  "' received its gradient twice in one step; call backward once per step, or inside "
                  "accelerator.no_sync()/accumulate() for the steps that only accumulate. A module used twice under "
                  "acc::checkpoint (a reentrant backward) does this: prepare with "
                  "AcceleratorOptions().ddp(DDPOptions().static_graph(true)) if every step uses it alike");
    p.ready = true;
    dirty_ = true;
    attach_view(p);  // the fresh gradient of this step goes into the bucket
    auto& bucket = buckets_[p.bucket];
    if (--bucket.pending > 0) return;
    while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
      auto& ready = buckets_[next_launch_++];
      if (comm_.world_size() == 1) continue;  // alone, the local gradient is the average
      ready.grad.step = steps_done_ + 1;
      ready.work.emplace(call_hook(hook_, comm_, ready.grad));
      ++collectives_started_;
    }
  }

  void reset() {
    for (auto& bucket : buckets_) {
      bucket.pending = bucket.members.size();
      bucket.work.reset();
    }
    for (auto& p : params_) {
      p.ready = false;
      p.arrivals = 0;
    }
    arrival_.clear();
    next_launch_ = 0;
    dirty_ = false;
  }

  Comm& comm_;
  Hook& hook_;
  DDPOptions options_;
  std::size_t own_next_index_ = 0;
  std::size_t* next_index_;
  bool laid_out_by_arrival_;
  std::vector<std::size_t> arrival_;  // params_ indices, in the order their gradients arrived
  bool enabled_ = true;
  bool dirty_ = false;
  bool counts_known_ = false;        // static_graph: after the first synchronized step
  std::vector<std::size_t> unused_;  // static_graph: what the first step's search found unused
  std::size_t next_launch_ = 0;
  int64_t collectives_started_ = 0;
  int64_t steps_done_ = 0;  // synchronized steps completed, which the next one's buckets carry plus one
  std::vector<Bucket> buckets_;
  std::vector<Param> params_;
};

}  // namespace acc::detail

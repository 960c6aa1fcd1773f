// What a communicator (Gloo, Nccl) keeps of its collectives: each gets a sequence number, and a
// failed or timed-out one becomes an acc::Error that names the rank, the collective, its number,
// its tensor and the fix. In debug mode, every rank also compares each collective with the
// others' before running it.
//
// Debug mode compares through the job's c10d store (a key per sequence number and rank) rather
// than an all-gather of a descriptor on the communicator itself: the store is host-side (no device
// copy or stream sync under NCCL), its waits have a deadline of their own, a rank that never
// arrives is named instead of hanging the comparison, and a mismatch is found before the
// mismatched collective is started, so the communicator stays usable. Off, it costs one branch.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/detail/linkage.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/SmallVector.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace acc::detail {

// One collective call, kept as messages name it ("all_reduce(sum) Float[4, 3]"): its dtype and
// shape are copied (no heap allocation up to 6 dimensions), not the tensor, whose memory stays
// the caller's to free.
struct Collective {
  explicit Collective(std::string_view name, const at::Tensor& tensor = {}, std::optional<ReduceOp> op = std::nullopt,
                      int root = -1)
      : name(name), op(op), root(root) {
    if (!tensor.defined()) return;
    dtype = tensor.scalar_type();
    shape.assign(tensor.sizes().begin(), tensor.sizes().end());
  }

  std::string describe() const;

  std::string_view name;
  std::optional<ReduceOp> op;
  int root;                              // broadcast's source rank, else -1
  std::optional<c10::ScalarType> dtype;  // of its input; none for a barrier
  c10::SmallVector<int64_t, 6> shape;
};

class CollectiveLedger {
 public:
  // `store` is the communicator's own key space (detail::communicator_store).
  CollectiveLedger(RankGroup group, const ProcessGroupOptions& options, c10::intrusive_ptr<c10d::Store> store)
      : group_(std::move(group)), options_(options), store_(std::move(store)) {}

  // Numbers the collective about to start (and, in debug mode, compares it across ranks).
  uint64_t begin(const Collective& collective) {
    const uint64_t sequence = ++started_;
    if (options_.debug()) compare_across_ranks(sequence, collective);
    return sequence;
  }

  // Collectives started so far; the next one gets this number + 1.
  uint64_t started() const { return started_; }
  std::chrono::milliseconds timeout() const { return options_.timeout(); }

  // The message for collective #sequence, which did not complete within the timeout or failed
  // with `cause` after `waited`.
  std::string failure(uint64_t sequence, const Collective& collective, std::chrono::steady_clock::duration waited,
                      const std::string& cause) const;

 private:
  std::string who() const { return group_.who(); }
  static std::string seconds(std::chrono::steady_clock::duration d);
  std::string key(uint64_t sequence, int rank) const;
  void compare_across_ranks(uint64_t sequence, const Collective& collective);

  RankGroup group_;
  ProcessGroupOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  uint64_t started_ = 0;
};

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/comm/impl/collective_ledger.ipp>
#endif

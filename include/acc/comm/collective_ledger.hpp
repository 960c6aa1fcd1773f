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
#include <acc/error.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/SmallVector.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace acc::detail {

inline std::string_view reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::mean:
      return "mean";
    case ReduceOp::max:
      return "max";
    case ReduceOp::min:
      return "min";
    default:
      return "sum";
  }
}

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

  std::string describe() const {
    std::string text(name);
    text += "(";
    if (op) text += reduce_op_name(*op);
    if (root >= 0) text += "root " + std::to_string(root);
    text += ")";
    if (!dtype) return text;
    text += std::string(" ") + c10::toString(*dtype) + "[";
    for (std::size_t d = 0; d < shape.size(); ++d) text += (d ? ", " : "") + std::to_string(shape[d]);
    return text + "]";
  }

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
                      const std::string& cause) const {
    const bool timed_out = waited >= options_.timeout();
    std::string message =
        who() + ": collective #" + std::to_string(sequence) + " " + collective.describe() +
        (timed_out ? " did not complete within " + seconds(options_.timeout()) : " failed after " + seconds(waited)) +
        (cause.empty() ? "" : " (" + cause + ")") + ". ";
    const std::string peers =
        "the other ranks' logs: one of them died or stopped calling collectives (run with debug: true or "
        "ACCELERATE_DEBUG_MODE=1 to compare every collective across ranks)";
    if (!timed_out) return message + "Check " + peers;
    return message +
           "If the ranks are only slow (a long evaluation or save on one rank), raise the timeout: "
           "ACC_COLLECTIVE_TIMEOUT=<seconds>, acc.collective_timeout in the config file, or "
           "AcceleratorOptions().process_group(ProcessGroupOptions().timeout(...)); otherwise check " +
           peers;
  }

 private:
  std::string who() const { return group_.who(); }
  static std::string seconds(std::chrono::steady_clock::duration d) {
    const double s = std::chrono::duration<double>(d).count();
    char text[32];
    std::snprintf(text, sizeof(text), s == std::floor(s) ? "%.0f s" : "%.1f s", s);
    return text;
  }
  std::string key(uint64_t sequence, int rank) const {
    return "acc/debug/" + std::to_string(sequence) + "/" + std::to_string(rank);
  }

  void compare_across_ranks(uint64_t sequence, const Collective& collective) {
    const auto mine = collective.describe();
    store_->set(key(sequence, group_.rank()), std::vector<uint8_t>(mine.begin(), mine.end()));
    std::vector<std::string> keys;
    for (int r = 0; r < group_.size(); ++r) keys.push_back(key(sequence, r));
    try {
      store_->wait(keys, options_.timeout());
    } catch (const std::exception&) {
      std::string missing;
      for (int r = 0; r < group_.size(); ++r)
        if (!store_->check({keys[static_cast<std::size_t>(r)]}))
          missing += (missing.empty() ? "" : ", ") + std::to_string(group_.global_rank_of(r));
      throw Error("debug mode: " + who() + " is at collective #" + std::to_string(sequence) + " " + mine +
                  " but rank(s) " + missing + " did not get there within " + seconds(options_.timeout()) +
                  "; they died, hang, or called fewer collectives: check their logs");
    }
    std::string report;
    bool differ = false;
    for (int r = 0; r < group_.size(); ++r) {
      const auto bytes = store_->get(keys[static_cast<std::size_t>(r)]);
      const std::string theirs(bytes.begin(), bytes.end());
      differ = differ || theirs != mine;
      report += "\n  rank " + std::to_string(group_.global_rank_of(r)) + ": " + theirs;
    }
    if (differ)
      throw Error("debug mode: " + who() + ": collective #" + std::to_string(sequence) +
                  " is not the same on every rank:" + report +
                  "\nEvery rank must call the same collectives in the same order, with tensors of the same dtype and "
                  "shape; look for a collective under a condition that depends on the rank or on the data");
    // Every rank has published #sequence, so all have read #sequence - 1: this rank's key for it
    // is no longer needed.
    if (sequence > 1) store_->deleteKey(key(sequence - 1, group_.rank()));
  }

  RankGroup group_;
  ProcessGroupOptions options_;
  c10::intrusive_ptr<c10d::Store> store_;
  uint64_t started_ = 0;
};

}  // namespace acc::detail

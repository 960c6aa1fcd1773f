#pragma once

#include <acc/comm/collective_ledger.hpp>
#include <acc/error.hpp>

#include <cmath>
#include <cstdio>
#include <string>
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

ACC_DECL std::string Collective::describe() const {
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

ACC_DECL std::string CollectiveLedger::failure(uint64_t sequence, const Collective& collective,
                                               std::chrono::steady_clock::duration waited,
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

ACC_DECL std::string CollectiveLedger::seconds(std::chrono::steady_clock::duration d) {
  const double s = std::chrono::duration<double>(d).count();
  char text[32];
  std::snprintf(text, sizeof(text), s == std::floor(s) ? "%.0f s" : "%.1f s", s);
  return text;
}
ACC_DECL std::string CollectiveLedger::key(uint64_t sequence, int rank) const {
  return "acc/debug/" + std::to_string(sequence) + "/" + std::to_string(rank);
}

ACC_DECL void CollectiveLedger::compare_across_ranks(uint64_t sequence, const Collective& collective) {
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

}  // namespace acc::detail

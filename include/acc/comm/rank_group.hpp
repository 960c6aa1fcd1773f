// A group of the job's ranks that communicate among themselves, as one of its members sees it.
// The world is the group of every rank; a sub-group (one replica of hybrid sharding, one stage,
// one tensor-parallel slice) is any subset. A communicator built over a group (Gloo, Nccl) numbers
// its ranks 0 .. size()-1 in the order of ranks(), and speaks in those numbers (rank(),
// world_size(), a broadcast's root); its messages name the global rank.
#pragma once

#include <acc/error.hpp>

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace acc {

class RankGroup {
 public:
  // Every rank of a job of `world_size` processes, seen from `global_rank`.
  static RankGroup world(int world_size, int global_rank) {
    std::vector<int> ranks(static_cast<std::size_t>(world_size));
    for (int r = 0; r < world_size; ++r) ranks[static_cast<std::size_t>(r)] = r;
    return RankGroup(std::move(ranks), global_rank, world_size);
  }

  // The global ranks `ranks` (each once, all below `world_size`), seen from `global_rank`, which
  // must be one of them: only the members build a communicator over a group.
  RankGroup(std::vector<int> ranks, int global_rank, int world_size)
      : ranks_(std::move(ranks)), global_rank_(global_rank), world_size_(world_size) {
    if (ranks_.empty()) throw Error("a rank group needs at least one rank");
    auto sorted = ranks_;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end() || sorted.front() < 0 ||
        sorted.back() >= world_size_)
      throw Error("the rank group " + describe() + " must name each rank once, each from 0 to " +
                  std::to_string(world_size_ - 1) + " (the job's world size is " + std::to_string(world_size_) + ")");
    const auto position = std::find(ranks_.begin(), ranks_.end(), global_rank_);
    if (position == ranks_.end())
      throw Error("rank " + std::to_string(global_rank_) + " is not in the rank group " + describe() +
                  ": only the group's members build a communicator over it");
    rank_ = static_cast<int>(position - ranks_.begin());
  }

  int rank() const { return rank_; }  // this process's number in the group
  int size() const { return static_cast<int>(ranks_.size()); }
  int global_rank() const { return global_rank_; }
  int global_rank_of(int rank_in_group) const { return ranks_.at(static_cast<std::size_t>(rank_in_group)); }
  int world_size() const { return world_size_; }
  bool is_world() const { return size() == world_size_; }
  const std::vector<int>& ranks() const { return ranks_; }

  // "[2, 3]", as messages name the group.
  std::string describe() const {
    std::string text = "[";
    for (std::size_t i = 0; i < ranks_.size(); ++i) text += (i ? ", " : "") + std::to_string(ranks_[i]);
    return text + "]";
  }

  // Who this process is, in messages: "rank 2 of 4", and its number in a sub-group.
  std::string who() const {
    std::string text = "rank " + std::to_string(global_rank_) + " of " + std::to_string(world_size_);
    if (!is_world()) text += " (rank " + std::to_string(rank_) + " of the group " + describe() + ")";
    return text;
  }

 private:
  std::vector<int> ranks_;
  int global_rank_;
  int world_size_;
  int rank_ = 0;
};

namespace detail {

// The key space of one communicator in the job's store: "acc/comm/<group>/<n>", where n counts
// the communicators this process built over the same ranks before. Every member builds its
// communicators over a group in the same order, so the members of one agree on n, and two
// communicators never share keys (their NCCL ids, Gloo addresses and debug-mode records).
inline c10::intrusive_ptr<c10d::Store> communicator_store(const c10::intrusive_ptr<c10d::Store>& store,
                                                          const RankGroup& group) {
  // FNV-1a of the rank list: short keys for groups of any size.
  uint64_t hash = 14695981039346656037ull;
  for (const int r : group.ranks()) {
    hash ^= static_cast<uint64_t>(r) + 1;
    hash *= 1099511628211ull;
  }
  char name[40];
  std::snprintf(name, sizeof(name), "%d-%016llx", group.size(), static_cast<unsigned long long>(hash));
  static std::mutex mutex;
  static std::map<std::string, int> built;
  int n = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    n = built[name]++;
  }
  return c10::make_intrusive<c10d::PrefixStore>("acc/comm/" + std::string(name) + "/" + std::to_string(n), store);
}

}  // namespace detail

}  // namespace acc

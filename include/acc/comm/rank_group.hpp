// A group of the job's ranks that communicate among themselves, as one of its members sees it.
// The world is the group of every rank; a sub-group (one replica of hybrid sharding, one stage,
// one tensor-parallel slice) is any subset. A communicator built over a group (Gloo, Nccl) numbers
// its ranks 0 .. size()-1 in the order of ranks(), and speaks in those numbers (rank(),
// world_size(), a broadcast's root); its messages name the global rank.
#pragma once

#include <acc/detail/linkage.hpp>

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <string>
#include <vector>

namespace acc {

class RankGroup {
 public:
  // Every rank of a job of `world_size` processes, seen from `global_rank`.
  static RankGroup world(int world_size, int global_rank);

  // The global ranks `ranks` (each once, all below `world_size`), seen from `global_rank`, which
  // must be one of them: only the members build a communicator over a group.
  RankGroup(std::vector<int> ranks, int global_rank, int world_size);

  int rank() const { return rank_; }  // this process's number in the group
  int size() const { return static_cast<int>(ranks_.size()); }
  int global_rank() const { return global_rank_; }
  int global_rank_of(int rank_in_group) const { return ranks_.at(static_cast<std::size_t>(rank_in_group)); }
  int world_size() const { return world_size_; }
  bool is_world() const { return size() == world_size_; }
  const std::vector<int>& ranks() const { return ranks_; }

  // "[2, 3]", as messages name the group.
  std::string describe() const;
  // Who this process is, in messages: "rank 2 of 4", and its number in a sub-group.
  std::string who() const;

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
ACC_DECL c10::intrusive_ptr<c10d::Store> communicator_store(const c10::intrusive_ptr<c10d::Store>& store,
                                                            const RankGroup& group);

}  // namespace detail

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/comm/impl/rank_group.ipp>
#endif

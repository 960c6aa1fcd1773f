#pragma once

#include <acc/comm/rank_group.hpp>
#include <acc/error.hpp>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>

namespace acc {

ACC_DECL RankGroup RankGroup::world(int world_size, int global_rank) {
  std::vector<int> ranks(static_cast<std::size_t>(world_size));
  for (int r = 0; r < world_size; ++r) ranks[static_cast<std::size_t>(r)] = r;
  return RankGroup(std::move(ranks), global_rank, world_size);
}

ACC_DECL RankGroup::RankGroup(std::vector<int> ranks, int global_rank, int world_size)
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

ACC_DECL std::string RankGroup::describe() const {
  std::string text = "[";
  for (std::size_t i = 0; i < ranks_.size(); ++i) text += (i ? ", " : "") + std::to_string(ranks_[i]);
  return text + "]";
}

ACC_DECL std::string RankGroup::who() const {
  std::string text = "rank " + std::to_string(global_rank_) + " of " + std::to_string(world_size_);
  if (!is_world()) text += " (rank " + std::to_string(rank_) + " of the group " + describe() + ")";
  return text;
}

namespace detail {

ACC_DECL c10::intrusive_ptr<c10d::Store> communicator_store(const c10::intrusive_ptr<c10d::Store>& store,
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

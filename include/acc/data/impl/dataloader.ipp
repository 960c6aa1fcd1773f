// The bodies of data/dataloader.hpp's non-template functions.
#pragma once

#include <acc/data/dataloader.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/chunk.hpp>
#include <range/v3/view/cycle.hpp>
#include <range/v3/view/drop.hpp>
#include <range/v3/view/stride.hpp>
#include <range/v3/view/take.hpp>

namespace acc::detail {

ACC_DECL BatchPlan plan_batches(const std::vector<int64_t>& order, const DataLoaderOptions& options,
                                const Sharding& shard) {
  namespace views = ranges::views;
  using Batches = std::vector<std::vector<int64_t>>;
  const int64_t batch_size = options.batch_size();
  const int64_t world = shard.world_size;
  if (batch_size < 1)
    throw Error("DataLoaderOptions::batch_size is " + std::to_string(batch_size) + "; it must be at least 1");
  if (shard.split_batches && batch_size % world != 0)
    throw Error("split_batches needs a batch_size divisible by the number of processes, but batch_size is " +
                std::to_string(batch_size) + " and there are " + std::to_string(world) +
                " processes; choose a multiple of " + std::to_string(world) + " or turn split_batches off");
  if (order.empty()) return {};

  auto batches = order | views::chunk(batch_size) | ranges::to<Batches>();
  int64_t duplicates = 0;
  const bool last_is_partial = static_cast<int64_t>(batches.back().size()) < batch_size;
  if (options.drop_last() && last_is_partial) batches.pop_back();

  const int64_t rounds_of = shard.split_batches ? 1 : world;
  if (options.drop_last()) {
    // Only whole rounds, whatever even_batches says (as Accelerate's BatchSamplerShard): a
    // process with a batch more would wait in its backward for processes that have none.
    batches.resize(batches.size() / static_cast<std::size_t>(rounds_of) * static_cast<std::size_t>(rounds_of));
  } else if (shard.even_batches && world > 1) {
    // Complete the last batch, then add batches until every process has the same number, all
    // taken from the start of this epoch's order, cycled (Accelerate's even_batches). A single
    // process keeps its partial last batch, as an unsharded loader does.
    auto refill = order | views::cycle;
    auto next = ranges::begin(refill);
    if (last_is_partial)
      while (static_cast<int64_t>(batches.back().size()) < batch_size) {
        batches.back().push_back(*next++);
        ++duplicates;
      }
    while (static_cast<int64_t>(batches.size()) % rounds_of != 0) {
      std::vector<int64_t> extra;
      for (int64_t i = 0; i < batch_size; ++i) extra.push_back(*next++);
      batches.push_back(std::move(extra));
      duplicates += batch_size;
    }
  }

  if (!shard.split_batches)
    return {batches | views::drop(shard.rank) | views::stride(world) | ranges::to<Batches>(), duplicates};

  Batches mine;
  const int64_t share = batch_size / world;
  for (const auto& batch : batches) {
    const auto [begin, end] = slice_of_round(static_cast<int64_t>(batch.size()), share, shard.rank);
    if (begin < end) mine.emplace_back(batch.begin() + begin, batch.begin() + end);
  }
  return {std::move(mine), duplicates};
}

}  // namespace acc::detail

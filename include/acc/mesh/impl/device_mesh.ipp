// Bodies of include/acc/mesh/device_mesh.hpp.
#pragma once

#include <acc/error.hpp>
#include <acc/mesh/device_mesh.hpp>

#include <string>

namespace acc {

ACC_DECL std::string_view name_of(MeshDim dim) {
  switch (dim) {
    case MeshDim::dp_replicate:
      return "dp_replicate";
    case MeshDim::dp_shard:
      return "dp_shard";
    case MeshDim::tp:
      return "tp";
  }
  return "?";
}

namespace detail {
inline const std::string mesh_keys =
    "(parallelism_config_dp_replicate_size, parallelism_config_dp_shard_size, parallelism_config_tp_size)";
}  // namespace detail

ACC_DECL MeshShape MeshShape::from_config(const Config& config, int world_size) {
  MeshShape shape;
  shape.dp_replicate = config.dp_replicate_size.value_or(1);
  shape.tp = config.tp_size;
  const int others = shape.dp_replicate * shape.tp;
  if (config.dp_shard_size)
    shape.dp_shard = *config.dp_shard_size;
  else if (others > 0 && world_size % others == 0)
    shape.dp_shard = world_size / others;
  else
    throw Error("the device mesh's dp_replicate " + std::to_string(shape.dp_replicate) + " x tp " +
                std::to_string(shape.tp) + " does not divide the " + std::to_string(world_size) + " processes " +
                detail::mesh_keys + "; make their product divide the number of processes");
  shape.check(world_size);
  return shape;
}

ACC_DECL std::string MeshShape::describe() const {
  return "dp_replicate " + std::to_string(dp_replicate) + " x dp_shard " + std::to_string(dp_shard) + " x tp " +
         std::to_string(tp);
}

ACC_DECL void MeshShape::check(int world_size) const {
  for (const MeshDim dim : mesh_dims)
    if (size(dim) < 1)
      throw Error("the device mesh's " + std::string(name_of(dim)) + " size is " + std::to_string(size(dim)) + " (" +
                  describe() + ") " + detail::mesh_keys + "; every size must be at least 1");
  if (ranks() != world_size)
    throw Error("the device mesh " + describe() + " has " + std::to_string(ranks()) + " ranks, but the job has " +
                std::to_string(world_size) + " processes " + detail::mesh_keys +
                "; make the product of the sizes the number of processes");
}

ACC_DECL int64_t data_parallel_size(int64_t tp, int64_t world_size, std::string_view setting) {
  if (tp < 1 || world_size % tp != 0)
    throw Error("tensor parallelism splits layers over groups of " + std::to_string(tp) +
                " ranks, which does not divide the " + std::to_string(world_size) +
                " processes (parallelism_config_tp_size, " + std::string(setting) +
                "); give a tensor-parallel size that divides the number of processes");
  return world_size / tp;
}

ACC_DECL std::vector<int> mesh_group_ranks(const MeshShape& shape, int global_rank, std::optional<MeshDim> dim) {
  const int tp = global_rank % shape.tp;
  const int shard = global_rank / shape.tp % shape.dp_shard;
  const int replica = global_rank / (shape.tp * shape.dp_shard);
  const auto rank_at = [&](int r, int s, int t) { return (r * shape.dp_shard + s) * shape.tp + t; };
  std::vector<int> ranks;
  if (!dim) {
    for (int r = 0; r < shape.dp_replicate; ++r)
      for (int s = 0; s < shape.dp_shard; ++s) ranks.push_back(rank_at(r, s, tp));
    return ranks;
  }
  for (int i = 0; i < shape.size(*dim); ++i)
    ranks.push_back(*dim == MeshDim::dp_replicate ? rank_at(i, shard, tp)
                    : *dim == MeshDim::dp_shard   ? rank_at(replica, i, tp)
                                                  : rank_at(replica, shard, i));
  return ranks;
}

}  // namespace acc

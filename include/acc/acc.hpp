// Everything a training program needs from accelerate-cpp.
//
// The layers of include/acc, bottom up. A folder (with its impl/) or a top-level header includes
// only what is in its own layer or below, and no two folders include each other; files of one
// folder may include each other. tests/cmake/layering.cmake reads this list and checks the includes.
//   1 error.hpp version.hpp
//   2 detail/
//   3 config/
//   4 comm/
//   5 mesh/ nn/ fp8/ precision/ data/ ops/ tracking/ optim/ memory/ profiling/ activation_checkpointing/ big_modeling/
//   6 strategy/ fsdp/ tp/
//   7 prepared/ checkpoint/ dispatch/
//   8 accelerator_options.hpp accelerator_base.hpp accelerator.hpp
//   9 prebuilt.hpp run.hpp local_sgd/ join/ cuda_graph/
//   10 acc.hpp
#pragma once

#include <acc/accelerator.hpp>
#include <acc/activation_checkpointing/checkpoint.hpp>
#include <acc/big_modeling/init_empty_weights.hpp>
#include <acc/big_modeling/materialize.hpp>
#include <acc/checkpoint/load_checkpoint_in_model.hpp>
#include <acc/checkpoint/model_files.hpp>
#include <acc/checkpoint/tp_sharded_state.hpp>
#include <acc/comm/gloo.hpp>
#include <acc/comm/local.hpp>
#include <acc/comm/nccl.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/config/config.hpp>
#include <acc/config/environment.hpp>
#include <acc/cuda_graph/capture_step.hpp>
#include <acc/data/collate.hpp>
#include <acc/data/dataloader.hpp>
#include <acc/data/sampler.hpp>
#include <acc/dispatch/available_memory.hpp>
#include <acc/dispatch/balanced_memory.hpp>
#include <acc/dispatch/dispatch_model.hpp>
#include <acc/dispatch/infer_auto_device_map.hpp>
#include <acc/dispatch/load_checkpoint_and_dispatch.hpp>
#include <acc/error.hpp>
#include <acc/fp8/convert.hpp>
#include <acc/fp8/recipe.hpp>
#include <acc/fsdp/sharding.hpp>
#include <acc/fsdp/unit.hpp>
#include <acc/join/join_uneven_inputs.hpp>
#include <acc/local_sgd/local_sgd.hpp>
#include <acc/memory/find_executable_batch_size.hpp>
#include <acc/memory/free_memory.hpp>
#include <acc/mesh/device_mesh.hpp>
#include <acc/nn/embedding.hpp>
#include <acc/nn/linear.hpp>
#include <acc/nn/split_layers.hpp>
#include <acc/nn/tensor_split.hpp>
#include <acc/ops/collectives.hpp>
#include <acc/ops/item.hpp>
#include <acc/optim/adamw.hpp>
#include <acc/optim/schedules.hpp>
#include <acc/precision/autocast.hpp>
#include <acc/precision/bf16.hpp>
#include <acc/precision/fp16.hpp>
#include <acc/precision/fp32.hpp>
#include <acc/precision/fp8.hpp>
#include <acc/precision/grad_scaler.hpp>
#include <acc/precision/true_half.hpp>
#include <acc/profiling/key_averages.hpp>
#include <acc/profiling/profile_options.hpp>
#include <acc/profiling/profiler.hpp>
#include <acc/run.hpp>
#include <acc/strategy/ddp.hpp>
#include <acc/strategy/fsdp.hpp>
#include <acc/strategy/power_sgd_hook.hpp>
#include <acc/strategy/single.hpp>
#include <acc/tp/cross_entropy.hpp>
#include <acc/tp/data_parallel.hpp>
#include <acc/tp/full_state.hpp>
#include <acc/tp/parallelize.hpp>
#include <acc/tp/regions.hpp>
#include <acc/tp/splits.hpp>
#include <acc/tracking/logger.hpp>
#include <acc/tracking/progress_bar.hpp>
#include <acc/tracking/trackers.hpp>
#include <acc/version.hpp>

// The compiled part of accelerate-cpp when ACC_SEPARATE_COMPILATION is defined (see
// include/acc/detail/linkage.hpp): the bodies of every non-template function, once. CMake builds it
// into acc::compiled; a build without CMake compiles this file with -DACC_SEPARATE_COMPILATION and
// defines the same macro for every translation unit of the program.
#if !defined(ACC_SEPARATE_COMPILATION)
#error \
    "src/acc.cpp is the separately compiled library: compile it, and every file that uses acc, with -DACC_SEPARATE_COMPILATION"
#endif

#include <acc/activation_checkpointing/impl/checkpoint.ipp>
#include <acc/big_modeling/impl/materialize.ipp>
#include <acc/checkpoint/impl/checkpoint_files.ipp>
#include <acc/checkpoint/impl/checkpoint_io.ipp>
#include <acc/checkpoint/impl/checkpointer.ipp>
#include <acc/checkpoint/impl/load_checkpoint_in_model.ipp>
#include <acc/checkpoint/impl/metadata.ipp>
#include <acc/checkpoint/impl/model_files.ipp>
#include <acc/checkpoint/impl/optimizer_shards.ipp>
#include <acc/checkpoint/impl/safetensors.ipp>
#include <acc/checkpoint/impl/tp_sharded_state.ipp>
#include <acc/checkpoint/impl/weight_shards.ipp>
#include <acc/comm/impl/collective_ledger.ipp>
#include <acc/comm/impl/gloo.ipp>
#include <acc/comm/impl/nccl.ipp>
#include <acc/comm/impl/rank_group.ipp>
#include <acc/comm/impl/rendezvous.ipp>
#include <acc/config/impl/config.ipp>
#include <acc/config/impl/environment.ipp>
#include <acc/cuda_graph/impl/step_graph.ipp>
#include <acc/data/impl/dataloader.ipp>
#include <acc/detail/impl/cuda_event.ipp>
#include <acc/detail/impl/mapped_file.ipp>
#include <acc/detail/impl/module_state.ipp>
#include <acc/dispatch/impl/available_memory.ipp>
#include <acc/dispatch/impl/balanced_memory.ipp>
#include <acc/dispatch/impl/device_map.ipp>
#include <acc/dispatch/impl/dispatch_model.ipp>
#include <acc/dispatch/impl/infer_auto_device_map.ipp>
#include <acc/dispatch/impl/load_checkpoint_and_dispatch.ipp>
#include <acc/dispatch/impl/memory_size.ipp>
#include <acc/dispatch/impl/module_units.ipp>
#include <acc/dispatch/impl/offloaded_weights.ipp>
#include <acc/dispatch/impl/placement.ipp>
#include <acc/fp8/impl/convert.ipp>
#include <acc/fp8/impl/scaled_linear.ipp>
#include <acc/memory/impl/free_memory.ipp>
#include <acc/mesh/impl/device_mesh.ipp>
#include <acc/nn/impl/embedding.ipp>
#include <acc/nn/impl/linear.ipp>
#include <acc/nn/impl/split_layers.ipp>
#include <acc/optim/impl/adamw.ipp>
#include <acc/optim/impl/schedules.ipp>
#include <acc/precision/impl/grad_scaler.ipp>
#include <acc/precision/impl/mixed.ipp>
#include <acc/profiling/impl/key_averages.ipp>
#include <acc/profiling/impl/profile_options.ipp>
#include <acc/profiling/impl/profiler.ipp>
#include <acc/strategy/impl/power_sgd_hook.ipp>
#include <acc/tp/impl/full_state.ipp>
#include <acc/tp/impl/parallelize.ipp>
#include <acc/tracking/impl/csv_tracker.ipp>
#include <acc/tracking/impl/jsonl_tracker.ipp>
#include <acc/tracking/impl/logger.ipp>
#include <acc/tracking/impl/progress_bar.ipp>
#include <acc/tracking/impl/run_files.ipp>
#include <acc/tracking/impl/tfrecord.ipp>
#include <acc/tracking/impl/trackers.ipp>
#include <acc/tracking/impl/value.ipp>

// The strategy halves of the default Accelerators (acc/prebuilt.hpp), instantiated here.
#define ACC_DETAIL_BUILDS_PREBUILT
#include <acc/prebuilt.hpp>

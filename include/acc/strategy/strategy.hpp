// What a strategy policy provides, and the check that says so when a type does not.
//
// A strategy is constructed once per Accelerator from its own options and owns whatever the
// distribution scheme needs (process group, gradient buckets). It provides
//   static constexpr std::string_view name;             // the YAML spelling of distributed_type
//   template <class Config> static bool matches(const Config&);  // whether acc::run picks it for an
//                                                       // acc::Config (a template: no YAML here)
//   static std::string spelling();                      // the config values it matches, as
//                                                       // acc::run lists what a program has
//   static constexpr std::string_view checkpoint_layout;  // what its checkpoints' model and optimizer
//                                                       // files hold: a checkpoint loads into any
//                                                       // strategy of the same layout
//   using options_type = std::tuple<...>;               // the option structs it takes, in the order
//   explicit S(const Parts&...);                        // of its constructor (none, DDPOptions,
//                                                       // FSDPOptions, ProcessGroupOptions)
//   c10::Device device(const ProcessEnvironment&, bool force_cpu);  // called once, after construction
//   void prepare_model(const std::shared_ptr<torch::nn::Module>&,  // again: replaces its state
//                      c10::Device);
//   void release();                                     // Accelerator::free_memory: forgets every model
//   template <class Holder, class... Args> auto forward(Holder&, Args&&...);  // the model's call
//   void backward(const at::Tensor& loss);
//   void synchronize_gradients();                       // before the optimizer step (idempotent)
//   void set_gradient_sync(bool);                       // false: accumulate locally (no_sync)
//   template <class Opt> void zero_grad(Opt&);
//   Comm& comm();                                       // the collectives (see comm/comm.hpp)
// and, for checkpoints (Accelerator::save_state/load_state/save_model/load_model), on every rank:
//   std::vector<std::pair<std::string, at::Tensor>>     // the model's parameters and buffers by
//   full_state(const torch::nn::Module&);               // qualified name, complete on the main
//                                                       // process, which writes them (a sharding
//                                                       // strategy gathers them there)
//   void load_full_state(torch::nn::Module&,            // copies a full state (every rank reads the
//       const std::map<std::string, at::Tensor>&);      // file) into the model, each rank taking
//                                                       // its share; an acc::Error names missing,
//                                                       // unexpected and misshapen keys
// Only forward knows the model's type: what a strategy does to a model otherwise is compiled once
// for every model (and, for the strategies acc/prebuilt.hpp names, once in acc::compiled).
// A sharding strategy (FSDP) also provides, and the Accelerator then calls:
//   void compute_dtype(std::optional<at::ScalarType>);  // mixed precision's dtype, at construction
//   void prepare_optimizer(torch::optim::Optimizer&);   // swaps the parameters for its shards
//   std::vector<at::Tensor> trained_parameters();       // what the optimizer steps (to unscale)
//   double clip_grad_norm_(double max_norm, double norm_type);  // the norm over all shards
//   std::vector<detail::FlatUnitLayout> sharded_layout() const;  // how each unit of
//                                                       // trained_parameters() is split (fsdp/flat_unit.hpp)
// A strategy that takes a model split by acc::tp::parallelize (DDP and FSDP beside tensor
// parallelism) also provides int tensor_parallel_size() const: the Accelerator's loaders then
// shard over the tp groups, whose ranks read the same batches, checkpoints record it and keep each
// rank's optimizer state, and gather_for_metrics takes each tp group's values once. One that does
// not shard but clips over more than the parameters it is given (DDP, whose norm then spans the
// tp group) provides
//   double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm, double norm_type);
// Optimizer state is saved from the main process's optimizer, as replicated strategies hold it (a
// sharding strategy's from every rank, dealt out again on another number: checkpoint/optimizer_shards.hpp);
// gradients saved in the middle of an accumulation cycle are each process's parameters' .grad.
// The strategies: Single (single.hpp), DDP<Comm, Hook> and CPU (ddp.hpp), FSDP<Comm, Sharding>
// (fsdp.hpp). A new one is a file of its own here plus its name in acc::run's default list.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

namespace acc {

namespace detail {
template <class S, class Parts>
struct constructible_from_parts : std::false_type {};
template <class S, class... Parts>
struct constructible_from_parts<S, std::tuple<Parts...>> : std::is_constructible<S, const Parts&...> {};

template <class S, class = void>
struct is_strategy_policy : std::false_type {};
template <class S>
struct is_strategy_policy<
    S, std::void_t<decltype(std::string_view{S::name}), decltype(std::string{S::spelling()}),
                   decltype(std::string_view{S::checkpoint_layout}), typename S::options_type,
                   decltype(std::declval<S&>().backward(std::declval<const at::Tensor&>())),
                   decltype(std::declval<S&>().synchronize_gradients()),
                   decltype(std::declval<S&>().set_gradient_sync(true)), decltype(std::declval<S&>().comm())>>
    : constructible_from_parts<S, typename S::options_type> {};
}  // namespace detail

template <class S>
inline constexpr bool is_strategy_policy_v = detail::is_strategy_policy<S>::value;

namespace detail {
// Whether a strategy shards the model (and so has the members listed above for it).
template <class S, class = void>
struct shards_model : std::false_type {};
template <class S>
struct shards_model<S, std::void_t<decltype(std::declval<S&>().trained_parameters())>> : std::true_type {};
}  // namespace detail
template <class S>
inline constexpr bool shards_model_v = detail::shards_model<S>::value;

namespace detail {
template <class S, class = void>
struct has_tensor_parallel_size : std::false_type {};
template <class S>
struct has_tensor_parallel_size<S, std::void_t<decltype(std::declval<const S&>().tensor_parallel_size())>>
    : std::true_type {};

// The ranks of one tensor-parallel group, consecutive ranks that hold different slices of the model
// and read the same batches: the strategy's tensor_parallel_size() where it has one, else 1.
template <class S>
int tensor_parallel_size(const S& strategy) {
  if constexpr (has_tensor_parallel_size<S>::value)
    return strategy.tensor_parallel_size();
  else
    return 1;
}

template <class S, class = void>
struct clips_parameters : std::false_type {};
template <class S>
struct clips_parameters<S, std::void_t<decltype(std::declval<S&>().clip_grad_norm_(
                               std::declval<const std::vector<at::Tensor>&>(), 1.0, 2.0))>> : std::true_type {};
}  // namespace detail

}  // namespace acc

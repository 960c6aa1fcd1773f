// acc::run: the runtime factory. A compile-time list of strategies x precisions x samplers (a
// Boost.Hana cartesian product) is walked once, and `fn` is called with the one Accelerator the
// config selects; only this call is dynamic, the training loop inside `fn` is compiled for each
// combination. Narrow the lists to cut compile time: acc::run(config, fn, acc::strategies<acc::CPU>,
// acc::precisions<acc::FP32>, acc::samplers<acc::Shuffled>).
#pragma once

#include <acc/accelerator.hpp>
#include <acc/accelerator_options.hpp>
#include <acc/config/config.hpp>
#include <acc/data/sampler.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/error.hpp>
#include <acc/prebuilt.hpp>
#include <acc/precision/bf16.hpp>
#include <acc/precision/fp16.hpp>
#include <acc/precision/fp32.hpp>
#include <acc/precision/fp8.hpp>
#include <acc/strategy/ddp.hpp>
#include <acc/strategy/fsdp.hpp>
#include <acc/strategy/single.hpp>

#include <torch/cuda.h>
#include <boost/hana/at.hpp>
#include <boost/hana/cartesian_product.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/unpack.hpp>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

namespace acc {

// Each strategy matches the config itself (Strategy::matches) and says what it matches
// (Strategy::spelling), so that the factory knows none of them in particular.
template <class... S>
constexpr auto strategies = boost::hana::tuple_t<S...>;
template <class... P>
constexpr auto precisions = boost::hana::tuple_t<P...>;
template <class... S>
constexpr auto samplers = boost::hana::tuple_t<S...>;

// The combinations a plain acc::run builds: every strategy this build has, FSDP as FULL_SHARD on
// GPUs (CMake's ACC_STRATEGIES etc. narrow them through these macros), the mixed precisions (FP8
// where the build has its kernels), both samplers.
#ifndef ACC_DEFAULT_STRATEGIES
#if ACC_HAS_GLOO && ACC_HAS_NCCL
#define ACC_DEFAULT_STRATEGIES acc::Single, acc::CPU, acc::DDP<acc::Nccl>, acc::FSDP<acc::Nccl, acc::FullShard>
#elif ACC_HAS_NCCL
#define ACC_DEFAULT_STRATEGIES acc::Single, acc::DDP<acc::Nccl>, acc::FSDP<acc::Nccl, acc::FullShard>
#elif ACC_HAS_GLOO
#define ACC_DEFAULT_STRATEGIES acc::Single, acc::CPU
#else
#define ACC_DEFAULT_STRATEGIES acc::Single
#endif
#endif
#ifndef ACC_DEFAULT_PRECISIONS
#if ACC_HAS_FP8
#define ACC_DEFAULT_PRECISIONS acc::FP32, acc::FP16, acc::BF16, acc::FP8
#else
#define ACC_DEFAULT_PRECISIONS acc::FP32, acc::FP16, acc::BF16
#endif
#endif
#ifndef ACC_DEFAULT_SAMPLERS
#define ACC_DEFAULT_SAMPLERS acc::Sequential, acc::Shuffled
#endif

namespace detail {
// One combination acc::run was built with, as the config names it: what picks it and what the
// error lists, out of the code that is compiled for each combination.
struct BuiltCombination {
  bool (*strategy_matches)(const Config&);
  std::string (*strategy_spelling)();
  std::string_view precision;
  std::string_view sampler;
};

template <class Combination>
constexpr BuiltCombination built_combination(Combination combination) {
  using Strategy = typename decltype(+boost::hana::at_c<0>(combination))::type;
  using Precision = typename decltype(+boost::hana::at_c<1>(combination))::type;
  using Sampler = typename decltype(+boost::hana::at_c<2>(combination))::type;
  // Through lambdas: a strategy's matches may be a template or take an acc::Config, and its
  // spelling may return anything a std::string is made from.
  return {+[](const Config& config) -> bool { return Strategy::matches(config); },
          +[]() -> std::string { return Strategy::spelling(); }, Precision::name, Sampler::name};
}

// The index in `built` of the combination the config names, or the error that says why there is
// none and lists the built ones. Once per program, not once per combination.
[[gnu::noinline]] inline std::size_t select_combination(const Config& config, const BuiltCombination* built,
                                                        std::size_t count) {
  for (std::size_t i = 0; i < count; ++i)
    if (built[i].strategy_matches(config) && built[i].precision == config.mixed_precision &&
        built[i].sampler == config.sampler)
      return i;
  const bool wants_cuda =
      (config.distributed_type == "MULTI_GPU" || config.distributed_type == "FSDP") && !config.use_cpu;
  if (wants_cuda && (!ACC_HAS_NCCL || !torch::cuda::is_available()))
    throw Error("distributed_type=" + config.distributed_type + " (from " + config.source +
                " and the environment) trains on CUDA devices over NCCL, but " +
                (torch::cuda::is_available() ? "this program was built without NCCL" : "there is no CUDA device here") +
                "; train on the CPU instead: acc launch --cpu (ACCELERATE_USE_CPU=true), or distributed_type: "
                "MULTI_CPU in the config");
  if (config.mixed_precision == FP8::name && !ACC_HAS_FP8)
    throw Error("mixed_precision=fp8 (from " + config.source + " and the environment) cannot run: " +
                fp8::unsupported_reason(c10::kCUDA) + "; use mixed_precision: bf16");
  std::string listed;
  for (std::size_t i = 0; i < count; ++i)
    listed += "\n  distributed_type=" + built[i].strategy_spelling() +
              " mixed_precision=" + std::string(built[i].precision) + " sampler=" + std::string(built[i].sampler);
  throw Error("this program has no Accelerator for distributed_type=" + config.distributed_type +
              (config.ddp_comm_hook == hook_name_v<AllReduceHook> ? "" : " ddp_comm_hook=" + config.ddp_comm_hook) +
              " mixed_precision=" + config.mixed_precision + " sampler=" + config.sampler + " (from " + config.source +
              " and the environment); it was built with:" + listed +
              "\nchoose one of these, or add the policies to the lists given to acc::run (ACC_STRATEGIES, "
              "ACC_PRECISIONS, ACC_SAMPLERS in CMake)");
}

// One combination's whole program, kept out of line: inlined into acc::run, the training loops of
// every combination would make one function that the optimizer takes superlinear time over.
template <class Strategy, class Precision, class Sampler, class Fn>
[[gnu::noinline]] int run_combination(const Config& config, Fn& fn) {
  Accelerator<Strategy, Precision, Sampler> accelerator(accelerator_options(config));
  if constexpr (std::is_void_v<decltype(fn(accelerator))>) {
    fn(accelerator);
    return 0;
  } else {
    return fn(accelerator);
  }
}
}  // namespace detail

// Calls fn(accelerator) with the Accelerator<Strategy, Precision, Sampler> whose names are the
// config's distributed_type, mixed_precision and acc.sampler, and returns what fn returns. A
// combination this binary was not built with is an error that lists the ones it has.
template <class Fn, class Strategies = decltype(strategies<ACC_DEFAULT_STRATEGIES>),
          class Precisions = decltype(precisions<ACC_DEFAULT_PRECISIONS>),
          class Samplers = decltype(samplers<ACC_DEFAULT_SAMPLERS>)>
int run(const Config& config, Fn&& fn, Strategies strategy_list = {}, Precisions precision_list = {},
        Samplers sampler_list = {}) {
  namespace hana = boost::hana;
  const auto combinations = hana::cartesian_product(hana::make_tuple(strategy_list, precision_list, sampler_list));
  static constexpr auto built = hana::unpack(decltype(combinations){}, [](auto... combination) {
    return std::array<detail::BuiltCombination, sizeof...(combination)>{detail::built_combination(combination)...};
  });
  const auto selected = detail::select_combination(config, built.data(), built.size());
  std::size_t index = 0;
  int result = 0;
  hana::for_each(combinations, [&](auto combination) {
    if (index++ != selected) return;
    using Strategy = typename decltype(+hana::at_c<0>(combination))::type;
    using Precision = typename decltype(+hana::at_c<1>(combination))::type;
    using Sampler = typename decltype(+hana::at_c<2>(combination))::type;
    result = detail::run_combination<Strategy, Precision, Sampler>(config, fn);
  });
  return result;
}

}  // namespace acc

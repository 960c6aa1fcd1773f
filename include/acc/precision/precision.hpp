// What a precision policy provides, and the checks that say which piece a type lacks.
//
// A precision policy is a type that brings its own behaviour; the Accelerator and the prepared
// model only call it (policies as types, in the manner of CUTLASS's dispatch policies):
//   static constexpr std::string_view name;        // the YAML spelling of mixed_precision
//   using loss_scaler = ...;                        // GradScaler, NoLossScaling or one of the same shape:
//       loss_scaler(const GradScalerOptions&, c10::Device);
//       at::Tensor scale(const at::Tensor& loss);            // what backward runs on
//       template <class Gradients> void unscale(Gradients&&);  // gradients() returns the
//                                                  // std::vector<at::Tensor> to divide by the scale
//       template <class Comm> bool skips_step(Comm&);          // inf/NaN on any rank (a collective)
//       void update();                                         // after every step, taken or skipped
//   using forward_scope = ...;                      // RAII scope the forward runs in, made from the
//                                                   // c10::Device (AutocastTo<dtype>, NoAutocast)
//   static constexpr std::optional<c10::ScalarType> compute_dtype;  // what a sharding strategy
//                                                   // gathers parameters in (nullopt: their own)
//   static void check_device(c10::Device);          // an acc::Error if it cannot run there
//   static void prepare_module(torch::nn::Module&); // at prepare, before the strategy sees the
//                                                   // module: cast it, or check its dtypes
//   A policy with options names them, and its prepare_module takes them (AcceleratorOptions
//   holds a member of that type; the Accelerator passes it):
//   using options_type = ...;                       // FP8Recipe for FP8
//   static void prepare_module(torch::nn::Module&, const options_type&);
//   template <class Arg> static decltype(auto) input(Arg&&);  // each argument of the forward
//   template <class Output> static Output output(Output);     // the forward's result
// The policies: FP32 (fp32.hpp), BF16 and FP16 (mixed.hpp), BF16True and FP16True (true_half.hpp),
// FP8 (fp8.hpp). A new one is a file of its own here plus its name in acc::run's default list.
#pragma once

#include <acc/precision/grad_scaler.hpp>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace acc {

namespace detail {
// Stand-ins for checking a scaler's unscale and skips_step.
struct NoGradients {
  std::vector<at::Tensor> operator()() const { return {}; }
};
struct AnyComm {
  void all_reduce(at::Tensor&, ReduceOp) {}
};

template <class P, class = void>
struct has_precision_name : std::false_type {};
template <class P>
struct has_precision_name<P, std::void_t<decltype(std::string_view{P::name})>> : std::true_type {};

template <class S, class = void>
struct is_loss_scaler : std::false_type {};
template <class S>
struct is_loss_scaler<S, std::void_t<decltype(S(std::declval<const GradScalerOptions&>(), std::declval<c10::Device>())),
                                     decltype(at::Tensor(std::declval<S&>().scale(std::declval<const at::Tensor&>()))),
                                     decltype(std::declval<S&>().unscale(NoGradients{})),
                                     decltype(bool(std::declval<S&>().skips_step(std::declval<AnyComm&>()))),
                                     decltype(std::declval<S&>().update())>> : std::true_type {};
template <class P, class = void>
struct has_loss_scaler : std::false_type {};
template <class P>
struct has_loss_scaler<P, std::void_t<typename P::loss_scaler>> : is_loss_scaler<typename P::loss_scaler> {};

template <class P, class = void>
struct has_forward_scope : std::false_type {};
template <class P>
struct has_forward_scope<P, std::void_t<typename P::forward_scope>>
    : std::is_constructible<typename P::forward_scope, c10::Device> {};

template <class P, class = void>
struct has_compute_dtype : std::false_type {};
template <class P>
struct has_compute_dtype<P, std::void_t<decltype(std::optional<c10::ScalarType>{P::compute_dtype})>> : std::true_type {
};

template <class P, class = void>
struct has_precision_options : std::false_type {};
template <class P>
struct has_precision_options<P, std::void_t<typename P::options_type>> : std::true_type {};

template <class P, bool = has_precision_options<P>::value>
struct prepares_module {  // prepare_module(module)
  template <class Q>
  static auto test(int) -> decltype(Q::prepare_module(std::declval<torch::nn::Module&>()), std::true_type{});
  template <class>
  static std::false_type test(...);
  static constexpr bool value = decltype(test<P>(0))::value;
};
template <class P>
struct prepares_module<P, true> {  // prepare_module(module, options)
  template <class Q>
  static auto test(int) -> decltype(Q::prepare_module(std::declval<torch::nn::Module&>(),
                                                      std::declval<const typename Q::options_type&>()),
                                    std::true_type{});
  template <class>
  static std::false_type test(...);
  static constexpr bool value = decltype(test<P>(0))::value;
};

template <class P, class = void>
struct has_module_steps : std::false_type {};
template <class P>
struct has_module_steps<P, std::void_t<decltype(P::check_device(std::declval<c10::Device>()))>>
    : std::bool_constant<prepares_module<P>::value> {};

template <class P, class = void>
struct has_forward_casts : std::false_type {};
template <class P>
struct has_forward_casts<P, std::void_t<decltype(at::Tensor(P::input(std::declval<const at::Tensor&>()))),
                                        decltype(at::Tensor(P::output(std::declval<at::Tensor>())))>> : std::true_type {
};
}  // namespace detail

template <class P>
inline constexpr bool is_precision_policy_v =
    detail::has_precision_name<P>::value&& detail::has_loss_scaler<P>::value&& detail::has_forward_scope<P>::value&&
        detail::has_compute_dtype<P>::value&& detail::has_module_steps<P>::value&& detail::has_forward_casts<P>::value;

// Whether P scales the loss with acc::GradScaler (Accelerator::scaler() then returns it).
template <class P>
inline constexpr bool uses_grad_scaler_v = std::is_convertible_v<typename P::loss_scaler*, GradScaler*>;

// Names the piece a precision policy lacks; true when it has them all (use in a static_assert).
template <class P>
constexpr bool check_precision_policy() {
  constexpr bool has_name = detail::has_precision_name<P>::value;
  constexpr bool has_loss_scaler = detail::has_loss_scaler<P>::value;
  constexpr bool has_forward_scope = detail::has_forward_scope<P>::value;
  constexpr bool has_compute_dtype = detail::has_compute_dtype<P>::value;
  constexpr bool has_check_device_and_prepare_module = detail::has_module_steps<P>::value;
  constexpr bool has_input_and_output = detail::has_forward_casts<P>::value;
  static_assert(has_name,
                "a precision policy needs static constexpr std::string_view name, the YAML's mixed_precision value "
                "(see include/acc/precision/precision.hpp)");
  static_assert(
      has_loss_scaler,
      "a precision policy needs `using loss_scaler = ...`: acc::GradScaler, acc::NoLossScaling or a type "
      "with their constructor, scale, unscale, skips_step and update (see include/acc/precision/precision.hpp)");
  static_assert(has_forward_scope,
                "a precision policy needs `using forward_scope = ...`, a scope made from a c10::Device: "
                "acc::AutocastTo<dtype> or acc::NoAutocast (see include/acc/precision/autocast.hpp)");
  static_assert(has_compute_dtype,
                "a precision policy needs static constexpr std::optional<c10::ScalarType> compute_dtype "
                "(see include/acc/precision/precision.hpp)");
  static_assert(has_check_device_and_prepare_module,
                "a precision policy needs static void check_device(c10::Device) and static void "
                "prepare_module(torch::nn::Module&), or with options_type prepare_module(torch::nn::Module&, const "
                "options_type&) (see include/acc/precision/precision.hpp)");
  static_assert(has_input_and_output,
                "a precision policy needs static input(arg) and output(result) for the forward's arguments and "
                "result (see include/acc/precision/precision.hpp)");
  return has_name && has_loss_scaler && has_forward_scope && has_compute_dtype && has_check_device_and_prepare_module &&
         has_input_and_output;
}

}  // namespace acc

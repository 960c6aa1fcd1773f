// acc::TrackedValue: one value that trackers log or store as configuration (a bool, an integer,
// a floating-point number or a string, as Python Accelerate's trackers take), and
// acc::TrackedValues, named values in the order given: `{{"loss", 0.25}, {"epoch", 3}}`.
#pragma once

#include <acc/detail/linkage.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace acc {

class TrackedValue {
 public:
  using Storage = std::variant<bool, int64_t, double, std::string>;

  TrackedValue(bool value) : value_(value) {}
  template <class Integer, std::enable_if_t<std::is_integral_v<Integer> && !std::is_same_v<Integer, bool>, int> = 0>
  TrackedValue(Integer value) : value_(static_cast<int64_t>(value)) {}
  template <class Floating, std::enable_if_t<std::is_floating_point_v<Floating>, int> = 0>
  TrackedValue(Floating value) : value_(static_cast<double>(value)) {}
  TrackedValue(std::string value) : value_(std::move(value)) {}
  TrackedValue(const char* value) : value_(std::string(value)) {}
  TrackedValue(std::string_view value) : value_(std::string(value)) {}

  const Storage& storage() const { return value_; }
  bool is_string() const { return std::holds_alternative<std::string>(value_); }
  // A bool, an integer or a number as a double (what TensorBoard's scalars hold).
  double number() const;
  // The value as text, as Python's repr writes it: true/false, the integer, the shortest decimal
  // that reads back as the same double (0.0003, 3.0, 1795314294.5, 1e-05, 1e+16), or the string
  // itself. Every tracker that writes text writes numbers so.
  std::string text() const;

 private:
  Storage value_;
};

using TrackedValues = std::vector<std::pair<std::string, TrackedValue>>;

namespace detail {
// A double as TrackedValue::text() writes it (timestamps too, so that every file agrees).
ACC_DECL std::string decimal_text(double real);
}  // namespace detail

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/value.ipp>
#endif

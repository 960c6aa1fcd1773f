#pragma once

#include <acc/tracking/value.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace acc {

ACC_DECL double TrackedValue::number() const {
  if (const auto* flag = std::get_if<bool>(&value_)) return *flag ? 1.0 : 0.0;
  if (const auto* integer = std::get_if<int64_t>(&value_)) return static_cast<double>(*integer);
  if (const auto* real = std::get_if<double>(&value_)) return *real;
  return 0.0;
}

ACC_DECL std::string detail::decimal_text(double real) {
  // Python's repr: fixed unless the exponent is below -4 or from 16 on.
  char digits[32];
  auto end = std::to_chars(digits, digits + sizeof digits, real, std::chars_format::scientific).ptr;
  // The exponent, read from what to_chars wrote and no further: it writes no terminating NUL.
  int exponent = 0;
  const auto mark = std::find(digits, end, 'e');
  if (mark != end) std::from_chars(mark + (mark[1] == '+' ? 2 : 1), end, exponent);
  if (std::isfinite(real) && exponent >= -4 && exponent < 16) {
    end = std::to_chars(digits, digits + sizeof digits, real, std::chars_format::fixed).ptr;
    if (std::find(digits, end, '.') == end) return std::string(digits, end) + ".0";  // a double, as 3.0
  }
  return std::string(digits, end);
}

ACC_DECL std::string TrackedValue::text() const {
  if (const auto* flag = std::get_if<bool>(&value_)) return *flag ? "true" : "false";
  if (const auto* integer = std::get_if<int64_t>(&value_)) return std::to_string(*integer);
  if (const auto* real = std::get_if<double>(&value_)) return detail::decimal_text(*real);
  return std::get<std::string>(value_);
}

}  // namespace acc

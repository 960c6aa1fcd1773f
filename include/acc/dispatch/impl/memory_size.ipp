// The bodies of dispatch/memory_size.hpp.
#pragma once

#include <acc/dispatch/memory_size.hpp>

#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <utility>

namespace acc {

namespace detail {

inline std::string memory_size_forms() {
  return "give bytes as a whole number, or a number with a unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, "
         "TiB (powers of 1024), e.g. \"20GiB\", \"500MB\" or \"1.5GB\"";
}

}  // namespace detail

ACC_DECL uint64_t parse_memory_size(std::string_view text) {
  const auto fail = [&](const std::string& why) -> uint64_t {
    throw Error("memory size '" + std::string(text) + "' " + why + "; " + detail::memory_size_forms());
  };
  std::size_t end = 0;
  bool point = false;
  while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || (text[end] == '.' && !point))) {
    point = point || text[end] == '.';
    ++end;
  }
  if (end == 0 || text.substr(0, end) == ".") return fail("does not start with a number");
  const std::string number(text.substr(0, end));
  std::size_t unit_begin = end;
  while (unit_begin < text.size() && text[unit_begin] == ' ') ++unit_begin;
  const std::string_view unit = text.substr(unit_begin);
  if (unit.empty()) {
    if (point) return fail("is a fraction of a byte");
    if (number.size() > 19) return fail("is too large");
    return std::stoull(number);
  }
  // Accelerate: "...B" in bits when the b is lowercase, in the decimal units only.
  const bool bits = unit.size() == 2 && unit.back() == 'b';
  std::string upper(unit);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  static const std::array<std::pair<const char*, double>, 8> units = {{{"KB", 1e3},
                                                                       {"MB", 1e6},
                                                                       {"GB", 1e9},
                                                                       {"TB", 1e12},
                                                                       {"KIB", 1024.0},
                                                                       {"MIB", 1048576.0},
                                                                       {"GIB", 1073741824.0},
                                                                       {"TIB", 1099511627776.0}}};
  for (const auto& [name, multiplier] : units) {
    if (upper != name) continue;
    const double bytes = std::stod(number) * multiplier / (bits ? 8 : 1);
    if (!(bytes < 1.8e19)) return fail("is too large");
    return static_cast<uint64_t>(bytes);
  }
  return fail("has the unknown unit '" + std::string(unit) + "'");
}

ACC_DECL std::string format_memory_size(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  static const std::array<const char*, 5> units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < units.size()) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.4g %s", value, units[unit]);
  return text;
}

ACC_DECL MemorySize::MemorySize(long long bytes) : bytes_(static_cast<uint64_t>(bytes)) {
  if (bytes < 0) throw Error("memory size " + std::to_string(bytes) + " is negative; " + detail::memory_size_forms());
}

}  // namespace acc

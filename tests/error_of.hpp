// The message of the acc::Error that a callable throws, for tests that check what an error says.
#pragma once

#include <acc/error.hpp>

#include <string>

// The message of the acc::Error that fn throws ("" when it throws none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const acc::Error& e) {
    return e.what();
  }
  return "";
}

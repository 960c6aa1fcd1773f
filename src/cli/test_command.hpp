// `acc test`: runs a small built-in check program under `acc launch` with the current config, like
// Python Accelerate's `accelerate test`.
#pragma once

#include <string>
#include <vector>

namespace acc::cli {

// The whole subcommand: the arguments after `acc test`; returns the check's exit code.
int test_command(const std::vector<std::string>& arguments);

}  // namespace acc::cli

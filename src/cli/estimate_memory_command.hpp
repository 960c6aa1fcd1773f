// `acc estimate-memory`: the memory per process that training a model of a given size takes, for
// each strategy and number of processes, like Python Accelerate's `accelerate estimate-memory`.
#pragma once

#include <string>
#include <vector>

namespace acc::cli {

// The whole subcommand: the arguments after `acc estimate-memory`; returns the exit code.
int estimate_memory_command(const std::vector<std::string>& arguments);

}  // namespace acc::cli

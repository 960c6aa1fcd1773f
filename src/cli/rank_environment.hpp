// What one rank's process is started with: the launcher's environment with the variables
// torchrun sets on top.
#pragma once

#include "launch_options.hpp"

#include <string>
#include <vector>

namespace acc::cli {

// "NAME=value" entries for local rank `local_rank` of start number `restart` (0 on the first start),
// with rendezvous port `port`; `environment` is the launcher's own (environ).
std::vector<std::string> rank_environment(const LaunchOptions& options, const Machine& machine, int port, int restart,
                                          int local_rank, char** environment);

// execve's form of `strings` (an argv or an environment): pointers to them, then a null pointer.
// The strings must outlive the pointers; exec and spawn do not write through them.
std::vector<char*> null_terminated(const std::vector<std::string>& strings);

}  // namespace acc::cli

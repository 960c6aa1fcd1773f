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

}  // namespace acc::cli

// `acc launch`: starts this machine's ranks and supervises them until the job ends.
#pragma once

#include "launch_options.hpp"
#include "rank_logs.hpp"

#include <string>
#include <vector>

namespace acc::cli {

// Exit codes of acc launch besides those of the ranks.
inline constexpr int kExitUsage = 2;
inline constexpr int kExitCannotExecute = 127;

// Runs the ranks; returns 0 when all of them exit 0, else the code of the first failure
// (128 + signal for a rank killed by a signal, or for a signal that stopped the launcher).
// `logs`: --log_dir's files, opened by the caller (null without --log_dir).
int run_launch(const LaunchOptions& options, const Machine& machine, RankLogs* logs = nullptr);

// The whole subcommand: parses the arguments after `acc launch`, reports bad ones, runs the job.
int launch_command(const std::vector<std::string>& arguments);

}  // namespace acc::cli

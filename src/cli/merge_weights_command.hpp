// `acc merge-weights CHECKPOINT_DIR OUTPUT_DIR`: the full weights of a save_state checkpoint
// written with fsdp_state_dict_type SHARDED_STATE_DICT, like Python's `accelerate merge-weights`.
#pragma once

#include <string>
#include <vector>

namespace acc::cli {

// The whole subcommand: the arguments after `acc merge-weights`; returns the exit code.
int merge_weights_command(const std::vector<std::string>& arguments);

}  // namespace acc::cli

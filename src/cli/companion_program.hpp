// The programs that acc runs from its own folder: they link libtorch, which acc itself does not
// (acc test runs acc_sanity_check under acc launch; acc estimate-memory runs acc_device_map).
#pragma once

#include <string>
#include <vector>

namespace acc::cli {

inline constexpr const char* kSanityCheckProgram = "acc_sanity_check";
inline constexpr const char* kDeviceMapProgram = "acc_device_map";

struct CompanionProgram {
  std::string path;   // next to the running acc
  std::string error;  // when it is missing or not executable: what to build or reinstall
};

// `what` names it in the error ("the sanity check program").
CompanionProgram find_companion_program(const std::string& name, const std::string& what);

// Runs the program with acc's standard streams (its standard output into `output` when given) and
// `environment` ("NAME=value" entries; when absent, acc's own), and returns its exit code (128 + the
// signal that ended it, as shells report); -1 with `error` set when it could not start.
int run_program(const std::vector<std::string>& argv, std::string& error, std::string* output = nullptr,
                const std::vector<std::string>* environment = nullptr);

}  // namespace acc::cli

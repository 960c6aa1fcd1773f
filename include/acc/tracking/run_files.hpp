// The files a tracker writes under logging_dir/project_name: the directory is created, and a
// file that cannot be opened is an acc::Error naming it.
#pragma once

#include <acc/detail/linkage.hpp>

#include <filesystem>
#include <fstream>

namespace acc::detail {

ACC_DECL std::filesystem::path create_run_directory(const std::filesystem::path& dir);

// Opened for writing, truncated (each run writes its own files) unless appending.
ACC_DECL std::ofstream open_run_file(const std::filesystem::path& path, bool append = false);

ACC_DECL void check_written(const std::ofstream& file, const std::filesystem::path& path);

// Seconds since the Unix epoch, as TensorBoard's wall_time.
ACC_DECL double unix_seconds();

}  // namespace acc::detail

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/tracking/impl/run_files.ipp>
#endif

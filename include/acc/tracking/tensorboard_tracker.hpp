// acc::TensorBoardTracker ("tensorboard"): an event file that TensorBoard reads, in
// logging_dir/project_name (as Python Accelerate's TensorBoardTracker puts it). Numbers and
// booleans become scalars (TensorBoard keeps them as 32-bit floats), strings text summaries
// under "<key>/text_summary"; the configuration goes to hparams.yml beside the events. Each log()
// is one flushed record, framed as TFRecord.
//
// Its definitions are compiled, with the protobuf messages they need, into the acc::tensorboard
// library (built where CMake finds Protobuf: Debian's libprotobuf-dev and protobuf-compiler);
// link it to use this tracker.
#pragma once

#include <acc/tracking/tracker.hpp>
#include <acc/tracking/value.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace acc {

class TensorBoardTracker : public Tracker {
 public:
  explicit TensorBoardTracker(const std::filesystem::path& run_dir);

  // events.out.tfevents.<seconds>.<host>.<pid>.<n>, TensorBoard's file name.
  const std::filesystem::path& event_file() const { return event_file_; }
  std::filesystem::path config_path() const { return dir_ / "hparams.yml"; }

  std::string name() const override { return "tensorboard"; }
  void store_init_configuration(const TrackedValues& config) override;
  void log(const TrackedValues& values, std::optional<int64_t> step) override;
  void finish() override { file_.close(); }

 private:
  void write_record(const std::string& event);

  std::filesystem::path dir_;
  std::filesystem::path event_file_;
  std::ofstream file_;
};

}  // namespace acc

// acc::TensorBoardTracker's definitions: events as protobuf messages (event.proto), framed as
// TFRecord (include/acc/tracking/tfrecord.hpp).
#include <acc/tracking/tensorboard_tracker.hpp>

#include <acc/error.hpp>
#include <acc/tracking/run_files.hpp>
#include <acc/tracking/tfrecord.hpp>

#include <acc/tensorboard/event.pb.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <string>
#include <variant>

namespace acc {

namespace {

std::string host_name() {
  char name[HOST_NAME_MAX + 1] = {};
  return ::gethostname(name, sizeof name) == 0 ? std::string(name) : std::string("localhost");
}

// What SummaryWriter names its files, so that two writers in one directory never collide.
std::filesystem::path event_file_name(double wall_time) {
  static std::atomic<int> writers{0};
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%010lld", static_cast<long long>(wall_time));
  return "events.out.tfevents." + std::string(seconds) + "." + host_name() + "." + std::to_string(::getpid()) + "." +
         std::to_string(writers++);
}

void set_text(tensorboard::Summary::Value& entry, const std::string& key, const std::string& text) {
  entry.set_tag(key + "/text_summary");  // the tag Python's add_text gives
  entry.mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  auto* tensor = entry.mutable_tensor();
  tensor->set_dtype(tensorboard::DT_STRING);
  tensor->mutable_tensor_shape()->add_dim()->set_size(1);
  tensor->add_string_val(text);
}

}  // namespace

TensorBoardTracker::TensorBoardTracker(const std::filesystem::path& run_dir)
    : dir_(detail::create_run_directory(run_dir)) {
  tensorboard::Event header;
  header.set_wall_time(detail::unix_seconds());
  header.set_file_version("brain.Event:2");
  event_file_ = dir_ / event_file_name(header.wall_time());
  file_ = detail::open_run_file(event_file_);
  write_record(header.SerializeAsString());
}

void TensorBoardTracker::store_init_configuration(const TrackedValues& config) {
  YAML::Emitter yaml;
  yaml << YAML::BeginMap;
  for (const auto& [key, value] : config) {
    yaml << YAML::Key << key << YAML::Value;
    if (value.is_string())
      yaml << YAML::DoubleQuoted << value.text();  // quoted, so that "0.5" stays a string
    else if (std::holds_alternative<bool>(value.storage()))
      yaml << std::get<bool>(value.storage());
    else
      yaml << value.text();  // the shortest exact decimal, as the jsonl and csv trackers write it
  }
  yaml << YAML::EndMap;
  auto file = detail::open_run_file(config_path());
  file << yaml.c_str() << "\n";
  file.flush();
  detail::check_written(file, config_path());
}

void TensorBoardTracker::log(const TrackedValues& values, std::optional<int64_t> step) {
  tensorboard::Event event;
  event.set_wall_time(detail::unix_seconds());
  event.set_step(step.value_or(0));  // SummaryWriter's global_step=None
  auto* summary = event.mutable_summary();
  for (const auto& [key, value] : values) {
    auto* entry = summary->add_value();
    if (value.is_string()) {
      set_text(*entry, key, value.text());
    } else {
      entry->set_tag(key);
      entry->set_simple_value(static_cast<float>(value.number()));
    }
  }
  write_record(event.SerializeAsString());
}

void TensorBoardTracker::write_record(const std::string& event) {
  file_ << detail::tfrecord(event);
  file_.flush();
  detail::check_written(file_, event_file_);
}

}  // namespace acc

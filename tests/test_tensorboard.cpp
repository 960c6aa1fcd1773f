// The TensorBoard tracker's event files, read back with our TFRecord reader (which checks the
// checksums) and parsed with the protobuf messages of src/tensorboard/event.proto.
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/tracking/tensorboard_tracker.hpp>
#include <acc/tracking/tfrecord.hpp>
#include <acc/tracking/trackers.hpp>

#include <acc/tensorboard/event.pb.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <string>
#include <vector>

namespace {
std::vector<acc::tensorboard::Event> events_of(const std::filesystem::path& file) {
  std::vector<acc::tensorboard::Event> events;
  for (const auto& record : acc::detail::read_tfrecords(file)) {
    events.emplace_back();
    REQUIRE(events.back().ParseFromString(record));
  }
  return events;
}
}  // namespace

TEST_SUITE("tracking") {
  TEST_CASE("tensorboard: scalars, text and the configuration, as TensorBoard's event files hold them") {
    TempDir dir("acc_tensorboard_test");
    acc::Trackers trackers({"tensorboard"});
    trackers.start("runs/a", dir.path, /*is_main_process=*/true, {{"lr", 0.001}, {"model", "mlp"}, {"amp", false}});
    trackers.log({{"loss", 2.5}, {"lr", 0.001}, {"done", true}}, 3);
    trackers.log({{"loss", 1.75}, {"sample", "the cat"}}, 4);
    trackers.log({{"loss", 1.5}}, std::nullopt);
    auto* tracker = dynamic_cast<acc::TensorBoardTracker*>(trackers.get("tensorboard"));
    REQUIRE(tracker != nullptr);
    const auto file = tracker->event_file();
    trackers.finish();

    CHECK(file.parent_path() == dir.path / "runs" / "a");
    CHECK(file.filename().string().rfind("events.out.tfevents.", 0) == 0);
    const auto events = events_of(file);
    REQUIRE(events.size() == 4);
    CHECK(events[0].file_version() == "brain.Event:2");
    CHECK(events[0].wall_time() > 1.6e9);

    const auto& first = events[1];
    CHECK(first.step() == 3);
    CHECK(first.wall_time() >= events[0].wall_time());
    REQUIRE(first.summary().value_size() == 3);
    CHECK(first.summary().value(0).tag() == "loss");
    CHECK(first.summary().value(0).simple_value() == 2.5f);
    CHECK(first.summary().value(1).simple_value() == 0.001f);
    CHECK(first.summary().value(2).tag() == "done");
    CHECK(first.summary().value(2).simple_value() == 1.0f);

    const auto& text = events[2].summary().value(1);
    CHECK(text.tag() == "sample/text_summary");
    CHECK(text.metadata().plugin_data().plugin_name() == "text");
    CHECK(text.tensor().dtype() == acc::tensorboard::DT_STRING);
    REQUIRE(text.tensor().string_val_size() == 1);
    CHECK(text.tensor().string_val(0) == "the cat");
    CHECK(events[3].step() == 0);  // no step: SummaryWriter's global_step=None
    CHECK(events[3].summary().value(0).simple_value() == 1.5f);

    const auto hparams = YAML::LoadFile((dir.path / "runs" / "a" / "hparams.yml").string());
    CHECK(hparams["lr"].as<double>() == 0.001);
    CHECK(hparams["model"].as<std::string>() == "mlp");
    CHECK(hparams["amp"].as<bool>() == false);
  }
}

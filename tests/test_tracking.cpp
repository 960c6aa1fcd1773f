#include "error_of.hpp"
#include "pch.hpp"  // first: libtorch, then doctest
#include "temp_dir.hpp"

#include <acc/accelerator.hpp>
#include <acc/config/config.hpp>
#include <acc/detail/crc32c.hpp>
#include <acc/run.hpp>
#include <acc/tracking/logger.hpp>
#include <acc/tracking/progress_bar.hpp>
#include <acc/tracking/tfrecord.hpp>
#include <acc/tracking/trackers.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Records what it is given, on every process.
struct RecordingTracker : acc::Tracker {
  explicit RecordingTracker(bool main_only) : main_only(main_only) {}
  std::string name() const override { return "recording"; }
  void store_init_configuration(const acc::TrackedValues& values) override { config = values; }
  void log(const acc::TrackedValues& values, std::optional<int64_t> step) override {
    logged.push_back(values);
    steps.push_back(step);
  }
  void finish() override { finished = true; }
  bool main_process_only() const override { return main_only; }
  bool main_only;
  acc::TrackedValues config;
  std::vector<acc::TrackedValues> logged;
  std::vector<std::optional<int64_t>> steps;
  bool finished = false;
};

acc::ProcessEnvironment rank_of(int rank, int world_size) {
  acc::ProcessEnvironment env;
  env.rank = env.local_rank = rank;
  env.world_size = env.local_world_size = world_size;
  return env;
}

}  // namespace

TEST_SUITE("tracking") {
  TEST_CASE("tracked values keep their kind and print the shortest exact decimal") {
    CHECK(std::holds_alternative<int64_t>(acc::TrackedValue(3).storage()));
    CHECK(std::holds_alternative<double>(acc::TrackedValue(0.5f).storage()));
    CHECK(std::holds_alternative<bool>(acc::TrackedValue(true).storage()));
    CHECK(acc::TrackedValue("adamw").is_string());
    CHECK(acc::TrackedValue(0.1).text() == "0.1");
    CHECK(acc::TrackedValue(3e-4).text() == "0.0003");
    CHECK(acc::TrackedValue(1e-5).text() == "1e-05");
    CHECK(acc::TrackedValue(1795314294.544163).text() == "1795314294.544163");
    CHECK(acc::TrackedValue(1e16).text() == "1e+16");
    CHECK(acc::TrackedValue(-2.5).text() == "-2.5");
    CHECK(acc::TrackedValue(3.0).text() == "3.0");  // a double stays one, as in Python
    CHECK(acc::TrackedValue(1e15).text() == "1000000000000000.0");
    CHECK(acc::TrackedValue(int64_t{1} << 40).text() == "1099511627776");
    CHECK(acc::TrackedValue(false).number() == 0.0);
  }

  TEST_CASE("random numbers: the shortest exact decimal, fixed from 1e-4 to 1e16, the same text in csv and jsonl") {
    // text() once read the exponent past the characters it wrote (atoi on a buffer without a NUL),
    // so that most numbers in (0.1, 1) came out in scientific notation, in csv but not in jsonl.
    std::mt19937_64 random(20261130);
    std::uniform_real_distribution<double> unit(0.1, 1.0), exponent(-20.0, 20.0);
    std::vector<double> values;
    for (int i = 0; i < 2000; ++i) values.push_back(unit(random));
    for (int i = 0; i < 2000; ++i) values.push_back((i % 2 ? 1 : -1) * std::pow(10.0, exponent(random)));
    std::vector<std::string> wrong;
    for (const double value : values) {
      const auto text = acc::TrackedValue(value).text();
      const bool fixed = std::abs(value) >= 1e-4 && std::abs(value) < 1e16;
      if (std::strtod(text.c_str(), nullptr) != value || (text.find('e') == std::string::npos) != fixed)
        wrong.push_back(text);
    }
    CHECK_MESSAGE(wrong.empty(), wrong.size(), " of ", values.size(),
                  " wrong, the first: ", wrong.empty() ? "" : wrong.front());

    // Through the trackers: each number is the same text in both files, and reads back as itself.
    TempDir dir("acc_tracking_test");
    acc::CsvTracker csv(dir.path);
    acc::JsonlTracker jsonl(dir.path);
    for (std::size_t i = 0; i < values.size(); ++i) {
      csv.log({{"x", values[i]}}, static_cast<int64_t>(i));
      jsonl.log({{"x", values[i]}}, static_cast<int64_t>(i));
    }
    csv.finish();
    jsonl.finish();
    const auto rows = lines_of(read_text(csv.metrics_path()));
    const auto objects = lines_of(read_text(jsonl.metrics_path()));
    REQUIRE(rows.size() == values.size() + 1);
    REQUIRE(objects.size() == values.size());
    std::vector<std::string> differ;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto cell = rows[i + 1].substr(rows[i + 1].rfind(',') + 1);
      const auto& object = objects[i];
      const auto number = object.substr(object.rfind(':') + 1, object.size() - object.rfind(':') - 2);
      if (cell != number || std::strtod(cell.c_str(), nullptr) != values[i] ||
          nlohmann::json::parse(object)["x"].get<double>() != values[i])
        differ.push_back(cell + " " + number);
    }
    CHECK_MESSAGE(differ.empty(), differ.size(), " differ (csv jsonl), the first: ", differ.empty() ? "" : differ[0]);
  }

  TEST_CASE("the Accelerator logs to jsonl and csv under logging_dir/project on the main process") {
    TempDir dir("acc_tracking_test");
    acc::Accelerator<> accelerator(
        acc::AcceleratorOptions()
            .environment(rank_of(0, 1))
            .log_with({"jsonl", "csv", "csv"})
            .project_config(
                acc::ProjectConfiguration().project_dir(dir.path / "project").logging_dir(dir.path / "logs")));
    accelerator.init_trackers("run", {{"lr", 3e-4}, {"optimizer", "adamw, fused"}, {"layers", 2}});
    accelerator.log({{"loss", 2.5}, {"finite", true}}, 1);
    accelerator.log({{"loss", 1.25}, {"accuracy", 0.5}}, 2);
    accelerator.log({{"note", "line \"two\""}});
    REQUIRE(accelerator.get_tracker("jsonl") != nullptr);
    CHECK(accelerator.get_tracker("tensorboard") == nullptr);
    accelerator.end_training();
    const auto run = dir.path / "logs" / "run";

    const auto jsonl = lines_of(read_text(run / "metrics.jsonl"));
    REQUIRE(jsonl.size() == 3);
    const auto first = nlohmann::json::parse(jsonl[0]);
    CHECK(first["_step"] == 1);
    CHECK(first["_timestamp"].get<double>() > 1.6e9);
    CHECK(first["loss"] == 2.5);
    CHECK(first["finite"] == true);
    CHECK(nlohmann::json::parse(jsonl[1])["accuracy"] == 0.5);
    CHECK(nlohmann::json::parse(jsonl[2])["_step"].is_null());
    CHECK(nlohmann::json::parse(jsonl[2])["note"] == "line \"two\"");
    const auto config = nlohmann::json::parse(read_text(run / "config.json"));
    CHECK(config["lr"] == 3e-4);
    CHECK(config["optimizer"] == "adamw, fused");
    CHECK(config["layers"] == 2);

    // A column seen later widens the header; earlier rows leave it empty.
    const auto csv = lines_of(read_text(run / "metrics.csv"));
    REQUIRE(csv.size() == 4);
    CHECK(csv[0] == "step,timestamp,loss,finite,accuracy,note");
    CHECK(csv[1].rfind("1,", 0) == 0);
    CHECK(csv[1].substr(csv[1].find(',', 2)) == ",2.5,true,,");
    CHECK(csv[2].substr(csv[2].find(',', 2)) == ",1.25,,0.5,");
    CHECK(csv[3].rfind(",", 0) == 0);
    CHECK(csv[3].substr(csv[3].find(',', 1)) == ",,,,\"line \"\"two\"\"\"");
    CHECK(read_text(run / "config.csv") == "key,value\nlr,0.0003\noptimizer,\"adamw, fused\"\nlayers,2\n");
    CHECK_FALSE(fs::exists(dir.path / "project" / "run"));
  }

  TEST_CASE("other processes write no files; their own trackers run where they allow it") {
    TempDir dir("acc_tracking_test");
    acc::Trackers trackers({"all"});
    auto main_only = std::make_shared<RecordingTracker>(true);
    auto everywhere = std::make_shared<RecordingTracker>(false);
    trackers.add(main_only);
    trackers.add(everywhere);
    trackers.start("run", dir.path, /*is_main_process=*/false, {{"seed", 1}});
    trackers.log({{"loss", 0.75}}, 7);
    trackers.finish();
    CHECK_FALSE(fs::exists(dir.path / "run"));
    CHECK(main_only->logged.empty());
    CHECK_FALSE(main_only->finished);
    REQUIRE(everywhere->logged.size() == 1);
    CHECK(everywhere->logged[0][0].first == "loss");
    CHECK(everywhere->logged[0][0].second.number() == 0.75);
    CHECK(everywhere->steps[0] == 7);
    CHECK(everywhere->config[0].first == "seed");
    CHECK(everywhere->finished);
  }

  TEST_CASE("log_with: all, unknown names, and calls out of order") {
    acc::Trackers none;
    none.log({{"loss", 1.0}}, 1);  // no trackers configured: nothing to do, no error

    std::vector<std::string> all{"jsonl", "csv"};
    if (ACC_HAS_TENSORBOARD) all.push_back("tensorboard");
    auto csv_first = std::vector<std::string>{"csv", "jsonl"};
    if (ACC_HAS_TENSORBOARD) csv_first.push_back("tensorboard");
    CHECK(acc::detail::resolve_tracker_names({"csv", "all", "jsonl"}) == csv_first);
    CHECK(acc::detail::resolve_tracker_names({"all"}) == all);
    CHECK(error_of([] { acc::Trackers({"tensorbord"}); }) ==
          "log_with names an unknown tracker 'tensorbord'; allowed values: all, jsonl, csv, tensorboard");
    if (!ACC_HAS_TENSORBOARD)
      CHECK(error_of([] { acc::Trackers({"tensorboard"}); }).find("link it with acc::tensorboard") !=
            std::string::npos);

    TempDir dir("acc_tracking_test");
    acc::Trackers trackers({"jsonl"});
    CHECK(error_of([&] {
            trackers.log({{"loss", 1.0}}, 1);
          }) == "log() before init_trackers(): call accelerator.init_trackers(project_name) first");
    CHECK(error_of([&] { trackers.start("", dir.path, true, {}); }).find("needs a project name") != std::string::npos);
    trackers.start("run", dir.path, true, {});
    CHECK(error_of([&] { trackers.start("run", dir.path, true, {}); }).find("called twice") != std::string::npos);
    trackers.finish();
    CHECK(error_of([&] { trackers.log({{"loss", 1.0}}, 1); }) == "log() after end_training(): the trackers are closed");
  }

  TEST_CASE("log_with from the YAML's acc section and from ACC_LOG_WITH") {
    CHECK(acc::Config::from_yaml("acc:\n  log_with: [jsonl, csv]\n").log_with ==
          std::vector<std::string>{"jsonl", "csv"});
    CHECK(acc::Config::from_yaml("acc:\n  log_with: jsonl, all\n").log_with ==
          std::vector<std::string>{"jsonl", "all"});
    CHECK(error_of([] { acc::Config::from_yaml("acc:\n  log_with: [jsonl, wandb]\n", "my.yaml"); }) ==
          "my.yaml:2: 'acc.log_with' names 'wandb'; allowed values: all, jsonl, csv, tensorboard (a list, "
          "or names separated by commas)");
    const auto lookup = [](std::string value) {
      return [value](std::string_view name) -> std::optional<std::string> {
        if (name == "ACC_LOG_WITH") return value;
        return std::nullopt;
      };
    };
    const auto config = acc::Config::from_yaml("acc: {log_with: csv}").with_environment(lookup("jsonl,csv"));
    CHECK(config.log_with == std::vector<std::string>{"jsonl", "csv"});
    CHECK(acc::accelerator_options(config).log_with() == config.log_with);
    CHECK(error_of([&] {
            acc::Config().with_environment(lookup("jsonl,nope"));
          }).rfind("ACC_LOG_WITH='jsonl,nope': 'acc.log_with' names 'nope'", 0) == 0);
  }

  TEST_CASE("CRC-32C and TFRecord framing") {
    CHECK(acc::detail::crc32c("123456789") == 0xE3069283u);  // the check value of CRC-32C
    CHECK(acc::detail::crc32c("") == 0u);
    const uint32_t crc = 0xE3069283u;
    CHECK(acc::detail::masked_crc32c("123456789") == ((crc >> 15) | (crc << 17)) + 0xA282EAD8u);

    TempDir dir("acc_tracking_test");
    const auto file = dir.path / "records";
    const std::string data = acc::detail::tfrecord("first") + acc::detail::tfrecord(std::string(300, 'x'));
    CHECK(data.size() == 16 + 5 + 16 + 300);
    CHECK(static_cast<unsigned char>(data[0]) == 5);
    {
      std::ofstream out(file, std::ios::binary);
      out << data;
    }
    CHECK(acc::detail::read_tfrecords(file) == std::vector<std::string>{"first", std::string(300, 'x')});
    auto corrupt = data;
    corrupt[30] ^= 1;  // the second record (from byte 21): its length's checksum
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << corrupt;
    }
    CHECK(error_of([&] { acc::detail::read_tfrecords(file); }) ==
          "'" + file.string() +
              "' at byte 21: the length's checksum does not match (not a complete TFRecord file; was it written to "
              "the end?)");
    {
      std::ofstream out(file, std::ios::binary | std::ios::trunc);
      out << data.substr(0, data.size() - 1);
    }
    CHECK(error_of([&] { acc::detail::read_tfrecords(file); }).find("at byte 21: a record is cut short") !=
          std::string::npos);
  }

  TEST_CASE("progress bar: percentage, rate, time left and postfix at an injected clock") {
    std::ostringstream out;
    double now = 100.0;
    {
      acc::ProgressBar bar(acc::ProgressBarOptions(100)
                               .description("train")
                               .bar_width(10)
                               .min_interval(1.0)
                               .display(acc::ProgressBarOptions::Display::always)
                               .enabled(true)
                               .stream(&out)
                               .clock([&] { return now; }));
      CHECK(bar.shown());
      now = 110.0;
      bar.set_postfix({{"loss", 2.3456789}, {"lr", 3e-4}, {"phase", "warmup"}});
      bar.update(25);  // 2.5 it/s, 75 left: 30 s
      now = 110.5;
      bar.update(5);  // within min_interval: not drawn
      now = 150.0;
      bar.update(70);  // the total is always drawn
      bar.close();
      bar.close();
    }
    const auto lines = lines_of(out.str());
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "train:  25%|##        | 25/100 [00:10<00:30, 2.50it/s, loss=2.346, lr=0.0003, phase=warmup]");
    CHECK(lines[1] == "train: 100%|##########| 100/100 [00:50<00:00, 2.00it/s, loss=2.346, lr=0.0003, phase=warmup]");
    CHECK(lines[2] == lines[1]);  // close() draws the final state once
  }

  TEST_CASE("progress bar: unknown total, slow steps, and when it stays quiet") {
    std::ostringstream out;
    double now = 0.0;
    const auto options = acc::ProgressBarOptions()
                             .unit("batch")
                             .min_interval(0)
                             .display(acc::ProgressBarOptions::Display::always)
                             .enabled(true)
                             .stream(&out)
                             .clock([&] { return now; });
    acc::ProgressBar bar(options);
    CHECK(bar.line(0) == "0batch [00:00, ?batch/s]");
    now = 3725.0;
    bar.update(2);
    CHECK(out.str() == "2batch [1:02:05, 1862.50s/batch]\n");

    std::ostringstream quiet;
    acc::ProgressBar not_main(acc::ProgressBarOptions(options).enabled(false).stream(&quiet));
    acc::ProgressBar never(
        acc::ProgressBarOptions(options).display(acc::ProgressBarOptions::Display::never).stream(&quiet));
    // automatic: a string stream is no terminal
    acc::ProgressBar automatic(
        acc::ProgressBarOptions(options).display(acc::ProgressBarOptions::Display::automatic).stream(&quiet));
    for (auto* b : {&not_main, &never, &automatic}) {
      b->update(3);
      b->close();
      CHECK_FALSE(b->shown());
      CHECK(b->count() == 3);
    }
    CHECK(quiet.str().empty());
  }

  TEST_CASE("logger: main process only by default, per rank on request, levels") {
    std::ostringstream main_out, other_out;
    const auto options = acc::LoggerOptions().level(acc::LogLevel::info);
    const auto main =
        acc::get_logger("train", acc::LoggerOptions(options).environment(rank_of(0, 2)).stream(&main_out));
    const auto other =
        acc::get_logger("train", acc::LoggerOptions(options).environment(rank_of(1, 2)).stream(&other_out));
    for (const auto* logger : {&main, &other}) {
      logger->info("epoch 1");
      logger->debug("below the level");
      logger->warning("shard missing", acc::LogOptions().main_process_only(false));
    }
    CHECK(main_out.str() == "INFO train: epoch 1\n[rank 0] WARNING train: shard missing\n");
    CHECK(other_out.str() == "[rank 1] WARNING train: shard missing\n");

    CHECK(acc::parse_log_level("debug") == acc::LogLevel::debug);
    CHECK(acc::parse_log_level("Warn") == acc::LogLevel::warning);
    CHECK(error_of([] { acc::parse_log_level("verbose", "ACCELERATE_LOG_LEVEL"); }) ==
          "ACCELERATE_LOG_LEVEL is 'verbose'; allowed values: DEBUG, INFO, WARNING, ERROR, CRITICAL");
    ::setenv("ACCELERATE_LOG_LEVEL", "error", 1);
    CHECK(acc::get_logger("x").level() == acc::LogLevel::error);
    ::setenv("ACCELERATE_LOG_LEVEL", "loud", 1);
    CHECK(error_of([] { acc::get_logger("x"); }).rfind("ACCELERATE_LOG_LEVEL is 'loud'", 0) == 0);
    ::unsetenv("ACCELERATE_LOG_LEVEL");
    CHECK(acc::get_logger("x").level() == acc::LogLevel::warning);
  }

  TEST_CASE("logger: in_order takes turns at the accelerator's barrier") {
    std::ostringstream out;
    const auto in_order = acc::LogOptions().main_process_only(false).in_order(true);
    const auto plain = acc::get_logger(
        "train", acc::LoggerOptions().environment(rank_of(1, 3)).stream(&out).level(acc::LogLevel::info));
    CHECK(error_of([&] { plain.info("hello", in_order); }).find("acc::get_logger(name, accelerator)") !=
          std::string::npos);

    // Rank 1 of 3 writes between the first and the second barrier.
    std::vector<std::string> seen_at_barrier;
    const auto turns = acc::get_logger(
        "train", acc::LoggerOptions().environment(rank_of(1, 3)).stream(&out).level(acc::LogLevel::info).barrier([&] {
          seen_at_barrier.push_back(out.str());
        }));
    turns.info("hello", in_order);
    CHECK(seen_at_barrier ==
          std::vector<std::string>{"", "[rank 1] INFO train: hello\n", "[rank 1] INFO train: hello\n"});
    out.str("");

    acc::Accelerator<> accelerator(acc::AcceleratorOptions().environment(rank_of(0, 1)));
    const auto logger =
        acc::get_logger("train", accelerator, acc::LoggerOptions().stream(&out).level(acc::LogLevel::info));
    logger.info("ready", in_order);  // one process: writes, then the barrier returns
    CHECK(out.str() == "[rank 0] INFO train: ready\n");
  }
}

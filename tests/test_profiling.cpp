#include "pch.hpp"  // first: libtorch, then doctest

#include <acc/profiling/key_averages.hpp>
#include <acc/profiling/profile_options.hpp>
#include <acc/profiling/profiler.hpp>

#include "error_of.hpp"
#include "temp_dir.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace {

// The events of a Chrome trace file named `name`.
int64_t count_in_trace(const nlohmann::json& trace, const std::string& name) {
  int64_t count = 0;
  for (const auto& event : trace.at("traceEvents"))
    if (event.value("name", "") == name) ++count;
  return count;
}

nlohmann::json read_trace(const std::filesystem::path& file) {
  REQUIRE(std::filesystem::exists(file));
  return nlohmann::json::parse(read_text(file));
}

// What Profiler asks of an accelerator, with a count of the barriers.
struct FakeAccelerator {
  int rank = 0;
  int barriers = 0;
  int process_index() const { return rank; }
  c10::Device device() const { return c10::Device(c10::kCPU); }
  void wait_for_everyone() { ++barriers; }
};

const auto a = at::ones({4, 8});
const auto b = at::ones({8, 3});

}  // namespace

TEST_CASE("a profiler without a schedule records every step and writes profile_<process index>.json") {
  TempDir dir;
  acc::ProfilerSession session(acc::ProfileOptions().output_trace_dir(dir.path.string()), 3, false);
  for (int step = 0; step < 3; ++step) {
    at::mm(a, b);
    session.step();
  }
  session.stop();
  CHECK(session.trace_file() == (dir.path / "profile_3.json").string());
  const auto trace = read_trace(dir.path / "profile_3.json");
  CHECK(count_in_trace(trace, "aten::mm") == 3);
  CHECK(session.key_averages().find("aten::mm")->count == 3);
}

TEST_CASE("a schedule records its active steps only: ops of wait, warm-up and later steps are not in the trace") {
  TempDir dir;
  acc::ProfilerSession session(acc::ProfileOptions()
                                   .schedule(acc::ProfileSchedule().wait(1).warmup(1).active(2).repeat(1))
                                   .output_trace_dir(dir.path.string()),
                               0, false);
  at::cos(a);  // step 0: wait
  session.step();
  at::sin(a);  // step 1: warm-up
  session.step();
  at::mm(a, b);  // steps 2 and 3: recorded
  session.step();
  at::mm(a, b);
  at::mm(a, b);
  session.step();
  at::tanh(a);  // step 4: after the only cycle
  session.step();
  session.stop();

  const auto trace = read_trace(dir.path / "profile_0.json");
  REQUIRE(trace.at("traceEvents").is_array());
  CHECK(count_in_trace(trace, "aten::mm") == 3);
  CHECK(count_in_trace(trace, "aten::cos") == 0);
  CHECK(count_in_trace(trace, "aten::sin") == 0);
  CHECK(count_in_trace(trace, "aten::tanh") == 0);
  CHECK(count_in_trace(trace, "ProfilerStep#2") == 1);
  CHECK(count_in_trace(trace, "ProfilerStep#3") == 1);

  const auto averages = session.key_averages();
  REQUIRE(averages.find("aten::mm") != nullptr);
  CHECK(averages.find("aten::mm")->count == 3);
  CHECK(averages.find("ProfilerStep*")->count == 2);
  CHECK(averages.find("aten::cos") == nullptr);
  CHECK(averages.find("aten::tanh") == nullptr);
}

TEST_CASE("with repeat, each cycle's trace replaces the last: the file holds the last cycle") {
  TempDir dir;
  acc::ProfilerSession session(
      acc::ProfileOptions().schedule(acc::ProfileSchedule().active(1).repeat(2)).output_trace_dir(dir.path.string()), 0,
      false);
  at::cos(a);  // cycle 1
  session.step();
  CHECK(count_in_trace(read_trace(dir.path / "profile_0.json"), "aten::cos") == 1);
  at::sin(a);  // cycle 2
  session.step();
  at::tanh(a);  // no cycle left
  session.stop();
  const auto trace = read_trace(dir.path / "profile_0.json");
  CHECK(count_in_trace(trace, "aten::cos") == 0);
  CHECK(count_in_trace(trace, "aten::sin") == 1);
  CHECK(count_in_trace(trace, "aten::tanh") == 0);
  CHECK(session.key_averages().find("aten::sin")->count == 1);
}

TEST_CASE("record_shapes and with_flops put the inputs' shapes and the FLOPs of aten::mm in the trace") {
  TempDir dir;
  acc::ProfilerSession session(
      acc::ProfileOptions().record_shapes(true).with_flops(true).output_trace_dir(dir.path.string()), 0, false);
  at::mm(a, b);
  session.stop();
  bool found = false;
  const auto trace = read_trace(dir.path / "profile_0.json");
  for (const auto& event : trace.at("traceEvents"))
    if (event.value("name", "") == "aten::mm") {
      found = true;
      CHECK(event.at("args").at("Input Dims") == nlohmann::json::parse("[[4, 8], [8, 3]]"));
    }
  CHECK(found);
  CHECK(session.key_averages().find("aten::mm")->flops == 2 * 4 * 8 * 3);
}

TEST_CASE("ProfileSchedule::action follows torch.profiler.schedule") {
  using A = acc::ProfilerAction;
  const auto schedule = acc::ProfileSchedule().skip_first(1).wait(1).warmup(1).active(2).repeat(2);
  const std::vector<A> expected{A::none, A::none,   A::warmup, A::record,          A::record_and_save,
                                A::none, A::warmup, A::record, A::record_and_save, A::none};
  for (int64_t step = 0; step < static_cast<int64_t>(expected.size()); ++step) {
    CAPTURE(step);
    CHECK(schedule.action(step) == expected[static_cast<size_t>(step)]);
  }
  // repeat 0: cycles for as long as the steps go on.
  CHECK(acc::ProfileSchedule().wait(1).active(1).action(1001) == A::record_and_save);
}

TEST_CASE("key averages sum each name's events, with self time less the events inside, in torch's table") {
  using Kind = acc::ProfiledEvent::Kind;
  const auto event = [](std::string name, int64_t start_us, int64_t duration_us, Kind kind = Kind::op) {
    acc::ProfiledEvent e;
    e.name = std::move(name);
    e.kind = kind;
    e.thread = 1;
    e.start_ns = start_us * 1000;
    e.duration_ns = duration_us * 1000;
    return e;
  };
  const acc::KeyAverages averages({event("ProfilerStep#1", 0, 100, Kind::user_annotation), event("aten::linear", 0, 60),
                                   event("aten::addmm", 10, 40), event("aten::relu", 70, 20),
                                   event("aten::addmm", 100, 30), event("[memory]", 15, 0, Kind::memory)});
  REQUIRE(averages.rows().size() == 4);
  CHECK(averages.find("ProfilerStep*")->self_cpu_time_total_ns == 20'000);
  CHECK(averages.find("aten::linear")->self_cpu_time_total_ns == 20'000);
  CHECK(averages.find("aten::linear")->cpu_time_total_ns == 60'000);
  CHECK(averages.find("aten::addmm")->count == 2);
  CHECK(averages.find("aten::addmm")->self_cpu_time_total_ns == 70'000);
  CHECK(averages.find("[memory]") == nullptr);

  const auto table = averages.table("self_cpu_time_total", 2);
  CHECK(table.find("# of Calls") != std::string::npos);
  CHECK(table.find("aten::relu") == std::string::npos);
  CHECK(table.find("aten::addmm") != std::string::npos);
  CHECK(table.find("70.000us") != std::string::npos);
  CHECK(table.find("Self CPU time total: 130.000us") != std::string::npos);
  CHECK(averages.table("count", -1).find("aten::relu") != std::string::npos);
  CHECK(error_of([&] { averages.table("self_gpu_time"); }).find("self_cpu_time_total, cpu_time_total") !=
        std::string::npos);
}

TEST_CASE("Profiler stops at the end of its scope and, with output_trace_dir, waits for every process") {
  TempDir dir;
  FakeAccelerator accelerator{2};
  {
    acc::Profiler prof(accelerator, acc::ProfileOptions().output_trace_dir(dir.path.string()));
    at::mm(a, b);
    prof.step();
  }
  CHECK(accelerator.barriers == 1);
  CHECK(count_in_trace(read_trace(dir.path / "profile_2.json"), "aten::mm") == 1);

  acc::Profiler prof(accelerator, acc::ProfileOptions());
  at::mm(a, b);
  prof.stop();
  prof.stop();
  CHECK(accelerator.barriers == 1);  // no trace file, nothing to wait for
  CHECK(prof.key_averages().find("aten::mm")->count == 1);
  CHECK(error_of([&] { prof.step(); }).find("after stop()") != std::string::npos);
}

TEST_CASE("bad profile options are errors that name the option and the fix") {
  const auto error = [](const acc::ProfileOptions& options) {
    return error_of([&] { acc::ProfilerSession(options, 0, false); });
  };
  CHECK(error(acc::ProfileOptions().schedule(acc::ProfileSchedule().wait(1).warmup(1))) ==
        "ProfileSchedule's active is 0; it must be at least 1, e.g. ProfileSchedule().wait(1).warmup(1).active(3)");
  CHECK(error(acc::ProfileOptions().schedule(acc::ProfileSchedule().wait(-1).active(1))).find("wait is -1") !=
        std::string::npos);
  CHECK(error(acc::ProfileOptions().activities({"cpu", "tpu"})) ==
        "ProfileOptions' activities hold \"tpu\", which this profiler does not know: use \"cpu\" and/or \"cuda\"");
  CHECK(error(acc::ProfileOptions().activities({})).find("activities are empty") != std::string::npos);
  CHECK(error(acc::ProfileOptions().activities({"cuda"})).find("runs on the CPU: add \"cpu\"") != std::string::npos);

  TempDir dir;
  write_text(dir.path / "file", "not a directory");
  const auto unusable = (dir.path / "file" / "traces").string();
  const auto message = error(acc::ProfileOptions().output_trace_dir(unusable));
  CHECK(message.find("cannot create ProfileOptions' output_trace_dir '" + unusable + "'") == 0);
  CHECK(message.find("pass a directory this process may create and write in") != std::string::npos);
}

// acc launch --tee and the launcher's own output: a reader that is slow or has stopped never holds
// up supervision; what it cannot take is dropped, counted and said.
#include "launcher_process.hpp"
#include "output_stream.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

using namespace acc::cli;
using namespace acc::cli::test;
using namespace std::chrono_literals;

TEST_CASE("acc launch --tee prefixes every line with its rank and keeps stdout and stderr apart") {
  const LauncherResult result = run_acc({"launch", "--tee", "--num_processes", "2", kProbe, "print-lines"});
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 0);
  for (int rank : {0, 1}) {
    CAPTURE(rank);
    const std::string prefix = "[rank " + std::to_string(rank) + "] ";
    std::vector<std::string> out, err;
    for (const std::string& line : lines_of(result.out))
      if (line.rfind(prefix, 0) == 0) out.push_back(line.substr(prefix.size()));
    for (const std::string& line : lines_of(result.err))
      if (line.rfind(prefix, 0) == 0) err.push_back(line.substr(prefix.size()));
    CHECK(out == std::vector<std::string>{"out line 1", "out line 2", "no newline at end"});
    CHECK(err == std::vector<std::string>{"err line 1"});
  }
  CHECK(lines_of(result.out).size() == 6);  // nothing without a prefix
  CHECK(lines_of(result.err).size() == 2);
}

// Rank 0 prints without end while the test never reads acc launch's stdout: the pipe fills, and
// before acc launch stopped waiting on its output it blocked in write() for good.
TEST_CASE("--tee with a stdout nobody reads: a rank that fails still ends the job promptly with its code") {
  PidFile pids;
  Launcher launcher({"launch", "--tee", "--cpu", "--num_processes", "2", kProbe, "wait-for-pids", "2", "flood-on-rank",
                     "0", "1", "sleep", "0.5", "exit-on-rank", "1", "3", "sleep", "60"},
                    {pids.variable()}, Unread::stdout_pipe);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  // Rank 1 fails after 0.5 s; then acc launch waits at most 2 s for a reader that takes nothing.
  MESSAGE("acc launch ran " << result.seconds << " s with a stdout nobody read");
  CAPTURE(result.err);
  CHECK(result.seconds < 4.0);
  CHECK(result.exit_code == 3);
  CHECK(result.err.find(") exited with code 3; stopping the other 1 rank(s)\n") != std::string::npos);
  CHECK(result.err.find("acc launch: stdout has not been read for 2 s; exiting without the last ") !=
        std::string::npos);
  REQUIRE(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

TEST_CASE("--tee with a stdout nobody reads: SIGTERM still ends acc launch and every rank") {
  PidFile pids;
  Launcher launcher({"launch", "--tee", "--cpu", "--num_processes", "2", kProbe, "wait-for-pids", "2", "flood-on-rank",
                     "0", "1", "sleep", "60"},
                    {pids.variable()}, Unread::stdout_pipe);
  REQUIRE(pids.wait_for(2, 5s));
  std::this_thread::sleep_for(300ms);  // rank 0 has filled the pipe by far
  const auto signalled = Clock::now();
  kill(launcher.pid(), SIGTERM);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  CHECK(result.exit_code == 128 + SIGTERM);
  // The ranks stop at once; then at most 2 s for the reader.
  CHECK(std::chrono::duration<double>(Clock::now() - signalled).count() < 3.5);
  CHECK(result.err.find("acc launch: received SIGTERM; passing it on to 2 rank(s)\n") != std::string::npos);
  check_none_left(pids.pids());
}

// Without --tee the ranks write to acc launch's stderr themselves: rank 0 fills it and blocks, which
// is its own affair, but acc launch's report of rank 1's failure must not block it as well.
TEST_CASE("a stderr nobody reads does not keep acc launch from reporting a failed rank and ending the job") {
  PidFile pids;
  Launcher launcher({"launch", "--cpu", "--num_processes", "2", kProbe, "wait-for-pids", "2", "flood-on-rank", "0", "2",
                     "sleep", "0.5", "exit-on-rank", "1", "3", "sleep", "60"},
                    {pids.variable()}, Unread::stderr_pipe);
  const LauncherResult result = launcher.wait(10s);
  REQUIRE(result.finished_in_time);
  // Rank 1 fails after 0.5 s; then acc launch waits at most 2 s for a reader that takes nothing.
  CHECK(result.seconds < 4.0);
  CHECK(result.exit_code == 3);
  REQUIRE(pids.pids().size() == 2);
  check_none_left(pids.pids());
}

namespace {

// Reads what `fd` holds until `stream` has nothing waiting and the pipe stays empty.
std::string read_until_idle(int fd, const OutputStream& stream) {
  std::string text;
  while (true) {
    pollfd readable{fd, POLLIN, 0};
    if (poll(&readable, 1, 50) > 0) {
      char buffer[65536];
      const ssize_t count = read(fd, buffer, sizeof buffer);
      REQUIRE(count > 0);
      text.append(buffer, static_cast<std::size_t>(count));
    } else if (stream.idle()) {
      return text;
    }
  }
}

}  // namespace

TEST_CASE(
    "OutputStream never blocks: beyond its bound it drops whole lines and notes how many where they are missing") {
  int ends[2];
  REQUIRE(pipe2(ends, O_CLOEXEC) == 0);
  constexpr int kLines = 20000;
  std::string text;
  std::size_t dropped = 0;
  {
    OutputStream stream(ends[1], "the test pipe", 1000);
    const auto start = Clock::now();
    for (int line = 0; line < kLines; ++line) stream.write(std::to_string(line) + "\n");
    // 20000 lines of about 5 bytes exceed the pipe (64 KiB) and the bound together, and nobody reads yet.
    CHECK(std::chrono::duration<double>(Clock::now() - start).count() < 1.0);
    text = read_until_idle(ends[0], stream);
    stream.write("last\n");  // the note about the last lines dropped comes before it
    text += read_until_idle(ends[0], stream);
    dropped = stream.dropped_lines();
  }
  close(ends[1]);
  close(ends[0]);

  CHECK(dropped > 0);
  const std::string note_start = "acc launch: ";
  const std::string note_end =
      " line(s) dropped here: the test pipe was not read fast enough (at most 1000 bytes wait to be written)";
  int expected = 0;
  std::size_t noted = 0;
  for (const std::string& line : lines_of(text)) {
    if (line.rfind(note_start, 0) == 0) {
      REQUIRE(line.size() > note_start.size() + note_end.size());
      CHECK(line.substr(line.size() - note_end.size()) == note_end);
      const int count = std::stoi(line.substr(note_start.size()));
      expected += count;
      noted += static_cast<std::size_t>(count);
    } else if (line == "last") {
      CHECK(expected == kLines);  // every line before it written or noted
    } else {
      CHECK(line == std::to_string(expected));  // in order, gaps only where a note says
      ++expected;
    }
  }
  CHECK(noted == dropped);
  CHECK(lines_of(text).back() == "last");
}

TEST_CASE("OutputStream discards what comes after its reader went away, without calling it dropped") {
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;  // as acc launch does: EPIPE rather than death
  sigaction(SIGPIPE, &ignore, &previous);
  int ends[2];
  REQUIRE(pipe2(ends, O_CLOEXEC) == 0);
  close(ends[0]);
  {
    OutputStream stream(ends[1], "the test pipe", 100);
    stream.write("the write that finds the reader gone\n");
    while (!stream.idle()) std::this_thread::sleep_for(1ms);
    // Longer than the bound: dropped, were the reader still there.
    for (int line = 0; line < 10; ++line) stream.write(std::string(200, 'x') + "\n");
    CHECK(stream.idle());
    CHECK(stream.dropped_lines() == 0);
  }
  close(ends[1]);
  sigaction(SIGPIPE, &previous, nullptr);
}

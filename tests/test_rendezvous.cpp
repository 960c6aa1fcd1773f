// The rendezvous against peers that stall instead of dying: a server on MASTER_PORT that accepts
// connections but never answers, and a MASTER_ADDR that does not resolve. Each must end in an
// acc::Error naming the rank and the address, within the timeout (plus the few seconds that
// starting the store takes), never a hang. Loopback only.
#include "pch.hpp"  // first: libtorch, then doctest

#include "error_of.hpp"

#include <acc/comm/network.hpp>
#include <acc/comm/rendezvous.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A TCP port on 127.0.0.1 that accepts connections (the kernel completes them from the listen
// backlog) and never reads or answers: what a stopped rank 0, or a foreign service, looks like.
class SilentListener {
 public:
  SilentListener() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

acc::ProcessEnvironment job(int rank, const std::string& host, int port) {
  acc::ProcessEnvironment env;
  env.rank = rank;
  env.world_size = 2;
  env.master_addr = host;
  env.master_port = port;
  return env;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a service on MASTER_PORT that accepts but never answers: the rank fails within the timeout, naming it") {
  SilentListener silent;
  const auto started = Clock::now();
  const auto error = error_of([&] { acc::rendezvous(job(1, "127.0.0.1", silent.port()), 2s); });
  const auto waited = Clock::now() - started;
  CAPTURE(error);
  CHECK(contains(error, "rank 1: the rendezvous store at 127.0.0.1:" + std::to_string(silent.port()) +
                            " did not answer within 2 s"));
  CHECK(contains(error, "rank 0, which serves it, is stopped or hung, or another program listens on that port"));
  // The store's own operations are bounded by the 2 s timeout; 3 s more covers starting it.
  CHECK(waited >= 2s);
  CHECK(waited < 5s);
}

// What libtorch 2.x's TCPStore constructor does against such a server (a validation and a ping with
// no timeout), done by hand: a receive that would never end must end once the deadline passes.
TEST_CASE("a store client's connection that gets no answer is shut down at the deadline") {
  SilentListener silent;
  const auto before = acc::detail::open_sockets();
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(silent.port()));
  REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  const auto started = Clock::now();
  bool expired = false;
  {
    acc::detail::StoreConnectDeadline deadline(before, silent.port(), 1s);
    char byte = 0;
    CHECK(::recv(client, &byte, 1, 0) <= 0);  // 0 (shut down), never a byte: nobody sends one
    expired = deadline.expired();
  }
  const auto waited = Clock::now() - started;
  ::close(client);
  CHECK(expired);
  CHECK(waited >= 1s);
  // The watcher wakes at the deadline; 4 s more covers a loaded machine's scheduling.
  CHECK(waited < 5s);
}

TEST_CASE("a store client that connects in time is left alone by the deadline") {
  SilentListener silent;
  const auto before = acc::detail::open_sockets();
  const auto started = Clock::now();
  {
    acc::detail::StoreConnectDeadline deadline(before, silent.port(), 30s);
    CHECK_FALSE(deadline.expired());
  }
  // Ending the guard ends its watcher at once, not after the 30 s.
  CHECK(Clock::now() - started < 5s);
}

TEST_CASE("a MASTER_ADDR that does not resolve fails at once on every rank, naming the host") {
  for (const int rank : {0, 1}) {
    CAPTURE(rank);
    const auto started = Clock::now();
    const auto error = error_of([&] { acc::rendezvous(job(rank, "no-such-host.invalid", 29473), 30s); });
    CAPTURE(error);
    CHECK(contains(error, "rank " + std::to_string(rank) + ": cannot resolve MASTER_ADDR 'no-such-host.invalid'"));
    CHECK(contains(error, "--main_process_ip"));
    // One name lookup, not the 30 s timeout; 5 s covers a slow resolver's answer.
    CHECK(Clock::now() - started < 5s);
  }
}

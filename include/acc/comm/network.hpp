// The few socket-level things the communicators need: resolving MASTER_ADDR once and at once, the
// local address that routes to it, and a bound on every wait of the store's client sockets.
#pragma once

#include <acc/error.hpp>

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace acc::detail {

struct AddressesDeleter {
  void operator()(addrinfo* addresses) const { freeaddrinfo(addresses); }
};
using Addresses = std::unique_ptr<addrinfo, AddressesDeleter>;

// The addresses of MASTER_ADDR. A name that does not resolve is an error now, naming it: left to
// the store, it would be retried for the whole rendezvous timeout and then reported as a port
// problem.
inline Addresses resolve_master_addr(const std::string& host, int port, int socket_type) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socket_type;
  addrinfo* found = nullptr;
  const int status = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (status != 0 || !found)
    throw Error("cannot resolve MASTER_ADDR '" + host + "' (" + gai_strerror(status) +
                "); set it (acc launch --main_process_ip) to an IP address or host name of rank 0's machine "
                "that every machine of the job resolves");
  return Addresses(found);
}

// The address of this machine that routes to `host` (no packet is sent: connecting a UDP socket
// only picks the route), so that peers on other machines can reach us.
inline std::string local_address_towards(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || !found)
    throw Error("cannot resolve MASTER_ADDR '" + host + "' to an IPv4 address; set it to an IP address or host name");
  const Addresses addresses(found);
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in local{};
  socklen_t length = sizeof(local);
  const bool ok = fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw Error("no network route to MASTER_ADDR '" + host + "'; check the address or set GLOO_SOCKET_IFNAME");
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &local.sin_addr, text, sizeof(text));
  return text;
}

// The file descriptors open in this process that are sockets.
inline std::set<int> open_sockets() {
  std::set<int> sockets;
  const std::unique_ptr<DIR, int (*)(DIR*)> listing(opendir("/proc/self/fd"), closedir);
  if (!listing) return sockets;
  while (const dirent* entry = readdir(listing.get())) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    struct stat status {};
    if (*end == '\0' && end != entry->d_name && fstat(static_cast<int>(fd), &status) == 0 && S_ISSOCK(status.st_mode))
      sockets.insert(static_cast<int>(fd));
  }
  return sockets;
}

inline int peer_port(int fd) {
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) != 0) return -1;
  if (peer.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(peer).sin_port);
  if (peer.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(peer).sin6_port);
  return -1;
}

// Bounds every send and receive on the sockets opened since `before` that are connected to
// `port` (a c10d::TCPStore's client connections): a store operation whose server never answers
// (rank 0 stopped, or another program on MASTER_PORT) then fails after `timeout` instead of
// waiting forever. libtorch bounds only the store's waits itself (1.13 sets a receive timeout
// only inside wait(), 2.x polls only there); add() and check() would block in recv. Returns how
// many sockets it bounded.
inline int bound_store_sockets(const std::set<int>& before, int port, std::chrono::milliseconds timeout) {
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval limit{};
  limit.tv_sec = static_cast<time_t>(micros / 1000000);
  limit.tv_usec = static_cast<suseconds_t>(micros % 1000000);
  int bounded = 0;
  for (const int fd : open_sockets())
    if (!before.count(fd) && peer_port(fd) == port &&
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit)) == 0 &&
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit)) == 0)
      ++bounded;
  return bounded;
}

// Bounds the connection of a c10d::TCPStore client: libtorch 2.x's constructor exchanges a
// validation and a ping with the server with no timeout of its own, so a server that accepts and
// never answers would hold it forever. Once `timeout` has passed and until this guard ends, the
// client sockets opened since `before` that are connected to `port` are shut down, which turns the
// wait into an error; expired() then says that the constructor's outcome is void.
class StoreConnectDeadline {
 public:
  StoreConnectDeadline(std::set<int> before, int port, std::chrono::milliseconds timeout)
      : watcher_([this, before = std::move(before), port, timeout] {
          std::unique_lock<std::mutex> lock(mutex_);
          if (ended_.wait_for(lock, timeout, [this] { return done_; })) return;
          expired_ = true;
          // The constructor may connect again after a failed exchange: keep ending new sockets.
          do {
            for (const int fd : open_sockets())
              if (!before.count(fd) && peer_port(fd) == port) ::shutdown(fd, SHUT_RDWR);
          } while (!ended_.wait_for(lock, std::chrono::milliseconds(50), [this] { return done_; }));
        }) {}
  ~StoreConnectDeadline() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    ended_.notify_all();
    watcher_.join();
  }
  StoreConnectDeadline(const StoreConnectDeadline&) = delete;
  StoreConnectDeadline& operator=(const StoreConnectDeadline&) = delete;

  bool expired() {
    std::lock_guard<std::mutex> lock(mutex_);
    return expired_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ended_;
  bool done_ = false;
  bool expired_ = false;
  std::thread watcher_;  // last: it starts once the members above exist
};

}  // namespace acc::detail

#pragma once

#include <acc/comm/network.hpp>
#include <acc/comm/rendezvous.hpp>
#include <acc/error.hpp>

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace acc {

namespace detail {

inline std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace detail

ACC_DECL c10::intrusive_ptr<c10d::Store> rendezvous(const ProcessEnvironment& env, std::chrono::milliseconds timeout) {
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  const std::string me = "rank " + std::to_string(env.rank);
  const std::string seconds = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count());
  try {
    detail::resolve_master_addr(env.master_addr, env.master_port, SOCK_STREAM);
  } catch (const Error& e) {
    throw Error(me + ": " + e.what());
  }
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = c10::nullopt;  // arrivals are counted below, to name the missing ranks
  options.waitWorkers = false;
  options.timeout = timeout;
  const auto sockets_before = detail::open_sockets();
  c10::intrusive_ptr<c10d::Store> store;
  const std::string no_answer = me + ": the rendezvous store at " + where + " did not answer within " + seconds + " s";
  const std::string no_answer_causes =
      ": rank 0, which serves it, is stopped or hung, or another program listens on that port; "
      "check rank 0 and MASTER_ADDR/MASTER_PORT (--main_process_ip/--main_process_port)";
  try {
    detail::StoreConnectDeadline deadline(sockets_before, env.master_port, timeout);
    try {
      store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    } catch (const std::exception&) {
      if (deadline.expired()) throw Error(no_answer + " (while connecting)" + no_answer_causes);
      throw;
    }
    if (deadline.expired()) throw Error(no_answer + " (while connecting)" + no_answer_causes);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    if (env.rank == 0)
      throw Error("rank 0 could not serve the rendezvous at " + where + ": " + e.what() +
                  "; choose a free port (acc launch --main_process_port 0 picks one)");
    throw Error(me + " could not reach the rendezvous at " + where + " within " + seconds +
                " s: is rank 0 running, and are MASTER_ADDR/MASTER_PORT (--main_process_ip/port) right?");
  }
  detail::bound_store_sockets(sockets_before, env.master_port, timeout);

  try {
    store->set("acc/arrived/" + std::to_string(env.rank), detail::bytes_of("1"));
    const int64_t arrived = store->add("acc/arrivals", 1);
    if (arrived > env.world_size)
      throw Error("more than WORLD_SIZE=" + std::to_string(env.world_size) + " processes joined the rendezvous at " +
                  where + "; is another job using the same MASTER_PORT?");
    if (env.rank == 0) {
      const auto deadline = std::chrono::steady_clock::now() + timeout;
      while (store->add("acc/arrivals", 0) < env.world_size) {
        if (std::chrono::steady_clock::now() > deadline) {
          std::string missing;
          int count = 0;
          for (int r = 0; r < env.world_size; ++r)
            if (!store->check({"acc/arrived/" + std::to_string(r)})) {
              missing += (count++ ? ", " : "") + std::to_string(r);
            }
          const std::string message = std::to_string(count) + " of " + std::to_string(env.world_size) +
                                      " ranks never joined the rendezvous at " + where + " within " + seconds +
                                      " s (missing: " + missing + ")";
          store->set("acc/failed", detail::bytes_of(message));
          throw Error(message +
                      "; check that every node was started (same --num_processes, --num_machines, "
                      "--main_process_ip, --main_process_port) or raise --rdzv_timeout");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      store->set("acc/ready", detail::bytes_of("1"));
    } else {
      try {
        store->wait({"acc/ready"}, timeout);
      } catch (const std::exception&) {
        throw Error(me + ": the rendezvous at " + where + " did not complete within " + seconds +
                    " s; some ranks never joined (rank 0's error lists them), or rank 0 stopped answering");
      }
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string cause = e.what();
    throw Error(no_answer + " (" + cause.substr(0, cause.find('\n')) + ")" + no_answer_causes);
  }
  return store;
}

ACC_DECL c10::intrusive_ptr<c10d::Store> job_store(const ProcessEnvironment& env) {
  static std::mutex mutex;
  static c10::intrusive_ptr<c10d::Store> store;
  std::lock_guard<std::mutex> lock(mutex);
  if (!store)
    store = env.world_size == 1 ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::HashStore>())
                                : rendezvous(env, env.rendezvous_timeout);
  return store;
}

}  // namespace acc

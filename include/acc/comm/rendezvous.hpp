// Rendezvous: every rank of the job meets at a c10d TCPStore served by rank 0 at
// MASTER_ADDR:MASTER_PORT. A rank that never arrives ends the wait with an error that says which.
#pragma once

#include <acc/config/environment.hpp>
#include <acc/detail/linkage.hpp>

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace acc {

// Connects to (rank 0: serves) the job's store and returns once all ranks have arrived. Every
// store operation, here and later (communicators, debug mode), fails after `timeout` when the
// store does not answer, naming this rank and the address.
ACC_DECL c10::intrusive_ptr<c10d::Store> rendezvous(const ProcessEnvironment& env, std::chrono::milliseconds timeout);

// The job's store: the first call makes the rendezvous (an in-process store when the job has one
// process), later calls return the same store. Communicators take their key spaces in it.
// Every operation on it is bounded by env.rendezvous_timeout.
ACC_DECL c10::intrusive_ptr<c10d::Store> job_store(const ProcessEnvironment& env);

}  // namespace acc

#if !defined(ACC_SEPARATE_COMPILATION)
#include <acc/comm/impl/rendezvous.ipp>
#endif

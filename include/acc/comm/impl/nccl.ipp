#pragma once

#include <acc/comm/nccl.hpp>

#if ACC_HAS_NCCL
#include <acc/comm/collective_ledger.hpp>

#include <acc/detail/impl/cuda_event.ipp>

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace acc {

namespace detail {

inline ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kDouble:
      return ncclFloat64;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kChar:
      return ncclInt8;
    case at::kByte:
    case at::kBool:
      return ncclUint8;
    default:
      throw Error(std::string("NCCL has no collective for tensors of type ") + c10::toString(t.scalar_type()));
  }
}

inline ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::mean:
      return ncclAvg;
    case ReduceOp::max:
      return ncclMax;
    case ReduceOp::min:
      return ncclMin;
    default:
      return ncclSum;
  }
}

inline void require_dense(const at::Tensor& t, const char* what) {
  if (!t.is_cuda() || !t.is_contiguous())
    throw Error(std::string("Nccl::") + what +
                " needs a contiguous CUDA tensor; move it with .to(accelerator.device())");
}

}  // namespace detail

struct Nccl::State {
  // A collective the watchdog waits for: done when its event is.
  struct Watched {
    uint64_t sequence;
    detail::Collective collective;
    cudaEvent_t done;
    std::chrono::steady_clock::time_point started;
  };

  State(const c10::intrusive_ptr<c10d::Store>& job_store, const ProcessGroupOptions& process_group,
        const RankGroup& group, c10::Device device)
      : who(group.who()),
        device(device),
        store(detail::communicator_store(job_store, group)),
        ledger(group, process_group, store),
        side_stream(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())) {}

  // Numbers the collective (comparing it across ranks in debug mode), queues it on `stream` with
  // call(comm, stream), and hands it to the watchdog.
  template <class Call>
  void enqueue(detail::Collective collective, cudaStream_t stream, const char* call_name, Call&& call) {
    throw_if_failed();
    const uint64_t sequence = ledger.begin(collective);
    c10::cuda::CUDAGuard guard(device);  // autograd's device threads call this too
    {
      // NCCL calls on one communicator must not overlap the watchdog's abort.
      std::lock_guard<std::timed_mutex> lock(comm_mutex);
      if (!comm) throw_if_failed();
      check(call(comm, stream), call_name);
    }
    // Captured into a CUDA graph (acc::capture_step), it runs at each replay, not now: there is
    // nothing to watch yet, and querying an event recorded in a capture is an error.
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capturing) == cudaSuccess && capturing != cudaStreamCaptureStatusNone) return;
    watch(sequence, std::move(collective), stream, call_name);
  }

  // Hands the work queued on `stream` so far to the watchdog as `collective`.
  void watch(uint64_t sequence, detail::Collective collective, cudaStream_t stream, const char* call_name) {
    cudaEvent_t done = take_event();
    if (cudaEventRecord(done, stream) != cudaSuccess) {
      cudaEventDestroy(done);
      throw Error(who + ": could not record a CUDA event behind " + call_name);
    }
    std::lock_guard<std::mutex> lock(watch_mutex);
    watched.push_back({sequence, std::move(collective), done, std::chrono::steady_clock::now()});
    if (watched.size() == 1) watch_wake.notify_one();
  }

  // Queues the collective on the current stream of this communicator's device.
  template <class Call>
  void enqueue_here(detail::Collective collective, const char* call_name, Call&& call) {
    enqueue(std::move(collective), c10::cuda::getCurrentCUDAStream(device.index()).stream(), call_name,
            std::forward<Call>(call));
  }

  // Runs the collective on the side stream after the work queued so far on the caller's stream.
  template <class Call>
  Pending on_side_stream(Nccl& owner, detail::Collective collective, const char* call_name, Call&& call) {
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(c10::cuda::getCurrentCUDAStream(device.index()));
    inputs_ready.block(side_stream);
    enqueue(std::move(collective), side_stream.stream(), call_name, std::forward<Call>(call));
    Pending pending(owner);
    pending.done().event.record(side_stream);
    return pending;
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(watch_mutex);
      if (!spare_events.empty()) {
        const cudaEvent_t event = spare_events.back();
        spare_events.pop_back();
        return event;
      }
    }
    cudaEvent_t event;
    if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess)
      throw Error(who + ": could not create a CUDA event to watch NCCL collectives");
    return event;
  }

  void watch_loop() {
    cudaSetDevice(device.index());
    std::unique_lock<std::mutex> lock(watch_mutex);
    while (!stopping) {
      if (watched.empty()) {
        watch_wake.wait(lock, [&] { return stopping || !watched.empty(); });
        continue;
      }
      if (const auto failure = find_failure()) {
        lock.unlock();
        abort_with(*failure);
        return;
      }
      watch_wake.wait_for(lock, std::chrono::milliseconds(20), [&] { return stopping; });
    }
  }

  // Drops the finished collectives (under watch_mutex); returns the message of one that failed
  // or ran out of time.
  std::optional<std::string> find_failure() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = watched.begin(); it != watched.end();) {
      const cudaError_t state = cudaEventQuery(it->done);
      if (state == cudaSuccess) {
        spare_events.push_back(it->done);
        it = watched.erase(it);
        continue;
      }
      if (state != cudaErrorNotReady)
        return ledger.failure(it->sequence, it->collective, now - it->started,
                              std::string("CUDA error: ") + cudaGetErrorString(state));
      if (now - it->started >= ledger.timeout())
        return ledger.failure(it->sequence, it->collective, now - it->started, "");
      ++it;
    }
    if (watched.empty()) return std::nullopt;
    // A peer that died or a network error: NCCL says so before the timeout.
    std::unique_lock<std::timed_mutex> comm_lock(comm_mutex, std::try_to_lock);
    ncclResult_t async = ncclSuccess;
    if (comm_lock.owns_lock() && comm && ncclCommGetAsyncError(comm, &async) == ncclSuccess && async != ncclSuccess) {
      const auto& oldest = watched.front();
      return ledger.failure(oldest.sequence, oldest.collective, now - oldest.started,
                            std::string("NCCL: ") + ncclGetErrorString(async));
    }
    return std::nullopt;
  }

  void abort_with(const std::string& message) {
    std::unique_lock<std::timed_mutex> lock(comm_mutex, std::defer_lock);
    if (!lock.try_lock_for(std::chrono::seconds(10))) {
      // The caller's thread is inside an NCCL call that cannot return before the stuck collective
      // does (CUDA's launch queue is full): aborting under it is undefined, waiting is a hang.
      std::fprintf(stderr, "acc: %s; this process ends now: a thread is blocked inside NCCL\n", message.c_str());
      std::_Exit(EXIT_FAILURE);
    }
    failure = message + "; the NCCL communicator was aborted";
    failed.store(true, std::memory_order_release);
    std::fprintf(stderr, "acc: %s\n", failure.c_str());
    ncclCommAbort(comm);
    comm = nullptr;
  }

  void throw_if_failed() const {
    if (failed.load(std::memory_order_acquire)) throw Error(failure);
  }
  void check(ncclResult_t result, const char* call) const {
    if (result != ncclSuccess) throw Error(who + ": " + call + " failed: " + ncclGetErrorString(result));
  }

  std::string who;  // this process in messages: its global rank
  c10::Device device;
  c10::intrusive_ptr<c10d::Store> store;  // this communicator's key space
  detail::CollectiveLedger ledger;
  c10::cuda::CUDAStream side_stream;
  std::timed_mutex comm_mutex;  // guards comm between the caller's NCCL calls and the abort
  ncclComm_t comm = nullptr;
  // The watchdog's state, under watch_mutex.
  std::mutex watch_mutex;
  std::condition_variable watch_wake;
  std::deque<Watched> watched;
  std::vector<cudaEvent_t> spare_events;
  bool stopping = false;
  std::thread watchdog;
  // Set once, by the watchdog, before failed.
  std::string failure;
  std::atomic<bool> failed{false};
};

ACC_DECL Nccl::Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
                    const ProcessGroupOptions& process_group, const RankGroup& group)
    : rank_(group.rank()),
      world_size_(group.size()),
      device_(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)),
      state_(std::make_unique<State>(job_store, process_group, group, device_)) {
  // From here on this process works on its own GPU (what torch.cuda.set_device does); not a
  // scoped guard, which would give the previous device back when the constructor returns.
  c10::cuda::set_device(device_.index());
  ncclUniqueId id;
  if (rank_ == 0) {
    state_->check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    const auto* raw = reinterpret_cast<const uint8_t*>(&id);
    state_->store->set("nccl/unique_id", std::vector<uint8_t>(raw, raw + sizeof(id)));
  } else {
    const auto raw = state_->store->get("nccl/unique_id");
    if (raw.size() != sizeof(id)) throw Error("the rendezvous store holds a malformed NCCL id; restart the job");
    std::memcpy(&id, raw.data(), sizeof(id));
  }
  state_->check(ncclCommInitRank(&state_->comm, world_size_, id, rank_), "ncclCommInitRank");
  state_->watchdog = std::thread([state = state_.get()] { state->watch_loop(); });
}

ACC_DECL Nccl::~Nccl() {
  auto& s = *state_;
  {
    std::lock_guard<std::mutex> lock(s.watch_mutex);
    s.stopping = true;
  }
  s.watch_wake.notify_all();
  s.watchdog.join();
  bool unfinished = false;
  for (const auto& w : s.watched) {
    unfinished = unfinished || cudaEventQuery(w.done) != cudaSuccess;
    cudaEventDestroy(w.done);
  }
  for (const auto event : s.spare_events) cudaEventDestroy(event);
  // A collective still queued may never finish (a peer is gone): abort rather than wait for it.
  if (s.comm) unfinished ? ncclCommAbort(s.comm) : ncclCommDestroy(s.comm);
}

ACC_DECL uint64_t Nccl::sequence() const { return state_->ledger.started(); }

ACC_DECL void Nccl::throw_if_failed() const { state_->throw_if_failed(); }

ACC_DECL void Nccl::watch_queued_work(const char* what) {
  state_->throw_if_failed();
  state_->watch(state_->ledger.started(), detail::Collective(what),
                c10::cuda::getCurrentCUDAStream(device_.index()).stream(), what);
}

ACC_DECL void Nccl::Pending::wait() {
  owner_->throw_if_failed();
  done_->event.block(c10::cuda::getCurrentCUDAStream(owner_->device_.index()));
}

ACC_DECL void Nccl::all_reduce(at::Tensor& tensor, ReduceOp op) {
  detail::require_dense(tensor, "all_reduce");
  state_->enqueue_here(detail::Collective("all_reduce", tensor, op), "ncclAllReduce",
                       [&](ncclComm_t comm, cudaStream_t stream) {
                         return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                              detail::nccl_type(tensor), detail::nccl_op(op), comm, stream);
                       });
}

ACC_DECL Nccl::Pending Nccl::all_reduce_async(at::Tensor& tensor, ReduceOp op) {
  detail::require_dense(tensor, "all_reduce");
  return state_->on_side_stream(
      *this, detail::Collective("all_reduce", tensor, op), "ncclAllReduce", [&](ncclComm_t comm, cudaStream_t stream) {
        return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                             detail::nccl_type(tensor), detail::nccl_op(op), comm, stream);
      });
}

ACC_DECL Nccl::Pending Nccl::all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
  detail::require_dense(output, "all_gather_into");
  detail::require_dense(input, "all_gather_into");
  return state_->on_side_stream(
      *this, detail::Collective("all_gather_into", input), "ncclAllGather", [&](ncclComm_t comm, cudaStream_t stream) {
        return ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                             detail::nccl_type(input), comm, stream);
      });
}

ACC_DECL Nccl::Pending Nccl::reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
  detail::require_dense(output, "reduce_scatter");
  detail::require_dense(input, "reduce_scatter");
  return state_->on_side_stream(*this, detail::Collective("reduce_scatter", input, op), "ncclReduceScatter",
                                [&](ncclComm_t comm, cudaStream_t stream) {
                                  return ncclReduceScatter(input.data_ptr(), output.data_ptr(),
                                                           static_cast<size_t>(output.numel()),
                                                           detail::nccl_type(input), detail::nccl_op(op), comm, stream);
                                });
}

ACC_DECL void Nccl::broadcast(at::Tensor& tensor, int root) {
  detail::require_dense(tensor, "broadcast");
  state_->enqueue_here(detail::Collective("broadcast", tensor, std::nullopt, root), "ncclBroadcast",
                       [&](ncclComm_t comm, cudaStream_t stream) {
                         return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                              detail::nccl_type(tensor), root, comm, stream);
                       });
}

ACC_DECL std::vector<at::Tensor> Nccl::all_gather(const at::Tensor& tensor) {
  const auto input = tensor.contiguous();
  detail::require_dense(input, "all_gather");
  auto sizes = input.sizes().vec();
  sizes.insert(sizes.begin(), world_size_);
  auto output = at::empty(sizes, input.options());
  state_->enqueue_here(detail::Collective("all_gather", input), "ncclAllGather",
                       [&](ncclComm_t comm, cudaStream_t stream) {
                         return ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                                              detail::nccl_type(input), comm, stream);
                       });
  return output.unbind(0);
}

ACC_DECL void Nccl::barrier() {
  auto token = at::zeros({1}, at::TensorOptions(device_).dtype(at::kFloat));
  state_->enqueue_here(detail::Collective("barrier"), "ncclAllReduce", [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm, stream);
  });
  synchronize();
}

ACC_DECL void Nccl::synchronize() {
  c10::cuda::CUDAGuard guard(device_);
  at::cuda::CUDAEvent done;
  done.record(c10::cuda::getCurrentCUDAStream(device_.index()));
  while (!done.query()) {
    throw_if_failed();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  throw_if_failed();  // an aborted collective also lets the stream go on
}

}  // namespace acc

#endif

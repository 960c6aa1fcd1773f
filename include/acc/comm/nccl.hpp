// Nccl: collectives between GPUs, NCCL called directly on the current CUDA stream (no c10d
// ProcessGroup in between). The unique id travels through the rendezvous store. Built only where
// libtorch has CUDA and nccl.h is found (ACC_HAS_NCCL).
//
// Collectives run on the GPU while the host goes on, so a stuck one (a peer died or skipped it)
// would hang the job at the next synchronization. A watchdog thread polls a CUDA event recorded
// behind each collective: when one is not done within the timeout, or NCCL reports an
// asynchronous error, it aborts the communicator (ncclCommAbort: the GPU's kernels and the host's
// waits return), prints the message, and the next call on the communicator throws it.
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/comm/process_group_options.hpp>
#include <acc/comm/rank_group.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_NCCL
#include <acc/comm/collective_ledger.hpp>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/intrusive_ptr.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#endif

namespace acc {

#if ACC_HAS_NCCL

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

}  // namespace detail

// Over every rank of the job, or over a group of them (rank_group.hpp, with a unique id of its
// own): rank(), world_size() and a broadcast's root are then numbers within the group.
class Nccl {
 public:
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = true;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CUDA;  // where its tensors live

  // Over every rank of the job.
  Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store,
       const ProcessGroupOptions& process_group)
      : Nccl(env, store, process_group, RankGroup::world(env.world_size, env.rank)) {}

  // Over `group`: each member calls this with the job's store (acc::job_store), in the same order
  // as its other communicators over the same ranks. The group's rank 0 makes the unique id.
  Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& job_store,
       const ProcessGroupOptions& process_group, const RankGroup& group)
      : rank_(group.rank()),
        world_size_(group.size()),
        who_(group.who()),
        device_(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)),
        store_(detail::communicator_store(job_store, group)),
        ledger_(group, process_group, store_),
        side_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_.index())) {
    // From here on this process works on its own GPU (what torch.cuda.set_device does); not a
    // scoped guard, which would give the previous device back when the constructor returns.
    c10::cuda::set_device(device_.index());
    ncclUniqueId id;
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      const auto* raw = reinterpret_cast<const uint8_t*>(&id);
      store_->set("nccl/unique_id", std::vector<uint8_t>(raw, raw + sizeof(id)));
    } else {
      const auto raw = store_->get("nccl/unique_id");
      if (raw.size() != sizeof(id)) throw Error("the rendezvous store holds a malformed NCCL id; restart the job");
      std::memcpy(&id, raw.data(), sizeof(id));
    }
    check(ncclCommInitRank(&comm_, world_size_, id, rank_), "ncclCommInitRank");
    watchdog_ = std::thread([this] { watch_loop(); });
  }
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;
  ~Nccl() {
    {
      std::lock_guard<std::mutex> lock(watch_mutex_);
      stopping_ = true;
    }
    watch_wake_.notify_all();
    watchdog_.join();
    bool unfinished = false;
    for (const auto& w : watched_) {
      unfinished = unfinished || cudaEventQuery(w.done) != cudaSuccess;
      cudaEventDestroy(w.done);
    }
    for (const auto event : spare_events_) cudaEventDestroy(event);
    // A collective still queued may never finish (a peer is gone): abort rather than wait for it.
    if (comm_) unfinished ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
  }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return device_; }
  // Collectives started so far.
  uint64_t sequence() const { return ledger_.started(); }

  void all_reduce(at::Tensor& tensor, ReduceOp op) {
    require_dense(tensor, "all_reduce");
    enqueue(detail::Collective("all_reduce", tensor, op), stream(), "ncclAllReduce",
            [&](ncclComm_t comm, cudaStream_t s) {
              return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                   detail::nccl_type(tensor), detail::nccl_op(op), comm, s);
            });
  }

  // A collective on a stream of its own, so that it overlaps the work queued after it on the
  // caller's stream (the rest of backward, the next unit's forward); wait() makes the caller's
  // stream wait for it, or throws when the watchdog found a collective stuck.
  class Pending {
   public:
    explicit Pending(Nccl& owner) : owner_(&owner) {}
    void wait() {
      owner_->throw_if_failed();
      done_.block(c10::cuda::getCurrentCUDAStream(owner_->device_.index()));
    }
    at::cuda::CUDAEvent& done() { return done_; }

   private:
    Nccl* owner_;
    at::cuda::CUDAEvent done_;
  };

  Pending all_reduce_async(at::Tensor& tensor, ReduceOp op) {
    require_dense(tensor, "all_reduce");
    return on_side_stream(
        detail::Collective("all_reduce", tensor, op), "ncclAllReduce", [&](ncclComm_t comm, cudaStream_t stream) {
          return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                               detail::nccl_type(tensor), detail::nccl_op(op), comm, stream);
        });
  }

  // Every rank's `input` side by side in `output` (world_size times its size), on the side stream.
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
    require_dense(output, "all_gather_into");
    require_dense(input, "all_gather_into");
    return on_side_stream(
        detail::Collective("all_gather_into", input), "ncclAllGather", [&](ncclComm_t comm, cudaStream_t stream) {
          return ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                               detail::nccl_type(input), comm, stream);
        });
  }
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    require_dense(output, "reduce_scatter");
    require_dense(input, "reduce_scatter");
    return on_side_stream(detail::Collective("reduce_scatter", input, op), "ncclReduceScatter",
                          [&](ncclComm_t comm, cudaStream_t stream) {
                            return ncclReduceScatter(input.data_ptr(), output.data_ptr(),
                                                     static_cast<size_t>(output.numel()), detail::nccl_type(input),
                                                     detail::nccl_op(op), comm, stream);
                          });
  }
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  void broadcast(at::Tensor& tensor, int root) {
    require_dense(tensor, "broadcast");
    enqueue(detail::Collective("broadcast", tensor, std::nullopt, root), stream(), "ncclBroadcast",
            [&](ncclComm_t comm, cudaStream_t s) {
              return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                   detail::nccl_type(tensor), root, comm, s);
            });
  }

  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) {
    const auto input = tensor.contiguous();
    require_dense(input, "all_gather");
    auto sizes = input.sizes().vec();
    sizes.insert(sizes.begin(), world_size_);
    auto output = at::empty(sizes, input.options());
    enqueue(detail::Collective("all_gather", input), stream(), "ncclAllGather", [&](ncclComm_t comm, cudaStream_t s) {
      return ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                           detail::nccl_type(input), comm, s);
    });
    return output.unbind(0);
  }

  // Returns once every rank got here; a rank that never does ends the wait after the timeout
  // with the communicator aborted, so that the process can exit instead of hanging.
  void barrier() {
    auto token = at::zeros({1}, at::TensorOptions(device_).dtype(at::kFloat));
    enqueue(detail::Collective("barrier"), stream(), "ncclAllReduce", [&](ncclComm_t comm, cudaStream_t s) {
      return ncclAllReduce(token.data_ptr(), token.data_ptr(), 1, ncclFloat32, ncclSum, comm, s);
    });
    synchronize();
  }

  // Blocks the host until the work queued so far on the caller's stream is done; a collective
  // that fails or runs out of time ends the wait with its message (the watchdog aborted it).
  void synchronize() {
    c10::cuda::CUDAGuard guard(device_);
    at::cuda::CUDAEvent done;
    done.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    while (!done.query()) {
      throw_if_failed();
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    throw_if_failed();  // an aborted collective also lets the stream go on
  }

  // Throws the watchdog's message once it has aborted the communicator.
  void throw_if_failed() const {
    if (failed_.load(std::memory_order_acquire)) throw Error(failure_);
  }

  ncclComm_t handle() const { return comm_; }
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(device_.index()).stream(); }

 private:
  // A collective the watchdog waits for: done when its event is.
  struct Watched {
    uint64_t sequence;
    detail::Collective collective;
    cudaEvent_t done;
    std::chrono::steady_clock::time_point started;
  };

  // Numbers the collective (comparing it across ranks in debug mode), queues it on `stream` with
  // call(comm, stream), and hands it to the watchdog.
  template <class Call>
  void enqueue(detail::Collective collective, cudaStream_t stream, const char* call_name, Call&& call) {
    throw_if_failed();
    const uint64_t sequence = ledger_.begin(collective);
    c10::cuda::CUDAGuard guard(device_);  // autograd's device threads call this too
    {
      // NCCL calls on one communicator must not overlap the watchdog's abort.
      std::lock_guard<std::timed_mutex> lock(comm_mutex_);
      if (!comm_) throw_if_failed();
      check(call(comm_, stream), call_name);
    }
    cudaEvent_t done = take_event();
    if (cudaEventRecord(done, stream) != cudaSuccess) {
      cudaEventDestroy(done);
      throw Error(who_ + ": could not record a CUDA event behind " + call_name);
    }
    std::lock_guard<std::mutex> lock(watch_mutex_);
    watched_.push_back({sequence, std::move(collective), done, std::chrono::steady_clock::now()});
    if (watched_.size() == 1) watch_wake_.notify_one();
  }

  // Runs the collective on the side stream after the work queued so far on the caller's stream.
  template <class Call>
  Pending on_side_stream(detail::Collective collective, const char* call_name, Call&& call) {
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    inputs_ready.block(side_stream_);
    enqueue(std::move(collective), side_stream_.stream(), call_name, std::forward<Call>(call));
    Pending pending(*this);
    pending.done().record(side_stream_);
    return pending;
  }

  cudaEvent_t take_event() {
    {
      std::lock_guard<std::mutex> lock(watch_mutex_);
      if (!spare_events_.empty()) {
        const cudaEvent_t event = spare_events_.back();
        spare_events_.pop_back();
        return event;
      }
    }
    cudaEvent_t event;
    if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess)
      throw Error(who_ + ": could not create a CUDA event to watch NCCL collectives");
    return event;
  }

  void watch_loop() {
    cudaSetDevice(device_.index());
    std::unique_lock<std::mutex> lock(watch_mutex_);
    while (!stopping_) {
      if (watched_.empty()) {
        watch_wake_.wait(lock, [&] { return stopping_ || !watched_.empty(); });
        continue;
      }
      if (const auto failure = find_failure()) {
        lock.unlock();
        abort_with(*failure);
        return;
      }
      watch_wake_.wait_for(lock, std::chrono::milliseconds(20), [&] { return stopping_; });
    }
  }

  // Drops the finished collectives (under watch_mutex_); returns the message of one that failed
  // or ran out of time.
  std::optional<std::string> find_failure() {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = watched_.begin(); it != watched_.end();) {
      const cudaError_t state = cudaEventQuery(it->done);
      if (state == cudaSuccess) {
        spare_events_.push_back(it->done);
        it = watched_.erase(it);
        continue;
      }
      if (state != cudaErrorNotReady)
        return ledger_.failure(it->sequence, it->collective, now - it->started,
                               std::string("CUDA error: ") + cudaGetErrorString(state));
      if (now - it->started >= ledger_.timeout())
        return ledger_.failure(it->sequence, it->collective, now - it->started, "");
      ++it;
    }
    if (watched_.empty()) return std::nullopt;
    // A peer that died or a network error: NCCL says so before the timeout.
    std::unique_lock<std::timed_mutex> comm_lock(comm_mutex_, std::try_to_lock);
    ncclResult_t async = ncclSuccess;
    if (comm_lock.owns_lock() && comm_ && ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess) {
      const auto& oldest = watched_.front();
      return ledger_.failure(oldest.sequence, oldest.collective, now - oldest.started,
                             std::string("NCCL: ") + ncclGetErrorString(async));
    }
    return std::nullopt;
  }

  void abort_with(const std::string& message) {
    std::unique_lock<std::timed_mutex> lock(comm_mutex_, std::defer_lock);
    if (!lock.try_lock_for(std::chrono::seconds(10))) {
      // The caller's thread is inside an NCCL call that cannot return before the stuck collective
      // does (CUDA's launch queue is full): aborting under it is undefined, waiting is a hang.
      std::fprintf(stderr, "acc: %s; this process ends now: a thread is blocked inside NCCL\n", message.c_str());
      std::_Exit(EXIT_FAILURE);
    }
    failure_ = message + "; the NCCL communicator was aborted";
    failed_.store(true, std::memory_order_release);
    std::fprintf(stderr, "acc: %s\n", failure_.c_str());
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  void check(ncclResult_t result, const char* call) const {
    if (result != ncclSuccess) throw Error(who_ + ": " + call + " failed: " + ncclGetErrorString(result));
  }
  void require_dense(const at::Tensor& t, const char* what) const {
    if (!t.is_cuda() || !t.is_contiguous())
      throw Error(std::string("Nccl::") + what +
                  " needs a contiguous CUDA tensor; move it with .to(accelerator.device())");
  }

  int rank_;         // in the group
  int world_size_;   // the group's size
  std::string who_;  // this process in messages: its global rank
  c10::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;  // this communicator's key space
  detail::CollectiveLedger ledger_;
  c10::cuda::CUDAStream side_stream_;
  std::timed_mutex comm_mutex_;  // guards comm_ between the caller's NCCL calls and the abort
  ncclComm_t comm_ = nullptr;
  // The watchdog's state, under watch_mutex_.
  std::mutex watch_mutex_;
  std::condition_variable watch_wake_;
  std::deque<Watched> watched_;
  std::vector<cudaEvent_t> spare_events_;
  bool stopping_ = false;
  std::thread watchdog_;
  // Set once, by the watchdog, before failed_.
  std::string failure_;
  std::atomic<bool> failed_{false};
};

#else

// This build has no NCCL (libtorch without CUDA, or nccl.h not found): the tag exists so that
// code naming it compiles, and the strategies reject it with a message.
struct Nccl {
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = false;
  static constexpr c10::DeviceType device_type = c10::DeviceType::CUDA;
};

#endif

}  // namespace acc

// Nccl: collectives between GPUs, NCCL called directly on the current CUDA stream (no c10d
// ProcessGroup in between). The unique id travels through the rendezvous store. Built only where
// libtorch has CUDA and nccl.h is found (ACC_HAS_NCCL).
#pragma once

#include <acc/comm/comm.hpp>
#include <acc/config/environment.hpp>
#include <acc/detail/build_config.hpp>
#include <acc/error.hpp>

#include <string_view>

#if ACC_HAS_NCCL
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/intrusive_ptr.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <chrono>
#include <cstring>
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

class Nccl {
 public:
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = true;

  Nccl(const ProcessEnvironment& env, const c10::intrusive_ptr<c10d::Store>& store, std::chrono::milliseconds timeout)
      : rank_(env.rank),
        world_size_(env.world_size),
        device_(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank)),
        timeout_(timeout),
        side_stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_.index())) {
    // From here on this process works on its own GPU (what torch.cuda.set_device does); not a
    // scoped guard, which would give the previous device back when the constructor returns.
    c10::cuda::set_device(device_.index());
    ncclUniqueId id;
    if (rank_ == 0) {
      check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      const auto* raw = reinterpret_cast<const uint8_t*>(&id);
      store->set("acc/nccl/unique_id", std::vector<uint8_t>(raw, raw + sizeof(id)));
    } else {
      const auto raw = store->get("acc/nccl/unique_id");
      if (raw.size() != sizeof(id)) throw Error("the rendezvous store holds a malformed NCCL id; restart the job");
      std::memcpy(&id, raw.data(), sizeof(id));
    }
    check(ncclCommInitRank(&comm_, world_size_, id, rank_), "ncclCommInitRank");
  }
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;
  ~Nccl() {
    if (comm_) ncclCommDestroy(comm_);
  }

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  c10::Device device() const { return device_; }

  void all_reduce(at::Tensor& tensor, ReduceOp op) {
    require_dense(tensor, "all_reduce");
    check(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                        detail::nccl_type(tensor), detail::nccl_op(op), comm_, stream()),
          "ncclAllReduce");
  }

  // A collective on a stream of its own, so that it overlaps the work queued after it on the
  // caller's stream (the rest of backward, the next unit's forward); wait() makes the caller's
  // stream wait for it.
  class Pending {
   public:
    explicit Pending(c10::DeviceIndex device) : device_(device) {}
    void wait() { done_.block(c10::cuda::getCurrentCUDAStream(device_)); }
    at::cuda::CUDAEvent& done() { return done_; }

   private:
    c10::DeviceIndex device_;
    at::cuda::CUDAEvent done_;
  };

  Pending all_reduce_async(at::Tensor& tensor, ReduceOp op) {
    require_dense(tensor, "all_reduce");
    return on_side_stream([&](cudaStream_t stream) {
      check(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                          detail::nccl_type(tensor), detail::nccl_op(op), comm_, stream),
            "ncclAllReduce");
    });
  }

  // Every rank's `input` side by side in `output` (world_size times its size), on the side stream.
  Pending all_gather_into_async(at::Tensor& output, const at::Tensor& input) {
    require_dense(output, "all_gather_into");
    require_dense(input, "all_gather_into");
    return on_side_stream([&](cudaStream_t stream) {
      check(ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                          detail::nccl_type(input), comm_, stream),
            "ncclAllGather");
    });
  }
  void all_gather_into(at::Tensor& output, const at::Tensor& input) { all_gather_into_async(output, input).wait(); }

  // This rank's slice of the reduction of every rank's `input` (world_size times output's size).
  Pending reduce_scatter_async(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    require_dense(output, "reduce_scatter");
    require_dense(input, "reduce_scatter");
    return on_side_stream([&](cudaStream_t stream) {
      check(ncclReduceScatter(input.data_ptr(), output.data_ptr(), static_cast<size_t>(output.numel()),
                              detail::nccl_type(input), detail::nccl_op(op), comm_, stream),
            "ncclReduceScatter");
    });
  }
  void reduce_scatter(at::Tensor& output, at::Tensor& input, ReduceOp op) {
    reduce_scatter_async(output, input, op).wait();
  }

  void broadcast(at::Tensor& tensor, int root) {
    require_dense(tensor, "broadcast");
    check(ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                        detail::nccl_type(tensor), root, comm_, stream()),
          "ncclBroadcast");
  }

  std::vector<at::Tensor> all_gather(const at::Tensor& tensor) {
    const auto input = tensor.contiguous();
    require_dense(input, "all_gather");
    auto sizes = input.sizes().vec();
    sizes.insert(sizes.begin(), world_size_);
    auto output = at::empty(sizes, input.options());
    check(ncclAllGather(input.data_ptr(), output.data_ptr(), static_cast<size_t>(input.numel()),
                        detail::nccl_type(input), comm_, stream()),
          "ncclAllGather");
    return output.unbind(0);
  }

  // Returns once every rank got here; a rank that never does ends the wait after the timeout
  // with the communicator aborted, so that the process can exit instead of hanging.
  void barrier() {
    auto token = at::zeros({1}, at::TensorOptions(device_).dtype(at::kFloat));
    all_reduce(token, ReduceOp::sum);
    wait("barrier");
  }

  // Blocks the host until the collectives queued so far are done, within the timeout.
  void wait(const char* what) {
    c10::cuda::CUDAGuard guard(device_);  // the event must live on the stream's device
    cudaEvent_t done;
    if (cudaEventCreateWithFlags(&done, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventRecord(done, stream()) != cudaSuccess)
      throw Error("rank " + std::to_string(rank_) + ": could not record a CUDA event to wait for NCCL " + what);
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    cudaError_t state;
    while ((state = cudaEventQuery(done)) == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess || std::chrono::steady_clock::now() > deadline) {
        cudaEventDestroy(done);
        abort();
        throw Error("rank " + std::to_string(rank_) + ": NCCL " + what + " did not complete within " +
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout_).count()) +
                    " s (a peer died or stopped calling collectives); the communicator was aborted");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    cudaEventDestroy(done);
    if (state != cudaSuccess)
      throw Error("rank " + std::to_string(rank_) + ": CUDA error after NCCL " + what + ": " +
                  cudaGetErrorString(state));
  }

  ncclComm_t handle() const { return comm_; }
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(device_.index()).stream(); }

 private:
  // Runs `launch` on the side stream after the work queued so far on the caller's stream.
  template <class Launch>
  Pending on_side_stream(Launch&& launch) {
    at::cuda::CUDAEvent inputs_ready;
    inputs_ready.record(c10::cuda::getCurrentCUDAStream(device_.index()));
    inputs_ready.block(side_stream_);
    launch(side_stream_.stream());
    Pending pending(device_.index());
    pending.done().record(side_stream_);
    return pending;
  }
  void abort() {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  void check(ncclResult_t result, const char* call) const {
    if (result != ncclSuccess)
      throw Error("rank " + std::to_string(rank_) + ": " + call + " failed: " + ncclGetErrorString(result));
  }
  void require_dense(const at::Tensor& t, const char* what) const {
    if (!t.is_cuda() || !t.is_contiguous())
      throw Error(std::string("Nccl::") + what +
                  " needs a contiguous CUDA tensor; move it with .to(accelerator.device())");
  }

  int rank_;
  int world_size_;
  c10::Device device_;
  std::chrono::milliseconds timeout_;
  c10::cuda::CUDAStream side_stream_;
  ncclComm_t comm_ = nullptr;
};

#else

// This build has no NCCL (libtorch without CUDA, or nccl.h not found): the tag exists so that
// code naming it compiles, and the strategies reject it with a message.
struct Nccl {
  static constexpr std::string_view name = "nccl";
  static constexpr bool available = false;
};

#endif

}  // namespace acc

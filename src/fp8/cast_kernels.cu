// The fp8 casts acc::FP8 needs, fused so that each pass over memory does all its work: the amax
// of a tensor, and the cast of a 2-D tensor to fp8 with its scale, writing the plain copy, the
// transposed copy (the operand layouts at::_scaled_mm needs in backward) and, for delayed scaling,
// the amax of what it read, in one pass. No ATen here: nvcc sees CUDA headers only; the tensor side
// is include/acc/fp8/impl/cast.ipp.
#include <acc/fp8/kernels.hpp>

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace acc::fp8::kernels {
namespace {

constexpr int kTile = 64;      // a block casts a kTile x kTile tile
constexpr int kThreads = 256;  // 16 x 16 threads, each 4 rows of 4 consecutive columns

__device__ inline void load4(const float* p, float v[4]) {
  const float4 f = *reinterpret_cast<const float4*>(p);
  v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
}
__device__ inline void load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}

// The block's largest value into *out; amax values are >= 0, whose float order is their bits' order.
__device__ inline void block_max_into(float value, float* out) {
  __shared__ float warp_max[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = value;
  __syncthreads();
  if (threadIdx.x < 32) {
    value = threadIdx.x < kThreads / 32 ? warp_max[threadIdx.x] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(out), __float_as_int(value));
  }
}

template <class In>
__global__ void __launch_bounds__(kThreads) amax_kernel(const In* __restrict__ x, int64_t groups, float* amax) {
  float local = 0.f;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < groups; i += int64_t(gridDim.x) * kThreads) {
    float v[4];
    load4(x + 4 * i, v);
    local = fmaxf(local, fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3]))));
  }
  block_max_into(local, amax);
}

// scale_source is the scale itself, or (from_amax) the amax it is made from: fp8_max / amax, so
// that the largest value lands on the format's largest. The first block records 1 / scale, what
// _scaled_mm multiplies the product by.
template <class In, bool kPlain, bool kTransposed, bool kAmax>
__global__ void __launch_bounds__(kThreads)
    cast_kernel(const In* __restrict__ x, int64_t rows, int64_t cols, const float* __restrict__ scale_source,
                bool from_amax, float fp8_max, __nv_fp8_interpretation_t format, uint8_t* __restrict__ out,
                uint8_t* __restrict__ out_t, float* __restrict__ inv_scale, float* __restrict__ amax) {
  __shared__ uint8_t tile[kTile][kTile + 4];
  float scale = *scale_source;
  if (from_amax) scale = fp8_max / fmaxf(scale, 1e-12f);
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *inv_scale = 1.f / scale;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = int64_t(blockIdx.y) * kTile, col0 = int64_t(blockIdx.x) * kTile;
  const int64_t col = col0 + 4 * tx;
  float local_max = 0.f;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t row = row0 + ty + 16 * r;
    if (row >= rows || col >= cols) continue;
    float v[4];
    load4(x + row * cols + col, v);
    uint32_t packed = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (kAmax) local_max = fmaxf(local_max, fabsf(v[k]));
      const uint8_t byte = __nv_cvt_float_to_fp8(v[k] * scale, __NV_SATFINITE, format);
      packed |= uint32_t(byte) << (8 * k);
      if (kTransposed) tile[ty + 16 * r][4 * tx + k] = byte;
    }
    if (kPlain) *reinterpret_cast<uint32_t*>(out + row * cols + col) = packed;
  }
  if (kTransposed) {
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int index = threadIdx.x + kThreads * k;  // 1024 runs of 4 bytes: 64 columns x 16 runs of rows
      const int c = index / 16, r = 4 * (index % 16);
      if (col0 + c >= cols || row0 + r >= rows) continue;  // rows % 16 == 0: a run is all in or all out
      const uint32_t packed = uint32_t(tile[r][c]) | uint32_t(tile[r + 1][c]) << 8 | uint32_t(tile[r + 2][c]) << 16 |
                              uint32_t(tile[r + 3][c]) << 24;
      *reinterpret_cast<uint32_t*>(out_t + (col0 + c) * rows + row0 + r) = packed;
    }
  }
  if (kAmax) block_max_into(local_max, amax);
}

// Delayed scaling after a cast: the amax just seen enters the history (newest first), the next
// scale comes from the history (its max, or the newest), and the running amax is cleared.
__global__ void update_history_kernel(float* history, int length, float* amax_now, float* scale, bool use_max,
                                      float fp8_max, float margin_factor) {
  __shared__ float values[1024];
  const int i = threadIdx.x;
  const float value = i < length ? (i == 0 ? *amax_now : history[i - 1]) : 0.f;
  values[i] = value;
  __syncthreads();  // every entry read before any is overwritten
  if (i < length) history[i] = value;
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (i < stride) values[i] = fmaxf(values[i], values[i + stride]);
    __syncthreads();
  }
  if (i == 0) {
    const float amax = use_max ? values[0] : value;
    if (amax > 0.f && isfinite(amax)) *scale = fp8_max / amax / margin_factor;
    *amax_now = 0.f;
  }
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("acc fp8: ") + what + " failed: " + cudaGetErrorString(status));
}

int blocks_for(int64_t groups) {
  static const int limit = [] {
    int device = 0, sms = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    return sms * 8;
  }();
  const int64_t needed = (groups + kThreads - 1) / kThreads;
  return static_cast<int>(needed < limit ? needed : limit);
}

__nv_fp8_interpretation_t interpretation(Format format) { return format == Format::e4m3 ? __NV_E4M3 : __NV_E5M2; }

template <class In, bool kPlain, bool kTransposed, bool kAmax>
void launch_cast(const CastArguments& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((a.cols + kTile - 1) / kTile),
                  static_cast<unsigned>((a.rows + kTile - 1) / kTile));
  cast_kernel<In, kPlain, kTransposed, kAmax><<<grid, kThreads, 0, stream>>>(
      static_cast<const In*>(a.input), a.rows, a.cols, a.scale_source, a.from_amax, a.fp8_max, interpretation(a.format),
      static_cast<uint8_t*>(a.out), static_cast<uint8_t*>(a.out_transposed), a.inv_scale, a.amax);
}

template <class In>
void dispatch_cast(const CastArguments& a, cudaStream_t stream) {
  const bool plain = a.out != nullptr, transposed = a.out_transposed != nullptr, amax = a.amax != nullptr;
  if (plain && transposed && amax) return launch_cast<In, true, true, true>(a, stream);
  if (plain && transposed) return launch_cast<In, true, true, false>(a, stream);
  if (plain && amax) return launch_cast<In, true, false, true>(a, stream);
  if (plain) return launch_cast<In, true, false, false>(a, stream);
  if (transposed && amax) return launch_cast<In, false, true, true>(a, stream);
  if (transposed) return launch_cast<In, false, true, false>(a, stream);
  throw std::invalid_argument("acc fp8: a cast writes the plain copy, the transposed copy or both");
}

}  // namespace

void amax(const void* input, Input type, int64_t numel, float* out, CUstream_st* stream) {
  check(cudaMemsetAsync(out, 0, sizeof(float), stream), "cudaMemsetAsync");
  const int64_t groups = numel / 4;
  if (groups == 0) return;
  if (type == Input::float32)
    amax_kernel<<<blocks_for(groups), kThreads, 0, stream>>>(static_cast<const float*>(input), groups, out);
  else
    amax_kernel<<<blocks_for(groups), kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(input), groups, out);
  check(cudaGetLastError(), "the amax kernel");
}

void cast(const CastArguments& arguments, CUstream_st* stream) {
  if (arguments.amax) check(cudaMemsetAsync(arguments.amax, 0, sizeof(float), stream), "cudaMemsetAsync");
  if (arguments.type == Input::float32)
    dispatch_cast<float>(arguments, stream);
  else
    dispatch_cast<__nv_bfloat16>(arguments, stream);
  check(cudaGetLastError(), "the fp8 cast kernel");
}

void update_history(float* history, int length, float* amax_now, float* scale, bool use_max, float fp8_max, int margin,
                    CUstream_st* stream) {
  if (length < 1 || length > 1024)
    throw std::invalid_argument("acc fp8: the amax history holds 1 to 1024 entries, not " + std::to_string(length));
  int threads = 1;
  while (threads < length) threads *= 2;
  const unsigned block = threads < 32 ? 32 : threads;
  update_history_kernel<<<1, block, 0, stream>>>(history, length, amax_now, scale, use_max, fp8_max,
                                                 float(1 << margin));
  check(cudaGetLastError(), "the amax history kernel");
}

}  // namespace acc::fp8::kernels

// The fp8 cast kernels (src/fp8/cast_kernels.cu, built into acc::fp8 where CUDA is; ACC_HAS_FP8 is
// then 1). Raw pointers and a CUDA stream, so that neither side sees the other's headers; the
// tensor-level casts acc::FP8 uses are in cast.hpp.
#pragma once

#include <cstdint>

struct CUstream_st;  // cudaStream_t

namespace acc::fp8::kernels {

enum class Input { float32, bfloat16 };
enum class Format { e4m3, e5m2 };

struct CastArguments {
  const void* input = nullptr;  // rows x cols, row-major, 16-byte aligned; rows and cols multiples of 16
  Input type = Input::float32;
  int64_t rows = 0, cols = 0;
  const float* scale_source = nullptr;  // the scale, or with from_amax the amax to make it from
  bool from_amax = false;
  float fp8_max = 0;  // the format's largest finite value
  Format format = Format::e4m3;
  void* out = nullptr;             // rows x cols fp8, or null
  void* out_transposed = nullptr;  // cols x rows fp8, or null
  float* inv_scale = nullptr;      // receives 1 / scale
  float* amax = nullptr;           // receives the input's amax (delayed scaling), or null
};

// *out = max |input| over numel values (a multiple of 4, 16-byte aligned).
void amax(const void* input, Input type, int64_t numel, float* out, CUstream_st* stream);
void cast(const CastArguments& arguments, CUstream_st* stream);
// Delayed scaling: pushes *amax_now into the history (newest first), sets *scale from it
// (fp8_max / (amax * 2^margin), amax the history's max or its newest) and clears *amax_now.
void update_history(float* history, int length, float* amax_now, float* scale, bool use_max, float fp8_max, int margin,
                    CUstream_st* stream);

}  // namespace acc::fp8::kernels

// Device-side helpers shared by the kernels of kernels/cuda (included from .cu files only).
//
// Every kernel is a template over the element type T of its activations, instantiated for
// float and __nv_bfloat16 only (F32 and BF16 tensors): all arithmetic is fp32 (fp64 where the
// CPU reference uses double), loads widen with to_float() and stores round with from_float()
// (round-to-nearest-even, the same rounding as f32_to_bf16 in kernels/core/dtype.h).
// DeviceErrors is the sticky error record kernels use for bad *data* (a negative token id or
// position) that the host cannot see without a synchronization; CudaBackend checks it at its
// synchronization points and turns it into an Error naming the op, the row and the value.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common_host.h"

namespace parafuse::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_float(float x) {
  return x;
}
__device__ __forceinline__ float to_float(bf16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Records the first error of a launch sequence; later ones are dropped.
__device__ __forceinline__ void report_error(DeviceErrors* errors, int code, long long row,
                                             long long value) {
  if (atomicCAS(&errors->code, 0, code) == 0) {
    errors->row = row;
    errors->value = value;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 elements of shared memory; the call begins and ends with a barrier.
template <typename V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  V total = V(0);
  for (int w = 0; w < n_warps; ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace parafuse::cuda

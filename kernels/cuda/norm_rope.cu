// RMSNorm (+ fused residual add) and rotate-half RoPE.
//
// RMSNorm: one block per row; the sum of squares in fp32 with a block reduction, then a second
// pass over the row (the same thread touches the same columns in both passes, so y may alias
// x and the fused residual write needs no barrier). RoPE: one block per row; the row's cos/sin
// table (head_dim/2 entries) is computed once in fp64 from the fp32 angle float(pos)*inv_freq,
// as the CPU reference does, and shared by all heads of the row through shared memory.
#include <algorithm>
#include <cstdint>

#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/norm_rope.cuh"

namespace parafuse::cuda {
namespace {

constexpr int kNormThreads = 256;
constexpr int kMaxHalf = 512;  // head_dim up to 1024

template <typename T>
__global__ void rmsnorm_kernel(T* x, int64_t x_stride, const T* residual, int64_t r_stride,
                               const T* weight, float eps, T* y, int64_t y_stride, int64_t d) {
  __shared__ float scratch[32];
  T* xr = x + blockIdx.x * x_stride;
  T* yr = y + blockIdx.x * y_stride;
  float sum_sq = 0.0f;
  if (residual) {
    const T* rr = residual + blockIdx.x * r_stride;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const T v = from_float<T>(to_float(xr[c]) + to_float(rr[c]));
      xr[c] = v;
      const float f = to_float(v);
      sum_sq += f * f;
    }
  } else {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float f = to_float(xr[c]);
      sum_sq += f * f;
    }
  }
  sum_sq = block_sum(sum_sq, scratch);
  const float inv_rms = rsqrtf(sum_sq / float(d) + eps);
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const float v = to_float(xr[c]) * inv_rms;
    yr[c] = from_float<T>(weight ? v * to_float(weight[c]) : v);
  }
}

// The BF16 fast path (decode is latency-bound: a row of 4096 is one load per thread): 16-byte
// loads of 8 elements, the row and the weight held in registers between the reduction and the
// write, every load issued before the reduction. Rows with d % 8 == 0, 16-byte aligned rows
// and d <= kVecMaxPerThread * 8 * 1024.
constexpr int kVec = 8;
constexpr int kVecMaxPerThread = 4;

__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
  const bf16* e = reinterpret_cast<const bf16*>(&v);
#pragma unroll
  for (int k = 0; k < kVec; ++k) f[k] = __bfloat162float(e[k]);
}
__device__ __forceinline__ uint4 pack8(const float* f) {
  uint4 v;
  bf16* e = reinterpret_cast<bf16*>(&v);
#pragma unroll
  for (int k = 0; k < kVec; ++k) e[k] = __float2bfloat16_rn(f[k]);
  return v;
}

__global__ void rmsnorm_bf16x8_kernel(bf16* x, int64_t x_stride, const bf16* residual,
                                      int64_t r_stride, const bf16* weight, float eps, bf16* y,
                                      int64_t y_stride, int d) {
  __shared__ float scratch[32];
  uint4* xr = reinterpret_cast<uint4*>(x + blockIdx.x * x_stride);
  const uint4* rr =
      residual ? reinterpret_cast<const uint4*>(residual + blockIdx.x * r_stride) : nullptr;
  const uint4* wr = reinterpret_cast<const uint4*>(weight);
  uint4* yr = reinterpret_cast<uint4*>(y + blockIdx.x * y_stride);
  const int n_vec = d / kVec;
  uint4 xv[kVecMaxPerThread], wv[kVecMaxPerThread];
#pragma unroll
  for (int j = 0; j < kVecMaxPerThread; ++j) {
    const int v = int(threadIdx.x) + j * int(blockDim.x);
    if (v < n_vec) {
      xv[j] = xr[v];
      if (weight) wv[j] = wr[v];
    }
  }
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kVecMaxPerThread; ++j) {
    const int v = int(threadIdx.x) + j * int(blockDim.x);
    if (v >= n_vec) continue;
    float f[kVec];
    unpack8(xv[j], f);
    if (rr) {  // hidden += residual, rounded to bf16 as the unfused add would
      float r[kVec];
      unpack8(rr[v], r);
#pragma unroll
      for (int k = 0; k < kVec; ++k) f[k] += r[k];
      xv[j] = pack8(f);
      xr[v] = xv[j];
      unpack8(xv[j], f);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum_sq += f[k] * f[k];
  }
  sum_sq = block_sum(sum_sq, scratch);
  const float inv_rms = rsqrtf(sum_sq / float(d) + eps);
#pragma unroll
  for (int j = 0; j < kVecMaxPerThread; ++j) {
    const int v = int(threadIdx.x) + j * int(blockDim.x);
    if (v >= n_vec) continue;
    float f[kVec], w[kVec];
    unpack8(xv[j], f);
    if (weight) unpack8(wv[j], w);
#pragma unroll
    for (int k = 0; k < kVec; ++k) f[k] = weight ? f[k] * inv_rms * w[k] : f[k] * inv_rms;
    yr[v] = pack8(f);
  }
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

template <typename T>
__global__ void rope_kernel(T* x, int64_t x_stride, const int32_t* positions, int64_t pos_stride,
                            const float* inv_freq, int n_heads, int head_dim,
                            DeviceErrors* errors) {
  __shared__ float cos_row[kMaxHalf], sin_row[kMaxHalf];
  const int64_t r = blockIdx.x;
  const int32_t pos = positions[r * pos_stride];
  if (pos < 0) {
    if (threadIdx.x == 0) report_error(errors, kNegativePosition, r, pos);
    return;
  }
  const int half = head_dim / 2;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = float(pos) * inv_freq[i];  // fp32, as HF computes it
    double s, c;
    sincos(double(angle), &s, &c);
    cos_row[i] = float(c);
    sin_row[i] = float(s);
  }
  __syncthreads();
  T* xr = x + r * x_stride;
  for (int e = threadIdx.x; e < n_heads * half; e += blockDim.x) {
    const int h = e / half, i = e % half;
    T* lo = xr + int64_t(h) * head_dim + i;
    T* hi = lo + half;
    const float x0 = to_float(*lo), x1 = to_float(*hi);
    *lo = from_float<T>(x0 * cos_row[i] - x1 * sin_row[i]);
    *hi = from_float<T>(x1 * cos_row[i] + x0 * sin_row[i]);
  }
}

}  // namespace

void launch_rmsnorm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                    const Tensor& y, cudaStream_t stream) {
  PF_CHECK(x.rows == y.rows && x.cols == y.cols, "rmsnorm: x and y shapes differ");
  PF_CHECK(residual.empty() || (residual.rows == x.rows && residual.cols == x.cols),
           "rmsnorm: residual shape differs from x");
  PF_CHECK(weight.empty() || weight.cols == x.cols, "rmsnorm: weight width differs from x");
  PF_CHECK(x.rows <= int64_t(INT32_MAX), "rmsnorm: {} rows exceed one grid", x.rows);
  if (x.numel() == 0) return;
  const unsigned grid = unsigned(x.rows);
  // Row starts are 16-byte aligned when the base is and the strides are multiples of 8.
  auto vec_ok = [&](const Tensor& t) {
    return t.empty() || (aligned16(t.data) && (t.rows <= 1 || t.row_stride % kVec == 0));
  };
  const int64_t n_vec = x.cols / kVec;
  if (x.dtype == DType::BF16 && x.cols % kVec == 0 && n_vec <= int64_t(kVecMaxPerThread) * 1024 &&
      vec_ok(x) && vec_ok(y) && vec_ok(residual) && vec_ok(weight)) {
    // One vector per thread where the row allows (at most 4 past 1024 threads).
    const int threads = int(std::min<int64_t>(1024, ceil_div(n_vec, 32) * 32));
    const int64_t rs = residual.rows <= 1 ? 0 : residual.row_stride;
    rmsnorm_bf16x8_kernel<<<grid, threads, 0, stream>>>(
        static_cast<bf16*>(x.data), x.rows <= 1 ? 0 : x.row_stride,
        static_cast<const bf16*>(residual.data), rs, static_cast<const bf16*>(weight.data), eps,
        static_cast<bf16*>(y.data), y.rows <= 1 ? 0 : y.row_stride, int(x.cols));
    PF_CUDA_CHECK_LAUNCH();
    return;
  }
  if (x.dtype == DType::BF16) {
    rmsnorm_kernel<<<grid, kNormThreads, 0, stream>>>(
        static_cast<bf16*>(x.data), x.row_stride, static_cast<const bf16*>(residual.data),
        residual.row_stride, static_cast<const bf16*>(weight.data), eps, static_cast<bf16*>(y.data),
        y.row_stride, x.cols);
  } else {
    rmsnorm_kernel<<<grid, kNormThreads, 0, stream>>>(
        static_cast<float*>(x.data), x.row_stride, static_cast<const float*>(residual.data),
        residual.row_stride, static_cast<const float*>(weight.data), eps,
        static_cast<float*>(y.data), y.row_stride, x.cols);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
                 int head_dim, DeviceErrorsPtr errors, cudaStream_t stream) {
  PF_CHECK(head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= kMaxHalf,
           "rope: head_dim {} must be even and at most {}", head_dim, 2 * kMaxHalf);
  PF_CHECK(x.cols == int64_t(n_heads) * head_dim && positions.rows == x.rows &&
               inv_freq.cols == head_dim / 2,
           "rope: shapes differ");
  PF_CHECK(x.rows <= int64_t(INT32_MAX), "rope: {} rows exceed one grid", x.rows);
  if (x.numel() == 0) return;
  const int64_t pos_stride = positions.rows <= 1 ? 1 : positions.row_stride;
  // Enough threads that each rotates about one pair (decode is latency-bound).
  const int threads =
      int(std::clamp<int64_t>(ceil_div(int64_t(n_heads) * (head_dim / 2), 32) * 32, 32, 1024));
  if (x.dtype == DType::BF16) {
    rope_kernel<<<unsigned(x.rows), threads, 0, stream>>>(
        static_cast<bf16*>(x.data), x.row_stride, static_cast<const int32_t*>(positions.data),
        pos_stride, static_cast<const float*>(inv_freq.data), n_heads, head_dim, errors);
  } else {
    rope_kernel<<<unsigned(x.rows), threads, 0, stream>>>(
        static_cast<float*>(x.data), x.row_stride, static_cast<const int32_t*>(positions.data),
        pos_stride, static_cast<const float*>(inv_freq.data), n_heads, head_dim, errors);
  }
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace parafuse::cuda

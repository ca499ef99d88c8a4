// RMSNorm (+ fused residual add) and rotate-half RoPE.
//
// RMSNorm: one block per row; the sum of squares in fp32 with a block reduction, then a second
// pass over the row (the same thread touches the same columns in both passes, so y may alias
// x and the fused residual write needs no barrier). RoPE: one block per row; the row's cos/sin
// table (head_dim/2 entries) is computed once in fp64 from the fp32 angle float(pos)*inv_freq,
// as the CPU reference does, and shared by all heads of the row through shared memory.
#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/norm_rope.cuh"

namespace parafuse::cuda {
namespace {

constexpr int kNormThreads = 256;
constexpr int kRopeThreads = 256;
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
  if (x.dtype == DType::BF16) {
    rope_kernel<<<unsigned(x.rows), kRopeThreads, 0, stream>>>(
        static_cast<bf16*>(x.data), x.row_stride, static_cast<const int32_t*>(positions.data),
        pos_stride, static_cast<const float*>(inv_freq.data), n_heads, head_dim, errors);
  } else {
    rope_kernel<<<unsigned(x.rows), kRopeThreads, 0, stream>>>(
        static_cast<float*>(x.data), x.row_stride, static_cast<const int32_t*>(positions.data),
        pos_stride, static_cast<const float*>(inv_freq.data), n_heads, head_dim, errors);
  }
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace parafuse::cuda

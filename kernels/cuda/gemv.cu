// The decode GEMV and the FP8 helpers (see gemv.cuh).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/gemv.cuh"

namespace parafuse::cuda {
namespace {

using fp8 = __nv_fp8_e4m3;

constexpr int kWarpsPerBlock = 8;
constexpr float kFp8Max = 448.0f;

// 16 bytes of a weight row widened to floats: 8 BF16 values or 16 E4M3 codes.
template <typename W>
struct Chunk;
template <>
struct Chunk<bf16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void widen(const uint4& raw, float* out) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
  __device__ __forceinline__ static float one(const bf16* p) {
    return __bfloat162float(*p);
  }
};
template <>
struct Chunk<fp8> {
  static constexpr int kElems = 16;
  __device__ __forceinline__ static void widen(const uint4& raw, float* out) {
    const __nv_fp8x2_storage_t* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      // E4M3 -> half is exact (every E4M3 value is a half); then half -> float.
      const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(pairs[i], __NV_E4M3);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
  __device__ __forceinline__ static float one(const fp8* p) {
    return float(*p);
  }
};

// One warp per output column n; each lane walks the row in 16-byte chunks and keeps M
// accumulators, so the weight row is read once for every activation row. `vector` says that
// the row start and k allow 16-byte loads; otherwise every element is loaded alone.
template <int M, typename W, typename X, typename Y>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_kernel(const X* __restrict__ x, int64_t ldx, const W* __restrict__ w, int64_t ldw,
                const float* __restrict__ w_scales, Y* __restrict__ y, int64_t ldy, int64_t n,
                int64_t k, float beta, bool vector) {
  const int lane = threadIdx.x & 31;
  const int64_t col = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (col >= n) return;
  const W* row = w + col * ldw;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; ++r) acc[r] = 0.0f;
  constexpr int E = Chunk<W>::kElems;
  int64_t done = 0;
  if (vector) {
    const int64_t chunks = k / E;
    const uint4* row16 = reinterpret_cast<const uint4*>(row);
    for (int64_t c = lane; c < chunks; c += 32) {
      const uint4 raw = __ldg(row16 + c);  // weights are read once: the only large stream
      float wv[E];
      Chunk<W>::widen(raw, wv);
      const int64_t at = c * E;
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const X* xr = x + r * ldx + at;
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < E; ++e) s = fmaf(wv[e], to_float(xr[e]), s);
        acc[r] += s;
      }
    }
    done = chunks * E;
  }
  for (int64_t i = done + lane; i < k; i += 32) {
    const float wv = Chunk<W>::one(row + i);
#pragma unroll
    for (int r = 0; r < M; ++r) acc[r] = fmaf(wv, to_float(x[r * ldx + i]), acc[r]);
  }
  const float scale = w_scales ? w_scales[col] : 1.0f;
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float sum = warp_sum(acc[r]) * scale;
    if (lane == 0) {
      Y* out = y + r * ldy + col;
      *out = from_float<Y>(beta == 0.0f ? sum : sum + beta * to_float(*out));
    }
  }
}

template <int M, typename W, typename X, typename Y>
void gemv_m(const Tensor& x, const Tensor& w, const Tensor& y, float beta, bool vector,
            cudaStream_t stream) {
  const int64_t n = w.rows, k = x.cols;
  const auto ld = [](const Tensor& t) { return t.rows <= 1 ? t.cols : t.row_stride; };
  const dim3 grid(unsigned(ceil_div(n, kWarpsPerBlock)));
  gemv_kernel<M, W, X, Y><<<grid, kWarpsPerBlock * 32, 0, stream>>>(
      static_cast<const X*>(x.data), ld(x), static_cast<const W*>(w.data), ld(w), w.scales,
      static_cast<Y*>(y.data), ld(y), n, k, beta, vector);
}

template <typename W, typename X, typename Y>
void gemv_typed(const Tensor& x, const Tensor& w, const Tensor& y, float beta, bool vector,
                cudaStream_t stream) {
  switch (x.rows) {
    case 1:
      return gemv_m<1, W, X, Y>(x, w, y, beta, vector, stream);
    case 2:
      return gemv_m<2, W, X, Y>(x, w, y, beta, vector, stream);
    case 3:
      return gemv_m<3, W, X, Y>(x, w, y, beta, vector, stream);
    case 4:
      return gemv_m<4, W, X, Y>(x, w, y, beta, vector, stream);
    case 5:
      return gemv_m<5, W, X, Y>(x, w, y, beta, vector, stream);
    case 6:
      return gemv_m<6, W, X, Y>(x, w, y, beta, vector, stream);
    case 7:
      return gemv_m<7, W, X, Y>(x, w, y, beta, vector, stream);
    case 8:
      return gemv_m<8, W, X, Y>(x, w, y, beta, vector, stream);
  }
  PF_THROW("gemv: {} activation rows (1 to {})", x.rows, kGemvMaxRows);
}

template <typename W>
void gemv_weight(const Tensor& x, const Tensor& w, const Tensor& y, float beta, bool vector,
                 cudaStream_t stream) {
  const bool xf = x.dtype == DType::F32, yf = y.dtype == DType::F32;
  if (xf) return gemv_typed<W, float, float>(x, w, y, beta, vector, stream);
  if (yf) return gemv_typed<W, bf16, float>(x, w, y, beta, vector, stream);
  return gemv_typed<W, bf16, bf16>(x, w, y, beta, vector, stream);
}

// One block per row: amax, then codes = saturate(v / scale).
template <typename X>
__global__ void quantize_rows_kernel(const X* __restrict__ x, int64_t ldx, int64_t k,
                                     float static_scale, fp8* __restrict__ codes,
                                     float* __restrict__ scales) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const X* row = x + r * ldx;
  float scale = static_scale;
  if (scale <= 0.0f) {
    float amax = 0.0f;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
      amax = fmaxf(amax, fabsf(to_float(row[i])));
    // block max through the shared sum helper's pattern
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    amax = warp_max(amax);
    if (lane == 0) scratch[warp] = amax;
    __syncthreads();
    amax = 0.0f;
    for (int i = 0; i < int(blockDim.x >> 5); ++i) amax = fmaxf(amax, scratch[i]);
    scale = amax > 0.0f && isfinite(amax) ? amax / kFp8Max : 1.0f;
  }
  const float inv = 1.0f / scale;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = fminf(fmaxf(to_float(row[i]) * inv, -kFp8Max), kFp8Max);
    codes[r * k + i] = fp8(v);
  }
  if (threadIdx.x == 0) scales[r] = scale;
}

template <typename Y>
__global__ void apply_scales_kernel(const float* __restrict__ acc, const float* __restrict__ rs,
                                    const float* __restrict__ cs, float beta, Y* __restrict__ y,
                                    int64_t ldy, int64_t m, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * n) return;
  const int64_t r = i / n, c = i % n;
  const float v = acc[i] * rs[r] * cs[c];
  Y* out = y + r * ldy + c;
  *out = from_float<Y>(beta == 0.0f ? v : v + beta * to_float(*out));
}

template <typename T>
__global__ void dequantize_kernel(const fp8* __restrict__ w, int64_t ldw,
                                  const float* __restrict__ scales, T* __restrict__ out,
                                  int64_t ldo, int64_t n, int64_t k) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * k) return;
  const int64_t r = i / k, c = i % k;
  out[r * ldo + c] = from_float<T>(float(w[r * ldw + c]) * scales[r]);
}

int64_t ld_of(const Tensor& t) {
  return t.rows <= 1 ? t.cols : t.row_stride;
}

}  // namespace

void launch_gemv(const Tensor& x, const Tensor& w, const Tensor& y, float beta,
                 cudaStream_t stream) {
  PF_CHECK(w.dtype == DType::BF16 || w.dtype == DType::F8_E4M3, "gemv: weight dtype {}",
           dtype_name(w.dtype));
  PF_CHECK(w.dtype != DType::F8_E4M3 || w.scales != nullptr, "gemv: FP8 weight without scales");
  const size_t elem = dtype_size(w.dtype);
  const bool vector =
      reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && (size_t(ld_of(w)) * elem) % 16 == 0;
  if (w.dtype == DType::BF16) {
    gemv_weight<bf16>(x, w, y, beta, vector, stream);
  } else {
    gemv_weight<fp8>(x, w, y, beta, vector, stream);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_quantize_rows_fp8(const Tensor& x, float static_scale, void* codes, float* scales,
                              cudaStream_t stream) {
  if (x.rows == 0) return;
  const int threads = 256;
  if (x.dtype == DType::F32) {
    quantize_rows_kernel<float><<<unsigned(x.rows), threads, 0, stream>>>(
        x.f32(), ld_of(x), x.cols, static_scale, static_cast<fp8*>(codes), scales);
  } else {
    quantize_rows_kernel<bf16><<<unsigned(x.rows), threads, 0, stream>>>(
        static_cast<const bf16*>(x.data), ld_of(x), x.cols, static_scale, static_cast<fp8*>(codes),
        scales);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_apply_fp8_scales(const float* acc, const float* row_scales, const float* col_scales,
                             float beta, const Tensor& y, cudaStream_t stream) {
  const int64_t total = y.rows * y.cols;
  if (total == 0) return;
  const unsigned blocks = unsigned(ceil_div(total, 256));
  if (y.dtype == DType::F32) {
    apply_scales_kernel<float><<<blocks, 256, 0, stream>>>(acc, row_scales, col_scales, beta,
                                                           y.f32(), ld_of(y), y.rows, y.cols);
  } else {
    apply_scales_kernel<bf16><<<blocks, 256, 0, stream>>>(
        acc, row_scales, col_scales, beta, static_cast<bf16*>(y.data), ld_of(y), y.rows, y.cols);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_dequantize_fp8(const Tensor& w, const Tensor& out, cudaStream_t stream) {
  PF_CHECK(
      w.dtype == DType::F8_E4M3 && w.scales != nullptr && out.rows == w.rows && out.cols == w.cols,
      "dequantize_fp8: ({}, {}) {} into ({}, {}) {}", w.rows, w.cols, dtype_name(w.dtype), out.rows,
      out.cols, dtype_name(out.dtype));
  const int64_t total = w.rows * w.cols;
  if (total == 0) return;
  const unsigned blocks = unsigned(ceil_div(total, 256));
  const fp8* codes = static_cast<const fp8*>(w.data);
  if (out.dtype == DType::F32) {
    dequantize_kernel<float><<<blocks, 256, 0, stream>>>(codes, ld_of(w), w.scales, out.f32(),
                                                         ld_of(out), w.rows, w.cols);
  } else {
    dequantize_kernel<bf16><<<blocks, 256, 0, stream>>>(
        codes, ld_of(w), w.scales, static_cast<bf16*>(out.data), ld_of(out), w.rows, w.cols);
  }
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace parafuse::cuda

// Element-wise kernels: conversion / strided copy, scale, add, SwiGLU, embedding gather.
//
// All are grid-stride loops over a (rows, cols) view with row strides; a contiguous view takes
// a flat path without the per-element division. fp32 math; expf (not __expf) in SwiGLU so that
// +-Inf and NaN gates give what the CPU reference gives.
#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace parafuse::cuda {
namespace {

constexpr int kThreads = 256;

// Strided 2-D index of flat element i of a (rows, cols) view.
struct View2d {
  int64_t cols, stride;
  __device__ __forceinline__ int64_t at(int64_t i) const {
    return stride == cols ? i : (i / cols) * stride + i % cols;
  }
};

template <typename S, typename D>
__device__ __forceinline__ D convert_one(S x) {
  return from_float<D>(to_float(x));
}
template <>
__device__ __forceinline__ float convert_one<int32_t, float>(int32_t x) {
  return float(x);
}
template <>
__device__ __forceinline__ int32_t convert_one<int32_t, int32_t>(int32_t x) {
  return x;
}

template <typename S, typename D>
__global__ void convert_kernel(const S* src, View2d sv, D* dst, View2d dv, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[dv.at(i)] = convert_one<S, D>(src[sv.at(i)]);
  }
}

template <typename T>
__global__ void scale_kernel(T* y, View2d v, float beta, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T* p = y + v.at(i);
    *p = from_float<T>(beta == 0.0f ? 0.0f : beta * to_float(*p));
  }
}

template <typename T>
__global__ void add_kernel(const T* a, View2d av, const T* b, View2d bv, T* out, View2d ov,
                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[ov.at(i)] = from_float<T>(to_float(a[av.at(i)]) + to_float(b[bv.at(i)]));
  }
}

template <typename T>
__global__ void swiglu_kernel(const T* gate, View2d gv, const T* up, View2d uv, T* out, View2d ov,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[gv.at(i)]);
    out[ov.at(i)] = from_float<T>(g / (1.0f + expf(-g)) * to_float(up[uv.at(i)]));
  }
}

// One block per output row; threads over columns.
template <typename T>
__global__ void embedding_kernel(const T* table, int64_t table_rows, int64_t table_stride,
                                 const int32_t* ids, int64_t ids_stride, int64_t vocab_begin,
                                 T* out, int64_t out_stride, int64_t cols, DeviceErrors* errors) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r * ids_stride];
  if (id < 0 && threadIdx.x == 0) report_error(errors, kNegativeTokenId, r, id);
  const int64_t local = int64_t(id) - vocab_begin;
  const bool inside = id >= 0 && local >= 0 && local < table_rows;
  T* o = out + r * out_stride;
  const T* src = inside ? table + local * table_stride : nullptr;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    o[c] = inside ? src[c] : from_float<T>(0.0f);
  }
}

View2d view(const Tensor& t) {
  return {t.cols, t.rows <= 1 ? t.cols : t.row_stride};
}

bool is_bf16(const Tensor& t) {
  return t.dtype == DType::BF16;
}

}  // namespace

void launch_convert(const Tensor& src, const Tensor& dst, cudaStream_t stream) {
  PF_CHECK(src.rows == dst.rows && src.cols == dst.cols,
           "convert: src ({}, {}) and dst ({}, {}) differ", src.rows, src.cols, dst.rows, dst.cols);
  const int64_t n = src.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(n, kThreads);
  const View2d sv = view(src), dv = view(dst);
  const DType s = src.dtype, d = dst.dtype;
  if (s == DType::F32 && d == DType::BF16) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(src.data), sv,
                                                  static_cast<bf16*>(dst.data), dv, n);
  } else if (s == DType::BF16 && d == DType::F32) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const bf16*>(src.data), sv,
                                                  static_cast<float*>(dst.data), dv, n);
  } else if (s == DType::F32 && d == DType::F32) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(src.data), sv,
                                                  static_cast<float*>(dst.data), dv, n);
  } else if (s == DType::BF16 && d == DType::BF16) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const bf16*>(src.data), sv,
                                                  static_cast<bf16*>(dst.data), dv, n);
  } else if (s == DType::I32 && d == DType::F32) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const int32_t*>(src.data), sv,
                                                  static_cast<float*>(dst.data), dv, n);
  } else if (s == DType::I32 && d == DType::I32) {
    convert_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const int32_t*>(src.data), sv,
                                                  static_cast<int32_t*>(dst.data), dv, n);
  } else {
    PF_THROW("convert: {} -> {} is not supported by the cuda backend", dtype_name(s),
             dtype_name(d));
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_scale(const Tensor& y, float beta, cudaStream_t stream) {
  const int64_t n = y.numel();
  if (n == 0) return;
  if (is_bf16(y)) {
    scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<bf16*>(y.data),
                                                                 view(y), beta, n);
  } else {
    scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<float*>(y.data),
                                                                 view(y), beta, n);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_add(const Tensor& a, const Tensor& b, const Tensor& out, cudaStream_t stream) {
  PF_CHECK(a.rows == b.rows && a.cols == b.cols && a.rows == out.rows && a.cols == out.cols,
           "add: shapes differ");
  const int64_t n = out.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(n, kThreads);
  if (is_bf16(out)) {
    add_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const bf16*>(a.data), view(a),
                                              static_cast<const bf16*>(b.data), view(b),
                                              static_cast<bf16*>(out.data), view(out), n);
  } else {
    add_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(a.data), view(a),
                                              static_cast<const float*>(b.data), view(b),
                                              static_cast<float*>(out.data), view(out), n);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_swiglu(const Tensor& gate, const Tensor& up, const Tensor& out, cudaStream_t stream) {
  PF_CHECK(gate.rows == up.rows && gate.cols == up.cols && gate.rows == out.rows &&
               gate.cols == out.cols,
           "swiglu: shapes differ");
  const int64_t n = out.numel();
  if (n == 0) return;
  const unsigned grid = grid_for(n, kThreads);
  if (is_bf16(out)) {
    swiglu_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const bf16*>(gate.data), view(gate),
                                                 static_cast<const bf16*>(up.data), view(up),
                                                 static_cast<bf16*>(out.data), view(out), n);
  } else {
    swiglu_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(gate.data), view(gate),
                                                 static_cast<const float*>(up.data), view(up),
                                                 static_cast<float*>(out.data), view(out), n);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                      const Tensor& out, DeviceErrorsPtr errors, cudaStream_t stream) {
  PF_CHECK(ids.rows == out.rows && table.cols == out.cols, "embedding: shapes differ");
  PF_CHECK(out.rows <= int64_t(INT32_MAX), "embedding: {} rows exceed one grid", out.rows);
  if (out.numel() == 0) return;
  const int threads = int(std::min<int64_t>(256, ceil_div(out.cols, 32) * 32));
  const int64_t ids_stride = ids.rows <= 1 ? 1 : ids.row_stride;
  if (is_bf16(out)) {
    embedding_kernel<<<unsigned(out.rows), threads, 0, stream>>>(
        static_cast<const bf16*>(table.data), table.rows, table.row_stride,
        static_cast<const int32_t*>(ids.data), ids_stride, vocab_begin,
        static_cast<bf16*>(out.data), out.row_stride, out.cols, errors);
  } else {
    embedding_kernel<<<unsigned(out.rows), threads, 0, stream>>>(
        static_cast<const float*>(table.data), table.rows, table.row_stride,
        static_cast<const int32_t*>(ids.data), ids_stride, vocab_begin,
        static_cast<float*>(out.data), out.row_stride, out.cols, errors);
  }
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace parafuse::cuda

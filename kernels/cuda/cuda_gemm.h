// GEMM through cuBLASLt for the CUDA backend (internal to kernels/cuda).
//
// y (m,n) = x (m,k) * w (n,k)^T + beta * y with row-major tensors: in cuBLAS's column-major
// terms that is y^T (n,m) = w (n,k) * x^T (k,m), i.e. A = w read as a (k,n) column-major matrix
// with TRANSA = T and lda = w's row stride, B = x as (k,m) with TRANSB = N, C = D = y as (n,m)
// with ldc = y's row stride, so strided views cost no copies. BF16 (or F32) inputs, fp32
// compute and scale (CUBLAS_COMPUTE_32F: no TF32 shortcuts), BF16 or F32 output. A plan
// (descriptors, layouts and the heuristic's algorithm) is cached per (shape, strides, dtypes,
// pointer alignment, beta != 0), so a decode loop pays the heuristic once per shape. Operands
// whose address or row pitch is not 16-byte aligned (odd column views) are first packed into
// contiguous aligned scratch (and y unpacked after), so cuBLASLt always gets its fast kernels.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <map>
#include <tuple>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_memory.h"

namespace parafuse::cuda {

class GemmPlans {
 public:
  GemmPlans(DevicePool& pool, size_t workspace_bytes);
  ~GemmPlans();
  GemmPlans(const GemmPlans&) = delete;
  GemmPlans& operator=(const GemmPlans&) = delete;

  // Shapes and dtypes are checked by the caller (CudaBackend::gemm); k > 0, m > 0, n > 0.
  void run(const Tensor& x, const Tensor& w, const Tensor& y, float beta, cudaStream_t stream);

  // FP8 (sm_90): y (m,n) = (xq * x_scales[row]) (m,k) * (w * w.scales[col])^T + beta * y, with
  // xq the activations' E4M3 codes (contiguous, k a multiple of 16), w an F8_E4M3 weight with
  // row scales (16-byte aligned rows), y BF16 or F32. The scales are applied by cuBLASLt
  // (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F: w.scales per output column, x_scales per
  // row); where the library offers no algorithm with them, the product is computed unscaled
  // into F32 scratch and a second kernel applies them (fp8_outer_scales() says which).
  void run_fp8(const void* xq, const float* x_scales, int64_t m, const Tensor& w, const Tensor& y,
               float beta, cudaStream_t stream);
  // Whether the last run_fp8 plan made had cuBLASLt apply the scales (for bench output).
  bool fp8_outer_scales() const { return fp8_outer_scales_; }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int,
                         int, bool>;
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan make_plan(const Key& key);
  // FP8 plans: key (m, n, k, lda, ldc, out type, beta != 0, outer-vector scales).
  using Fp8Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int, bool, bool>;
  bool make_fp8_plan(const Fp8Key& key, Plan* plan);  // false: no algorithm
  // Contiguous scratch `which` (0: x, 1: w, 2: y) of at least `bytes`; never shrinks or moves
  // while in use by a captured graph (old buffers are kept).
  void* scratch(int which, size_t bytes);

  DevicePool& pool_;
  std::vector<Buffer> scratch_[3];
  cublasLtHandle_t handle_ = nullptr;
  Buffer workspace_;
  size_t workspace_bytes_;
  std::map<Key, Plan> plans_;
  std::map<Fp8Key, Plan> fp8_plans_;
  bool fp8_outer_scales_ = true;
};

}  // namespace parafuse::cuda

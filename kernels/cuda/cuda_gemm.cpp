// GemmPlans: cuBLASLt matmul with cached plans (see cuda_gemm.h).
#include "kernels/cuda/cuda_gemm.h"

#include <cstdint>

#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.cuh"

namespace parafuse::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// Largest power of two (<= 256) dividing both the address and the row pitch in bytes.
int alignment(const void* p, int64_t ld, DType t) {
  const uint64_t bits = uint64_t(reinterpret_cast<uintptr_t>(p)) | uint64_t(ld * dtype_size(t));
  int a = 1;
  while (a < 256 && (bits & uint64_t(a)) == 0) a <<= 1;
  return a;
}

int64_t ld_of(const Tensor& t) {
  return t.rows <= 1 ? t.cols : t.row_stride;
}

}  // namespace

GemmPlans::GemmPlans(DevicePool& pool, size_t workspace_bytes)
    : pool_(pool), workspace_(pool.allocate(workspace_bytes)), workspace_bytes_(workspace_bytes) {
  PF_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

GemmPlans::~GemmPlans() {
  for (auto& [key, plan] : fp8_plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
  }
  for (auto& [key, plan] : plans_) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
  }
  if (handle_) cublasLtDestroy(handle_);
}

GemmPlans::Plan GemmPlans::make_plan(const Key& key) {
  const auto [m, n, k, lda, ldb, ldc, in_type, out_type, align_a, align_b, align_c, beta_nonzero] =
      key;
  const cudaDataType_t in = cudaDataType_t(in_type), out = cudaDataType_t(out_type);
  Plan plan;
  PF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                 sizeof(trans_a)));
  PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                 sizeof(trans_b)));
  // A = w as (k, n) column-major, B = x as (k, m), C = D = y as (n, m).
  PF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, in, uint64_t(k), uint64_t(n), lda));
  PF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, in, uint64_t(k), uint64_t(m), ldb));
  PF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, out, uint64_t(n), uint64_t(m), ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  PF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  const uint32_t aa = uint32_t(align_a), ab = uint32_t(align_b), ac = uint32_t(align_c);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa,
                                       sizeof(aa));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab,
                                       sizeof(ab));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac,
                                       sizeof(ac));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac,
                                       sizeof(ac));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t rc = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (rc != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
    PF_THROW(
        "gemm: cuBLASLt has no algorithm for m={} n={} k={} (strides {}/{}/{}, alignment "
        "{}/{}/{} bytes, beta {}): {}",
        m, n, k, ldb, lda, ldc, align_b, align_a, align_c, beta_nonzero ? "!= 0" : "0",
        cublasLtGetStatusString(rc));
  }
  plan.algo = result.algo;
  return plan;
}

void* GemmPlans::scratch(int which, size_t bytes) {
  std::vector<Buffer>& list = scratch_[which];
  if (list.empty() || list.back().bytes() < bytes) list.push_back(pool_.allocate(bytes));
  return list.back().data();
}

void GemmPlans::run(const Tensor& x_in, const Tensor& w_in, const Tensor& y_in, float beta,
                    cudaStream_t stream) {
  // Misaligned operands go through contiguous scratch (cudaMalloc'd: 256-byte aligned).
  auto pitch = [](const Tensor& t) { return size_t(ld_of(t)) * dtype_size(t.dtype); };
  auto aligned = [](const Tensor& t) { return alignment(t.data, ld_of(t), t.dtype) >= 16; };
  auto packed = [&](const Tensor& t, int which, bool copy_in) {
    Tensor c{scratch(which, t.bytes()), t.dtype, t.rows, t.cols, t.cols};
    if (copy_in) {
      PF_CUDA_CHECK(cudaMemcpy2DAsync(c.data, size_t(t.cols) * dtype_size(t.dtype), t.data,
                                      pitch(t), size_t(t.cols) * dtype_size(t.dtype),
                                      size_t(t.rows), cudaMemcpyDeviceToDevice, stream));
    }
    return c;
  };
  const Tensor x = aligned(x_in) ? x_in : packed(x_in, 0, true);
  const Tensor w = aligned(w_in) ? w_in : packed(w_in, 1, true);
  const Tensor y = aligned(y_in) ? y_in : packed(y_in, 2, beta != 0.0f);
  const int64_t m = x.rows, k = x.cols, n = w.rows;
  const int64_t lda = ld_of(w), ldb = ld_of(x), ldc = ld_of(y);
  const Key key{m,
                n,
                k,
                lda,
                ldb,
                ldc,
                int(cuda_type(x.dtype)),
                int(cuda_type(y.dtype)),
                alignment(w.data, lda, w.dtype),
                alignment(x.data, ldb, x.dtype),
                alignment(y.data, ldc, y.dtype),
                beta != 0.0f};
  auto it = plans_.find(key);
  if (it == plans_.end()) it = plans_.emplace(key, make_plan(key)).first;
  const Plan& plan = it->second;
  const float alpha = 1.0f;
  PF_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, w.data, plan.a, x.data, plan.b, &beta,
                                 y.data, plan.c, y.data, plan.c, &plan.algo, workspace_.data(),
                                 workspace_bytes_, stream));
  if (y.data != y_in.data) {
    const size_t width = size_t(y.cols) * dtype_size(y.dtype);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(y_in.data, pitch(y_in), y.data, width, width, size_t(y.rows),
                                    cudaMemcpyDeviceToDevice, stream));
  }
}

bool GemmPlans::make_fp8_plan(const Fp8Key& key, Plan* out) {
  const auto [m, n, k, lda, ldc, out_type, beta_nonzero, outer] = key;
  (void)beta_nonzero;
  Plan plan;
  PF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;  // FP8 wants "TN"
  PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                 sizeof(trans_a)));
  PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                 sizeof(trans_b)));
  if (outer) {
    const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                                   &mode, sizeof(mode)));
    PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                                   &mode, sizeof(mode)));
  }
  const cudaDataType_t y_type = cudaDataType_t(out_type);
  PF_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&plan.a, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(n), lda));
  PF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(m), k));
  PF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, y_type, uint64_t(n), uint64_t(m), ldc));
  cublasLtMatmulPreference_t pref = nullptr;
  PF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t rc = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (rc != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(plan.a);
    cublasLtMatrixLayoutDestroy(plan.b);
    cublasLtMatrixLayoutDestroy(plan.c);
    cublasLtMatmulDescDestroy(plan.desc);
    return false;
  }
  plan.algo = result.algo;
  *out = plan;
  return true;
}

void GemmPlans::run_fp8(const void* xq, const float* x_scales, int64_t m, const Tensor& w,
                        const Tensor& y, float beta, cudaStream_t stream) {
  const int64_t n = w.rows, k = w.cols, lda = ld_of(w);
  PF_CHECK(k % 16 == 0 && lda % 16 == 0 && reinterpret_cast<uintptr_t>(w.data) % 16 == 0,
           "gemm (FP8): k = {} and the weight's row pitch {} must be multiples of 16", k, lda);
  // y must be aligned for cuBLASLt; odd views go through the same scratch as run().
  const bool y_aligned = alignment(y.data, ld_of(y), y.dtype) >= 16;
  auto pitch = [](const Tensor& t) { return size_t(ld_of(t)) * dtype_size(t.dtype); };
  Tensor yc = y;
  if (!y_aligned) {
    yc = Tensor{scratch(2, y.bytes()), y.dtype, y.rows, y.cols, y.cols};
    if (beta != 0.0f)
      PF_CUDA_CHECK(cudaMemcpy2DAsync(yc.data, size_t(y.cols) * dtype_size(y.dtype), y.data,
                                      pitch(y), size_t(y.cols) * dtype_size(y.dtype),
                                      size_t(y.rows), cudaMemcpyDeviceToDevice, stream));
  }
  const int out_type = int(cuda_type(yc.dtype));
  const int64_t ldc = ld_of(yc);
  const Fp8Key outer_key{m, n, k, lda, ldc, out_type, beta != 0.0f, true};
  auto it = fp8_plans_.find(outer_key);
  if (it == fp8_plans_.end()) {
    Plan plan;
    if (make_fp8_plan(outer_key, &plan)) it = fp8_plans_.emplace(outer_key, plan).first;
  }
  const float alpha = 1.0f;
  if (it != fp8_plans_.end()) {
    fp8_outer_scales_ = true;
    const Plan& plan = it->second;
    const void* a_scale = w.scales;
    const void* b_scale = x_scales;
    PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                   &a_scale, sizeof(a_scale)));
    PF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                   &b_scale, sizeof(b_scale)));
    PF_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, w.data, plan.a, xq, plan.b, &beta,
                                   yc.data, plan.c, yc.data, plan.c, &plan.algo, workspace_.data(),
                                   workspace_bytes_, stream));
  } else {
    // No algorithm applies outer-vector scales here: unscaled into F32, then the scales.
    fp8_outer_scales_ = false;
    const Fp8Key plain_key{m, n, k, lda, n, int(CUDA_R_32F), false, false};
    auto p = fp8_plans_.find(plain_key);
    if (p == fp8_plans_.end()) {
      Plan plan;
      PF_CHECK(make_fp8_plan(plain_key, &plan),
               "gemm (FP8): cuBLASLt has no FP8 algorithm for m={} n={} k={} (an sm_89+ GPU "
               "and a cuBLAS with FP8 are needed)",
               m, n, k);
      p = fp8_plans_.emplace(plain_key, plan).first;
    }
    float* acc = static_cast<float*>(scratch(0, size_t(m * n) * sizeof(float)));
    const float zero = 0.0f;
    PF_CUBLAS_CHECK(cublasLtMatmul(handle_, p->second.desc, &alpha, w.data, p->second.a, xq,
                                   p->second.b, &zero, acc, p->second.c, acc, p->second.c,
                                   &p->second.algo, workspace_.data(), workspace_bytes_, stream));
    launch_apply_fp8_scales(acc, x_scales, w.scales, beta, yc, stream);
  }
  if (yc.data != y.data) {
    const size_t width = size_t(y.cols) * dtype_size(y.dtype);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(y.data, pitch(y), yc.data, width, width, size_t(y.rows),
                                    cudaMemcpyDeviceToDevice, stream));
  }
}

}  // namespace parafuse::cuda

// CPU backend: construction, memory, host transfers, copy and GEMM (OpenBLAS).
//
// Host memory is the device memory here, so upload/download are row-by-row memcpy that honour
// the tensor's row_stride. GEMM is one cblas_sgemm call: row-major x (m,k) times w (n,k)^T,
// strides passed as lda/ldb/ldc so strided views need no copies.
#include <cblas.h>  // cblas_sgemm, openblas_set_num_threads (OpenBLAS's cblas.h)

#include <cstdlib>
#include <cstring>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"

namespace parafuse {

namespace cpu_detail {

void require_dtype(Op op, const Tensor& t, const char* what, DType dtype) {
  PF_CHECK(t.dtype == dtype, "{}: {} has dtype {}, but the cpu backend needs {} here", op_name(op),
           what, dtype_name(t.dtype), dtype_name(dtype));
}

void require_tensors(Op op, std::initializer_list<TensorArg> tensors) {
  for (const TensorArg& t : tensors) require_view(op, t.tensor, t.name);
  for (const TensorArg& t : tensors) require_dtype(op, t.tensor, t.name, t.dtype);
}

}  // namespace cpu_detail

using namespace cpu_detail;

CpuBackend::CpuBackend(int threads) : threads_(threads) {
  PF_CHECK(threads >= 1, "cpu backend: threads must be >= 1, got {}", threads);
  openblas_set_num_threads(threads);
}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

bool CpuBackend::supports(Op op, DType dtype) const {
  if (dtype == DType::F32) return true;
  return op == Op::Copy && dtype == DType::I32;
}

Buffer CpuBackend::alloc(size_t bytes) {
  constexpr size_t kAlign = 64;
  // aligned_alloc wants a multiple of the alignment; a zero-byte request still gets real
  // memory so that the tensor over it is not empty().
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  PF_CHECK(p != nullptr, "cpu backend: out of host memory allocating {} bytes", bytes);
  return Buffer(p, bytes, [](void* q) { std::free(q); });
}

namespace {

// Copies a (rows, cols) block row by row between two strided layouts (strides in elements).
void copy_rows(const void* src, int64_t src_stride, void* dst, int64_t dst_stride, int64_t rows,
               int64_t cols, size_t elem) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    std::memmove(d + size_t(r * dst_stride) * elem, s + size_t(r * src_stride) * elem,
                 size_t(cols) * elem);
  }
}

}  // namespace

void CpuBackend::upload_f32(const float* host, const Tensor& dst) {
  require_view(Op::Copy, dst, "upload_f32 dst");
  require_dtype(Op::Copy, dst, "upload_f32 dst", DType::F32);
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_f32: null host pointer");
  copy_rows(host, dst.cols, dst.data, dst.row_stride, dst.rows, dst.cols, sizeof(float));
}

void CpuBackend::upload_i32(const int32_t* host, const Tensor& dst) {
  require_view(Op::Copy, dst, "upload_i32 dst");
  require_dtype(Op::Copy, dst, "upload_i32 dst", DType::I32);
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_i32: null host pointer");
  copy_rows(host, dst.cols, dst.data, dst.row_stride, dst.rows, dst.cols, sizeof(int32_t));
}

void CpuBackend::download_f32(const Tensor& src, float* host) {
  require_view(Op::Copy, src, "download_f32 src");
  PF_CHECK(host != nullptr || src.numel() == 0, "download_f32: null host pointer");
  if (src.dtype == DType::F32) {
    copy_rows(src.data, src.row_stride, host, src.cols, src.rows, src.cols, sizeof(float));
    return;
  }
  PF_CHECK(src.dtype == DType::I32,
           "download_f32: src has dtype {}; the cpu backend holds F32 "
           "and I32 only",
           dtype_name(src.dtype));
  for (int64_t r = 0; r < src.rows; ++r) {
    const int32_t* s = src.i32() + r * src.row_stride;
    float* d = host + r * src.cols;
    for (int64_t c = 0; c < src.cols; ++c) d[c] = float(s[c]);
  }
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  require_view(Op::Copy, src, "src");
  require_view(Op::Copy, dst, "dst");
  check_copy_shapes(src, dst);
  PF_CHECK(supports(Op::Copy, src.dtype), "copy: dtype {} is not supported by the cpu backend",
           dtype_name(src.dtype));
  copy_rows(src.data, src.row_stride, dst.data, dst.row_stride, src.rows, src.cols,
            dtype_size(src.dtype));
}

void CpuBackend::gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta) {
  require_tensors(Op::Gemm, {{x, "x", DType::F32}, {w, "w", DType::F32}, {y, "y", DType::F32}});
  check_gemm_shapes(x, w, y);
  const int64_t m = x.rows, k = x.cols, n = w.rows;
  PF_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && x.row_stride <= INT32_MAX &&
               w.row_stride <= INT32_MAX && y.row_stride <= INT32_MAX,
           "gemm: shape ({}, {}, {}) exceeds the 32-bit BLAS interface", m, n, k);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS's lda >= max(1, k) rule makes k == 0 awkward; y = beta * y directly.
    for (int64_t r = 0; r < m; ++r) {
      float* yr = y.f32() + r * y.row_stride;
      for (int64_t c = 0; c < n; ++c) yr[c] = beta == 0.0f ? 0.0f : beta * yr[c];
    }
    return;
  }
  // Strides of single-row views can be anything; BLAS only wants them >= the row length.
  auto ld = [](const Tensor& t) { return int(t.rows == 1 ? t.cols : t.row_stride); };
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x.f32(), ld(x),
              w.f32(), ld(w), beta, y.f32(), ld(y));
}

}  // namespace parafuse

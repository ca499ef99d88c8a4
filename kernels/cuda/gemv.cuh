// Launchers of the small-M and FP8 kernels (gemv.cu): the decode GEMV that reads BF16 or FP8
// weights directly, and the FP8 helpers of the cuBLASLt FP8 GEMM (activation quantization, the
// scale epilogue of the fallback plan, weight dequantization). Plain C++ declarations, so host
// .cpp files include them; shapes and dtypes are checked by CudaBackend::gemm.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/backend.h"

namespace parafuse::cuda {

// Rows of activations up to which gemm runs as a GEMV (each weight row read once for all rows).
constexpr int64_t kGemvMaxRows = 8;

// y (m,n) = x (m,k) * w (n,k)^T [* w.scales[n]] + beta * y for 1 <= m <= kGemvMaxRows: one warp
// per output column, 16-byte weight loads (8 BF16 or 16 FP8 codes a lane), fp32 accumulation,
// no split-K and no second kernel. w: BF16, or F8_E4M3 with row scales; x: F32 or BF16; y: F32
// or x's dtype.
void launch_gemv(const Tensor& x, const Tensor& w, const Tensor& y, float beta,
                 cudaStream_t stream);

// x (m,k) F32/BF16 -> codes (m,k) E4M3 (contiguous, `codes` bytes) and scales[m]: with
// static_scale > 0 every row uses it (ModelOpt input_scale), else each row its own amax / 448
// (1 for a zero row). Values beyond +-448 * scale saturate.
void launch_quantize_rows_fp8(const Tensor& x, float static_scale, void* codes, float* scales,
                              cudaStream_t stream);

// y (m,n) = acc (m,n, F32 contiguous) * row_scales[m] * col_scales[n] + beta * y: the scales of
// an FP8 GEMM whose cuBLASLt plan could not apply them itself.
void launch_apply_fp8_scales(const float* acc, const float* row_scales, const float* col_scales,
                             float beta, const Tensor& y, cudaStream_t stream);

// out (n,k) F32/BF16 = code * w.scales[row] for an F8_E4M3 weight w (n,k).
void launch_dequantize_fp8(const Tensor& w, const Tensor& out, cudaStream_t stream);

}  // namespace parafuse::cuda

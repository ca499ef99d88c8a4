// Launchers of the element-wise kernels (elementwise.cu): dtype conversion / strided copy,
// scale, add, SwiGLU and the embedding gather. Plain C++ declarations, so host .cpp files
// include them. Every launcher takes the stream explicitly, checks the shapes it relies on and
// checks the launch; the dtype checks with op names live in CudaBackend (cuda_backend.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_common_host.h"

namespace parafuse::cuda {

// dst (r,c) = convert(src (r,c)): F32 <-> BF16, I32 -> F32, or the same dtype (a strided copy).
void launch_convert(const Tensor& src, const Tensor& dst, cudaStream_t stream);
// y (m,n) = beta * y, or 0 when beta == 0 (NaN in y does not survive): GEMM with k == 0.
void launch_scale(const Tensor& y, float beta, cudaStream_t stream);
// out = a + b (same shape and dtype; out may alias a or b element for element).
void launch_add(const Tensor& a, const Tensor& b, const Tensor& out, cudaStream_t stream);
// out (m,f) = silu(gate) * up in fp32.
void launch_swiglu(const Tensor& gate, const Tensor& up, const Tensor& out, cudaStream_t stream);
// out (m,d) = table[ids - vocab_begin], zero rows for ids outside the table; a negative id is
// recorded in `errors` (its row is zeroed).
void launch_embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                      const Tensor& out, DeviceErrorsPtr errors, cudaStream_t stream);

}  // namespace parafuse::cuda

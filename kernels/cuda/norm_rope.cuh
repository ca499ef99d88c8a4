// Launchers of RMSNorm (optionally fused with the residual add) and rotate-half RoPE
// (norm_rope.cu). Plain C++ declarations; explicit stream, shape checks, launch checks.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_common_host.h"

namespace parafuse::cuda {

// y (m,d) = x / rms(x) * weight (1,d) (empty weight: ones). With a non-empty `residual`
// (m,d), first x += residual (written back to x, rounded to x's dtype), then the norm of the
// sum: the residual add and the next block's norm in one pass over the hidden state.
// y may alias x.
void launch_rmsnorm(const Tensor& x, const Tensor& residual, const Tensor& weight, float eps,
                    const Tensor& y, cudaStream_t stream);

// In place on x (m, n_heads*head_dim): rotate-half RoPE with positions (m,1) I32 and inv_freq
// (1, head_dim/2) F32. A negative position is recorded in `errors` and its row left unrotated.
void launch_rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
                 int head_dim, DeviceErrorsPtr errors, cudaStream_t stream);

}  // namespace parafuse::cuda

// The CUDA and cuBLAS check macros: every runtime / cuBLAS(Lt) call of kernels/cuda goes
// through one of these, so a failure becomes a parafuse::Error with file:line, the call's text
// and the library's own error string (never an abort or a silently ignored status).
// PF_CUDA_CHECK_LAUNCH() follows every kernel launch: it catches bad launch configurations
// at the launch site instead of at the next synchronization.
#pragma once

#include <cublasLt.h>          // cublasStatus_t, cublasLtGetStatusString
#include <cuda_runtime_api.h>  // cudaError_t, cudaGetErrorString, cudaGetLastError

#include "kernels/core/error.h"

#define PF_CUDA_CHECK(call)                                                         \
  do {                                                                              \
    const cudaError_t pf_cuda_rc_ = (call);                                         \
    if (pf_cuda_rc_ != cudaSuccess) {                                               \
      PF_THROW("CUDA error in {}: {} ({})", #call, cudaGetErrorString(pf_cuda_rc_), \
               cudaGetErrorName(pf_cuda_rc_));                                      \
    }                                                                               \
  } while (0)

#define PF_CUBLAS_CHECK(call)                                                                \
  do {                                                                                       \
    const cublasStatus_t pf_cublas_rc_ = (call);                                             \
    if (pf_cublas_rc_ != CUBLAS_STATUS_SUCCESS) {                                            \
      PF_THROW("cuBLAS error in {}: {} ({})", #call, cublasLtGetStatusString(pf_cublas_rc_), \
               int(pf_cublas_rc_));                                                          \
    }                                                                                        \
  } while (0)

// After a <<<...>>> launch: configuration errors (too many threads, too much shared memory).
#define PF_CUDA_CHECK_LAUNCH() PF_CUDA_CHECK(cudaGetLastError())

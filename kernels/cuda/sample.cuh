// Launcher of device sampling (sample.cu): one token id per row of F32 logits, following the
// rule stated at SamplingParams (kernels/backend.h) exactly as kernels/cpu does.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"

namespace parafuse::cuda {

// What the kernel reports per row (one 16-byte record, so one copy brings ids and errors back).
struct SampleResult {
  int32_t id = -1;
  int32_t code = 0;    // 0 ok, 1 NaN logit at `token`, 2 non-finite maximum with temperature
  int64_t token = -1;  // first NaN token (code 1)
};
constexpr int32_t kSampleNaN = 1;
constexpr int32_t kSampleNonFiniteMax = 2;

// logits (m, vocab) F32 on the device; params (m) and results (m) in device memory.
void launch_sample(const Tensor& logits, const SamplingParams* params, SampleResult* results,
                   cudaStream_t stream);

}  // namespace parafuse::cuda

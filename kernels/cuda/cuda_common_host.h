// Host-side pieces shared by the launchers of kernels/cuda: the opaque device error record
// pointer and the launch-geometry helper. Plain C++ (no CUDA syntax).
#pragma once

#include <algorithm>
#include <cstdint>

namespace parafuse::cuda {

// The sticky error record kernels write bad *data* into (device memory, one per backend); the
// first error wins. CudaBackend reads it at synchronization points.
enum DeviceErrorCode : int { kNoError = 0, kNegativePosition = 1, kNegativeTokenId = 2 };
struct DeviceErrors {
  int code;
  int pad;
  long long row;    // row of the offending element
  long long value;  // the offending value
};
using DeviceErrorsPtr = DeviceErrors*;

// Blocks for a grid-stride loop over n elements with `threads` per block: enough to fill an
// H200 (132 SMs x 2048 threads) several times over, never more than the work needs.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t needed = (n + threads - 1) / threads;
  return unsigned(std::clamp<int64_t>(needed, 1, 132 * 32));
}

}  // namespace parafuse::cuda

// CPU backend: FP8 (E4M3) weights with one scale per row, the reference FP8 path.
//
// The weight stays in memory as its codes (one byte per element) plus its row scales; a GEMM
// dequantizes it tile by tile to F32, value = f8_e4m3_to_f32(code) * scales[row] (the same
// float product the safetensors reader makes, so the result equals that of the same weights
// dequantized to an F32 checkpoint), and multiplies through the F32 path. The static
// input_scale is not used: the CPU computes with exact activations.
#include <algorithm>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/core/fp8.h"
#include "kernels/cpu/cpu_backend.h"

namespace parafuse {

namespace {

// f8_e4m3_to_f32 for every code, built once.
const float* fp8_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (int c = 0; c < 256; ++c) t[size_t(c)] = f8_e4m3_to_f32(uint8_t(c));
    return t;
  }();
  return table.data();
}

}  // namespace

void dequantize_fp8_rows(const Tensor& w, int64_t row_begin, int64_t row_end, float* out) {
  PF_CHECK(w.dtype == DType::F8_E4M3 && w.scales != nullptr,
           "FP8 weight ({}, {}) has no row scales", w.rows, w.cols);
  const float* table = fp8_table();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = static_cast<const uint8_t*>(w.data) + size_t(r * w.row_stride);
    const float s = w.scales[r];
    float* dst = out + size_t(r - row_begin) * size_t(w.cols);
    for (int64_t c = 0; c < w.cols; ++c) dst[c] = table[codes[c]] * s;
  }
}

void CpuBackend::gemm_fp8(const Tensor& x, const Tensor& w, const Tensor& y, float beta) {
  // Tiles of output rows, each multiplied as an F32 weight: every output column's dot product
  // is the F32 path's for the same values.
  constexpr size_t kTileBytes = size_t(8) << 20;
  const int64_t tile_rows =
      std::max<int64_t>(1, int64_t(kTileBytes / (size_t(std::max<int64_t>(w.cols, 1)) * 4)));
  std::vector<float> tile;
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t r1 = std::min(w.rows, r0 + tile_rows);
    tile.resize(size_t((r1 - r0) * w.cols));
    dequantize_fp8_rows(w, r0, r1, tile.data());
    const Tensor wt{tile.data(), DType::F32, r1 - r0, w.cols, w.cols};
    gemm(x, wt, y.cols_view(r0, r1), beta);
  }
}

}  // namespace parafuse

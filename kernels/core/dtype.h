// Element types and the scalar conversions every part of parafuse shares.
//
// Q8_0 / Q4_0 / Q4_1 are GGML's 32-element block formats (layouts in kernels/core/quant.h).
// A backend that multiplies by them directly (Backend::supports_weight; the CPU backend does)
// keeps weights in that format; for any other backend the loaders dequantize to F32. Block
// types have no per-element size: use dtype_row_bytes() for the bytes of n elements.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace parafuse {

// F8_E4M3: FP8 checkpoints' weight storage (kernels/core/fp8.h); a loader applies the scales.
enum class DType : uint8_t { F32, F16, BF16, I32, Q8_0, Q4_0, Q4_1, F8_E4M3 };

std::string_view dtype_name(DType t);

// Bytes per element for the plain types; throws for block-quantized ones.
size_t dtype_size(DType t);

// Elements per storage block: 32 for Q8_0 / Q4_0 / Q4_1, 1 for the plain types.
int64_t dtype_block_elements(DType t);
// Bytes per storage block (for the plain types: per element).
size_t dtype_block_bytes(DType t);
inline bool dtype_is_quantized(DType t) {
  return dtype_block_elements(t) > 1;
}
// Bytes of `n` consecutive elements of one row; n must be a whole number of blocks (an Error
// otherwise).
size_t dtype_row_bytes(DType t, int64_t n);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
// Round to nearest even; NaN stays NaN, overflow becomes Inf.
uint16_t f32_to_f16(float f);

}  // namespace parafuse

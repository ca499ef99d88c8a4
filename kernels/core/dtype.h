// Element types and the scalar conversions every part of parafuse shares.
//
// Quantized GGUF types appear only as storage formats of weight files: they are dequantized
// on load, so a Backend sees F32 / F16 / BF16 (and I32 for token ids) alone.
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

}  // namespace parafuse

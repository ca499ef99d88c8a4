#include "kernels/core/dtype.h"

#include "kernels/core/error.h"

namespace parafuse {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::F8_E4M3: return "F8_E4M3";
  }
  return "?";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::I32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F8_E4M3: return 1;
    default: PF_THROW("dtype {} has no per-element size (block-quantized)", dtype_name(t));
  }
}

int64_t dtype_block_elements(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1: return 32;
    default: return 1;
  }
}

size_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::Q8_0: return 2 + 32;     // f16 scale, 32 x int8
    case DType::Q4_0: return 2 + 16;     // f16 scale, 32 x 4-bit
    case DType::Q4_1: return 2 + 2 + 16; // f16 scale, f16 min, 32 x 4-bit
    default: return dtype_size(t);
  }
}

size_t dtype_row_bytes(DType t, int64_t n) {
  const int64_t per_block = dtype_block_elements(t);
  PF_CHECK(n >= 0 && n % per_block == 0,
           "{} elements of {} are not a whole number of its {}-element blocks", n, dtype_name(t),
           per_block);
  return size_t(n / per_block) * dtype_block_bytes(t);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t absbits = bits & 0x7fffffffu;
  if (absbits > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (absbits >= 0x477ff000u) return sign | 0x7c00u;  // overflow -> Inf
  if (absbits < 0x38800000u) {                        // subnormal or zero in half
    if (absbits < 0x33000000u) return sign;
    const uint32_t exp = absbits >> 23;
    const uint32_t mant = (absbits & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // half subnormal unit is 2^-24
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t result = mant >> shift;
    if (rem > halfway || (rem == halfway && (result & 1u))) ++result;
    return uint16_t(sign | result);
  }
  uint32_t result = ((absbits >> 13) - (112u << 10));
  const uint32_t rem = absbits & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (result & 1u))) ++result;
  return uint16_t(sign | result);
}

}  // namespace parafuse

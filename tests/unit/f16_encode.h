// Float -> IEEE half, round to nearest even (NaN stays NaN, overflow becomes Inf): how the tests
// write F16 fixtures. parafuse itself only reads F16 (kernels/core/dtype.h's f16_to_f32).
#pragma once

#include <cstdint>
#include <cstring>

namespace parafuse {

inline uint16_t f32_to_f16(float f) {
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

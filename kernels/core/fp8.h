// FP8 E4M3 ("e4m3fn", OCP 8-bit floating point): the weight format of FP8 checkpoints
// (ModelOpt, compressed-tensors) and of FP8 GEMMs on Hopper.
//
// 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits. Exponent 0 holds the subnormals
// m/8 * 2^-6; there is no infinity, and S.1111.111 is the only NaN, so the largest finite value
// is 1.75 * 2^8 = 448. The positive codes 0x00..0x7e are in increasing order of value, which
// the encoder uses: it picks the nearest code, ties to the one with an even mantissa, and
// saturates at +-448 (as quantizers clamp before casting).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace parafuse {

constexpr float kF8E4M3Max = 448.0f;

constexpr float f8_e4m3_to_f32(uint8_t code) {
  const int exponent = (code >> 3) & 0xf;
  const int mantissa = code & 0x7;
  const float sign = (code & 0x80) ? -1.0f : 1.0f;
  if (exponent == 0xf && mantissa == 0x7) return __builtin_nanf("");
  if (exponent == 0) return sign * float(mantissa) * (1.0f / 512.0f);  // m/8 * 2^-6
  float magnitude = 1.0f + float(mantissa) / 8.0f;
  for (int e = exponent - 7; e > 0; --e) magnitude *= 2.0f;
  for (int e = exponent - 7; e < 0; ++e) magnitude *= 0.5f;
  return sign * magnitude;
}

// Nearest E4M3 code; ties to even; |x| >= 448 saturates to +-448; NaN -> the NaN code. Bit
// arithmetic (a load quantizes billions of weights): normals keep the float's exponent and
// round its 23-bit mantissa to 3 bits, the carry running into the exponent; below 2^-6 the
// value is a whole number of 2^-9 steps, rounded half to even. (tests/unit/test_fp8.cpp checks
// it against a search over the codes for millions of floats.)
inline uint8_t f32_to_f8_e4m3(float x) {
  uint32_t bits = 0;
  std::memcpy(&bits, &x, sizeof bits);
  const uint8_t sign = uint8_t((bits >> 24) & 0x80);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return uint8_t(sign | 0x7f);  // NaN
  const float a = std::fabs(x);
  if (a >= kF8E4M3Max) return uint8_t(sign | 0x7e);
  if (a < 0.015625f) {  // subnormal range: multiples of 2^-9 (a * 512 is exact)
    return uint8_t(sign | uint8_t(std::nearbyint(a * 512.0f)));  // 8 = 2^-6, the first normal
  }
  // exponent e in [-6, 8] -> biased e + 7 in bits 3..6; mantissa rounded to nearest even.
  const uint32_t exponent = ((abs_bits >> 23) & 0xffu) - 127u + 7u;
  uint32_t v = (exponent << 23) | (abs_bits & 0x7fffffu);
  v += 0x7ffffu + ((v >> 20) & 1u);
  return uint8_t(sign | uint8_t(v >> 20));
}

// Per-channel quantization of one row as FP8 checkpoints and `--dtype fp8` do it: scale =
// max |v| / 448 (1 for an all-zero row), code = nearest E4M3 of v / scale. Returns the scale;
// the row's dequantized values are f8_e4m3_to_f32(code) * scale. codes == nullptr: the scale
// only.
inline float quantize_row_e4m3(const float* v, int64_t n, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(v[i]));
  const float scale = amax > 0.0f && std::isfinite(amax) ? amax / kF8E4M3Max : 1.0f;
  if (codes == nullptr) return scale;
  for (int64_t i = 0; i < n; ++i) codes[i] = f32_to_f8_e4m3(v[i] / scale);
  return scale;
}

}  // namespace parafuse

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

// Nearest E4M3 code; ties to even; |x| >= 448 saturates to +-448; NaN -> the NaN code.
inline uint8_t f32_to_f8_e4m3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return uint8_t(sign | 0x7f);
  const float a = std::fabs(x);
  if (a >= kF8E4M3Max) return uint8_t(sign | 0x7e);
  // The largest positive code whose value is <= a (codes 0..0x7e ascend).
  int lo = 0, hi = 0x7e;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (f8_e4m3_to_f32(uint8_t(mid)) <= a) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  int code = lo;
  if (code < 0x7e) {
    const float below = f8_e4m3_to_f32(uint8_t(code)), above = f8_e4m3_to_f32(uint8_t(code + 1));
    const float to_below = a - below, to_above = above - a;
    if (to_above < to_below || (to_above == to_below && (code & 1))) ++code;
  }
  return uint8_t(sign | code);
}

// Per-channel quantization of one row as FP8 checkpoints and `--dtype fp8` do it: scale =
// max |v| / 448 (1 for an all-zero row), code = nearest E4M3 of v / scale. Returns the scale;
// the row's dequantized values are f8_e4m3_to_f32(code) * scale.
inline float quantize_row_e4m3(const float* v, int64_t n, uint8_t* codes) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::fmax(amax, std::fabs(v[i]));
  const float scale = amax > 0.0f && std::isfinite(amax) ? amax / kF8E4M3Max : 1.0f;
  for (int64_t i = 0; i < n; ++i) codes[i] = f32_to_f8_e4m3(v[i] / scale);
  return scale;
}

}  // namespace parafuse

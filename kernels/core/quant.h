// GGML's block-quantized weight formats, and the readable scalar code that defines them.
//
// A row of n elements (n a multiple of 32) is n/32 blocks stored back to back, each block
// self-contained (layouts below, byte-compatible with GGUF). Nothing here is fast: these loops
// are the definition every SIMD kernel (kernels/cpu/cpu_gemv_*.cpp) and every loader
// (runtime/model/gguf.cpp) is checked against.
//
// Activations that meet a Q4_0 / Q4_1 / Q8_0 weight in a dot product are quantized too, per
// 32-element block, to ActivationBlock: int16 values with a float scale, and the scaled sum of the
// values that the Q4_0 / Q4_1 offsets need. llama.cpp pairs Q4 weights with int8 activations; we
// take int16 because int8's rounding (relative ~1/127 per block) moved SmolLM2's logits by up
// to 1.6 and split greedy decoding from the F32 reference at top-2 margins above 0.1, while int16
// (~1/32767) is invisible there, and on AVX2 an int16 dot (vpmovzxbw + 2 vpmaddwd) costs what
// the int8 one (vpmaddubsw + vpmaddwd) does. Q8_0 weights (SmolLM2's tied LM head) meet the
// same blocks: int8 widened to int16 (vpmovsxbw) takes about half the instructions of widening
// the weight to floats. Decode (GEMV) and prefill (the panels of kernels/cpu/cpu_kernels.h) use
// the same blocks, so both compute the same integer dots.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/core/dtype.h"

namespace parafuse {

constexpr int64_t kQuantBlockElements = 32;

// value[i] = q[i] * d
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t q[32];
};
// value[i] = (nibble[i] - 8) * d; byte j holds element j (low nibble) and j + 16 (high nibble)
struct BlockQ4_0 {
  uint16_t d;  // f16 scale
  uint8_t q[16];
};
// value[i] = nibble[i] * d + m; nibbles as in Q4_0
struct BlockQ4_1 {
  uint16_t d;  // f16 scale
  uint16_t m;  // f16 minimum
  uint8_t q[16];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);

// One 32-element block of an activation row: value[i] ~= q[i] * d, sum = d * sum(q).
// (sum is exact for the rounded values: |sum(q)| <= 32 * 32767 < 2^24.)
struct ActivationBlock {
  float d;
  float sum;
  int16_t q[32];
};

// Dequantize one 32-element block of `type` (Q8_0 / Q4_0 / Q4_1) into out[32].
void dequantize_block(DType type, const void* block, float* out);

// Dequantize n elements (the first n of a row) stored as `type` (any weight type: F32, F16,
// BF16, Q8_0, Q4_0, Q4_1); block types need n to be a multiple of 32.
void dequantize_row(DType type, const void* row, int64_t n, float* out);

// Quantize n floats (a multiple of 32 for block types) to `type` (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1) with llama.cpp's reference rounding: Q8_0 d = amax/127, Q4_0 d = max/-8 (the element of
// largest magnitude maps to -8), Q4_1 d = (max-min)/15, m = min. For tests and tools.
void quantize_row(DType type, const float* x, int64_t n, void* out);

// Quantize n activations (a multiple of 32) to n/32 ActivationBlocks: d = amax/32767,
// q = round-half-even(x * (1/d)).
void quantize_activations(const float* x, int64_t n, ActivationBlock* out);

}  // namespace parafuse

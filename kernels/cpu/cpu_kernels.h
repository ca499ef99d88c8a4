// The CPU backend's inner loops, one set per instruction set, chosen once at run time.
//
// The build never assumes more than baseline x86-64: cpu_gemv_avx2.cpp and cpu_gemv_avx512.cpp
// are compiled with their own -m flags (kernels/CMakeLists.txt) and hold nothing but these
// loops, and cpu_kernels.cpp picks the best set this CPU has (__builtin_cpu_supports) the first
// time it is asked. The generic set is plain C++ written from kernels/core/quant.h, and the
// reference the others are tested against (tests/unit/test_backend_ops.cpp). Every function
// works on plain arrays; threading and shapes are the callers' business (cpu_quant.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/core/dtype.h"
#include "kernels/core/quant.h"

namespace parafuse::cpu_kernels {

// out[r] = dot(weight row r, x) for `rows` rows of k elements, row r at w + r * row_bytes.
// Q8_0 / Q4_0 / Q4_1 rows take x as k/32 ActivationBlocks (activations_quantized()); F32, F16
// and BF16 rows take k floats.
using GemvFn = void (*)(const void* w, size_t row_bytes, int64_t rows, const void* x, int64_t k,
                        float* out);
// n activations (a multiple of 32) -> n/32 ActivationBlocks, bit-identical to
// parafuse::quantize_activations.
using QuantizeFn = void (*)(const float* x, int64_t n, ActivationBlock* out);
// The first k elements of a weight row -> k floats (as parafuse::dequantize_row).
using DequantizeFn = void (*)(const void* row, int64_t k, float* out);

// Prefill (many activation rows) on block-quantized weights (Q8_0 / Q4_0 / Q4_1): the weight is
// packed kPanelCols rows (output columns) at a time into a panel, and a tile kernel multiplies
// the panel by activation rows quantized to int16 ActivationBlocks, as the GEMV does, so that
// prefill and decode compute the same integer dots. Panel layout, for block b, element pair p
// (elements 2p and 2p + 1 of the block) and column c < kPanelCols:
//   pairs[(b * 16 + p) * kPanelCols + c]  the column's two elements as int16 (low half 2p),
//                                         i.e. what vpmaddwd multiplies by an activation pair
//   dm[b * 2 * kPanelCols + c]            the block's scale d, and at + kPanelCols its offset c0:
//                                         element = d * n + c0 (Q4_0: c0 = -8 d; Q8_0: 0)
// Columns from `cols` to kPanelCols are packed as zeros.
constexpr int kPanelCols = 32;
using PackPanelFn = void (*)(const void* w, size_t row_bytes, int cols, int64_t nb, int32_t* pairs,
                             float* dm);
// y[r * ldy + c] = dot(panel column c, x row r) + beta * y[r * ldy + c] for r < rows, c < cols
// (beta 0 overwrites: NaNs in y never leak through); x row r is x[r * nb .. r * nb + nb). Per
// block, in float: acc = fma(float(integer dot), d_w * d_x, acc); acc = fma(c0_w, sum_x, acc) —
// the same in every kernel set, so every set gives bit-identical results.
using PanelGemmFn = void (*)(const ActivationBlock* x, int64_t rows, int64_t nb,
                             const int32_t* pairs, const float* dm, int cols, float beta, float* y,
                             int64_t ldy);

// Keys per tile of the blocked attention kernels (attention_scores_tile / _accumulate_tile).
constexpr int kAttentionTileKeys = 64;

// An aggregate with no member initializers on purpose: the per-ISA sources fill one in, and a
// trivial struct has no inline constructor that their -m flags could leak into shared code.
// Make one as `KernelSet s{};`.
struct KernelSet {
  const char* isa;  // "avx512-vnni", "avx2", "generic"
  GemvFn gemv_f32, gemv_f16, gemv_bf16;
  GemvFn gemv_q8_0, gemv_q4_0, gemv_q4_1;
  QuantizeFn quantize;
  // Attention's and SwiGLU's inner loops (float32; exp by a polynomial of relative error ~2e-7
  // in the SIMD sets, std::exp in the generic one).
  // out[j] = q . keys[j] for n keys of hd floats; acc += sum_j p[j] values[j].
  void (*attention_scores)(const float* q, const float* const* keys, int n, int64_t hd, float* out);
  void (*attention_accumulate)(float* acc, const float* p, const float* const* values, int n,
                               int64_t hd);
  // The same over an F16 KV cache: keys and values stored as IEEE halves.
  void (*attention_scores_f16)(const float* q, const uint16_t* const* keys, int n, int64_t hd,
                               float* out);
  void (*attention_accumulate_f16)(float* acc, const float* p, const uint16_t* const* values, int n,
                                   int64_t hd);
  // n floats -> IEEE halves, round to nearest even: bit-identical to parafuse::f32_to_f16 in
  // every set, except that a NaN may keep its payload (kv_store into an F16 cache).
  void (*to_f16)(const float* x, int64_t n, uint16_t* out);
  // Blocked (prefill) attention over one tile of kAttentionTileKeys = T keys, for nq query
  // vectors (a multiple of 4) of hdp floats (a multiple of 16), all row-major:
  // scores[i T + j] = q[i hdp ..] . kt[.. T + j] (kt: the tile's keys transposed, hdp x T);
  // acc[i hdp + d] += sum_j p[i T + j] v[j hdp + d] (v: the tile's values, T x hdp).
  void (*attention_scores_tile)(const float* q, int nq, int64_t hdp, const float* kt,
                                float* scores);
  void (*attention_accumulate_tile)(float* acc, int nq, int64_t hdp, const float* p,
                                    const float* v);
  float (*exp_shift_sum)(float* x, int64_t n, float shift);  // x = exp(x - shift); sum
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);  // silu(g) u
  DequantizeFn dequant_f16, dequant_bf16;
  DequantizeFn dequant_q8_0, dequant_q4_0, dequant_q4_1;
  PackPanelFn pack_q8_0, pack_q4_0, pack_q4_1;
  PanelGemmFn panel_gemm;

  GemvFn gemv(DType w) const;  // throws for a type with no kernel
  // Whether gemv(w) takes ActivationBlocks rather than floats.
  static bool activations_quantized(DType w) {
    return w == DType::Q8_0 || w == DType::Q4_0 || w == DType::Q4_1;
  }
  DequantizeFn dequantize(DType w) const;  // F32 has none (use the row as it is)
  PackPanelFn pack_panel(DType w) const;   // Q8_0 / Q4_0 / Q4_1 only
};

// The best set this CPU runs.
const KernelSet& best_kernels();
// A named set ("avx512-vnni", "avx2", "generic"), or nullptr where this CPU lacks it.
const KernelSet* kernels_named(const char* isa);

// Sets defined in the per-ISA sources.
KernelSet generic_kernels();
KernelSet avx2_kernels();
KernelSet avx512_kernels();

}  // namespace parafuse::cpu_kernels

// The generic (plain C++) kernel set and the run-time choice of a set. See cpu_kernels.h.
#include "kernels/cpu/cpu_kernels.h"

#if PARAFUSE_X86_KERNELS
#include <cpuid.h>  // __get_cpuid, bit_F16C
#endif

#include <algorithm>
#include <cmath>
#include <string_view>

#include "kernels/core/error.h"

namespace parafuse::cpu_kernels {
namespace {

// sum of n_i * q_i over one block, n the 32 unpacked nibbles (Q4 layout) of `q`.
int nibble_dot(const uint8_t* q, const int16_t* x) {
  int sum = 0;
  for (int i = 0; i < 16; ++i) sum += int(q[i] & 0x0f) * x[i] + int(q[i] >> 4) * x[i + 16];
  return sum;
}

float dot_q8_0(const BlockQ8_0* w, const ActivationBlock* x, int64_t nb) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int block = 0;  // |block| <= 32 * 128 * 32767 < 2^31
    for (int i = 0; i < 32; ++i) block += int(w[b].q[i]) * x[b].q[i];
    sum += float(block) * (f16_to_f32(w[b].d) * x[b].d);
  }
  return sum;
}

float dot_q4_0(const BlockQ4_0* w, const ActivationBlock* x, int64_t nb) {
  float sum = 0.0f, offset = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(w[b].d);
    sum += float(nibble_dot(w[b].q, x[b].q)) * (d * x[b].d);
    offset += d * x[b].sum;
  }
  return sum - 8.0f * offset;
}

float dot_q4_1(const BlockQ4_1* w, const ActivationBlock* x, int64_t nb) {
  float sum = 0.0f, offset = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    sum += float(nibble_dot(w[b].q, x[b].q)) * (f16_to_f32(w[b].d) * x[b].d);
    offset += f16_to_f32(w[b].m) * x[b].sum;
  }
  return sum + offset;
}

template <DType kType>
void gemv_float(const void* w, size_t row_bytes, int64_t rows, const void* x, int64_t k,
                float* out) {
  const float* xv = static_cast<const float*>(x);
  float row[256];  // dequantized a chunk at a time
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* wr = static_cast<const uint8_t*>(w) + size_t(r) * row_bytes;
    float sum = 0.0f;
    for (int64_t c0 = 0; c0 < k; c0 += 256) {
      const int64_t n = std::min<int64_t>(256, k - c0);
      dequantize_row(kType, wr + dtype_row_bytes(kType, c0), n, row);
      for (int64_t i = 0; i < n; ++i) sum += row[i] * xv[c0 + i];
    }
    out[r] = sum;
  }
}

template <class Block, class X, float (*kDot)(const Block*, const X*, int64_t)>
void gemv_blocks(const void* w, size_t row_bytes, int64_t rows, const void* x, int64_t k,
                 float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const auto* wr =
        reinterpret_cast<const Block*>(static_cast<const uint8_t*>(w) + size_t(r) * row_bytes);
    out[r] = kDot(wr, static_cast<const X*>(x), k / kQuantBlockElements);
  }
}

// A weight block's 32 elements as integers n (element = d * n + c0), with d and c0.
void block_ints(const BlockQ8_0& b, int n[32], float& d, float& c0) {
  d = f16_to_f32(b.d);
  c0 = 0.0f;
  for (int i = 0; i < 32; ++i) n[i] = b.q[i];
}
void nibble_ints(const uint8_t* q, int n[32]) {
  for (int i = 0; i < 16; ++i) {
    n[i] = q[i] & 0x0f;
    n[i + 16] = q[i] >> 4;
  }
}
void block_ints(const BlockQ4_0& b, int n[32], float& d, float& c0) {
  d = f16_to_f32(b.d);
  c0 = -8.0f * d;
  nibble_ints(b.q, n);
}
void block_ints(const BlockQ4_1& b, int n[32], float& d, float& c0) {
  d = f16_to_f32(b.d);
  c0 = f16_to_f32(b.m);
  nibble_ints(b.q, n);
}

template <class Block>
void pack_panel_plain(const void* w, size_t row_bytes, int cols, int64_t nb, int32_t* pairs,
                      float* dm) {
  for (int c = 0; c < kPanelCols; ++c) {
    const auto* row =
        reinterpret_cast<const Block*>(static_cast<const uint8_t*>(w) + size_t(c) * row_bytes);
    for (int64_t b = 0; b < nb; ++b) {
      int n[32] = {};
      float d = 0.0f, c0 = 0.0f;
      if (c < cols) block_ints(row[b], n, d, c0);
      for (int p = 0; p < 16; ++p)
        pairs[(b * 16 + p) * kPanelCols + c] =
            int32_t(uint32_t(uint16_t(n[2 * p])) | uint32_t(uint16_t(n[2 * p + 1])) << 16);
      dm[b * 2 * kPanelCols + c] = d;
      dm[b * 2 * kPanelCols + kPanelCols + c] = c0;
    }
  }
}

void panel_gemm_plain(const ActivationBlock* x, int64_t rows, int64_t nb, const int32_t* pairs,
                      const float* dm, int cols, float beta, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const ActivationBlock& xb = x[r * nb + b];
        int32_t dot = 0;  // |dot| <= 32 * 128 * 32767 < 2^31
        for (int p = 0; p < 16; ++p) {
          const auto pair = uint32_t(pairs[(b * 16 + p) * kPanelCols + c]);
          dot += int16_t(pair & 0xffff) * xb.q[2 * p] + int16_t(pair >> 16) * xb.q[2 * p + 1];
        }
        acc = std::fma(float(dot), dm[b * 2 * kPanelCols + c] * xb.d, acc);
        acc = std::fma(dm[b * 2 * kPanelCols + kPanelCols + c], xb.sum, acc);
      }
      float& yc = y[r * ldy + c];
      yc = beta == 0.0f ? acc : std::fma(beta, yc, acc);
    }
  }
}

template <DType kType>
void dequant(const void* row, int64_t k, float* out) {
  dequantize_row(kType, row, k, out);
}

inline float value_of(float v) {
  return v;
}
inline float value_of(uint16_t h) {
  return f16_to_f32(h);
}
template <class T>  // float or uint16_t (F16) cache rows
void attention_scores_plain(const float* q, const T* const* keys, int n, int64_t hd, float* out) {
  for (int j = 0; j < n; ++j) {
    float sum = 0.0f;
    for (int64_t d = 0; d < hd; ++d) sum += q[d] * value_of(keys[j][d]);
    out[j] = sum;
  }
}
template <class T>
void attention_accumulate_plain(float* acc, const float* p, const T* const* values, int n,
                                int64_t hd) {
  for (int j = 0; j < n; ++j)
    for (int64_t d = 0; d < hd; ++d) acc[d] += p[j] * value_of(values[j][d]);
}
void to_f16_plain(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}
void attention_scores_tile_plain(const float* q, int nq, int64_t hdp, const float* kt,
                                 float* scores) {
  for (int i = 0; i < nq; ++i) {
    for (int j = 0; j < kAttentionTileKeys; ++j) {
      float sum = 0.0f;
      for (int64_t d = 0; d < hdp; ++d) sum += q[i * hdp + d] * kt[d * kAttentionTileKeys + j];
      scores[i * kAttentionTileKeys + j] = sum;
    }
  }
}
void attention_accumulate_tile_plain(float* acc, int nq, int64_t hdp, const float* p,
                                     const float* v) {
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < kAttentionTileKeys; ++j)
      for (int64_t d = 0; d < hdp; ++d)
        acc[i * hdp + d] += p[i * kAttentionTileKeys + j] * v[j * hdp + d];
}
float exp_shift_sum_plain(float* x, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}
void silu_mul_plain(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

#if PARAFUSE_X86_KERNELS
// F16C from CPUID leaf 1 (clang's __builtin_cpu_supports does not know "f16c").
bool cpu_has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}
bool cpu_has_avx512() {
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}
#else
bool cpu_has_avx2() {
  return false;
}
bool cpu_has_avx512() {
  return false;
}
#endif

}  // namespace

KernelSet generic_kernels() {
  KernelSet s{};
  s.isa = "generic";
  s.gemv_f32 = gemv_float<DType::F32>;
  s.gemv_f16 = gemv_float<DType::F16>;
  s.gemv_bf16 = gemv_float<DType::BF16>;
  s.gemv_q8_0 = gemv_blocks<BlockQ8_0, ActivationBlock, dot_q8_0>;
  s.gemv_q4_0 = gemv_blocks<BlockQ4_0, ActivationBlock, dot_q4_0>;
  s.gemv_q4_1 = gemv_blocks<BlockQ4_1, ActivationBlock, dot_q4_1>;
  s.quantize = quantize_activations;
  s.attention_scores = attention_scores_plain<float>;
  s.attention_accumulate = attention_accumulate_plain<float>;
  s.attention_scores_f16 = attention_scores_plain<uint16_t>;
  s.attention_accumulate_f16 = attention_accumulate_plain<uint16_t>;
  s.to_f16 = to_f16_plain;
  s.attention_scores_tile = attention_scores_tile_plain;
  s.attention_accumulate_tile = attention_accumulate_tile_plain;
  s.exp_shift_sum = exp_shift_sum_plain;
  s.silu_mul = silu_mul_plain;
  s.dequant_f16 = dequant<DType::F16>;
  s.dequant_bf16 = dequant<DType::BF16>;
  s.dequant_q8_0 = dequant<DType::Q8_0>;
  s.dequant_q4_0 = dequant<DType::Q4_0>;
  s.dequant_q4_1 = dequant<DType::Q4_1>;
  s.pack_q8_0 = pack_panel_plain<BlockQ8_0>;
  s.pack_q4_0 = pack_panel_plain<BlockQ4_0>;
  s.pack_q4_1 = pack_panel_plain<BlockQ4_1>;
  s.panel_gemm = panel_gemm_plain;
  return s;
}

#if !PARAFUSE_X86_KERNELS  // no SIMD sets built: the generic one stands in (never chosen)
KernelSet avx2_kernels() {
  return generic_kernels();
}
KernelSet avx512_kernels() {
  return generic_kernels();
}
#endif

GemvFn KernelSet::gemv(DType w) const {
  switch (w) {
    case DType::F32:
      return gemv_f32;
    case DType::F16:
      return gemv_f16;
    case DType::BF16:
      return gemv_bf16;
    case DType::Q8_0:
      return gemv_q8_0;
    case DType::Q4_0:
      return gemv_q4_0;
    case DType::Q4_1:
      return gemv_q4_1;
    default:
      PF_THROW("cpu kernels: no gemv for weights of dtype {}", dtype_name(w));
  }
}

DequantizeFn KernelSet::dequantize(DType w) const {
  switch (w) {
    case DType::F16:
      return dequant_f16;
    case DType::BF16:
      return dequant_bf16;
    case DType::Q8_0:
      return dequant_q8_0;
    case DType::Q4_0:
      return dequant_q4_0;
    case DType::Q4_1:
      return dequant_q4_1;
    default:
      PF_THROW("cpu kernels: no dequantization for weights of dtype {}", dtype_name(w));
  }
}

PackPanelFn KernelSet::pack_panel(DType w) const {
  switch (w) {
    case DType::Q8_0:
      return pack_q8_0;
    case DType::Q4_0:
      return pack_q4_0;
    case DType::Q4_1:
      return pack_q4_1;
    default:
      PF_THROW("cpu kernels: no quantized panel for weights of dtype {}", dtype_name(w));
  }
}

const KernelSet* kernels_named(const char* isa) {
  static const KernelSet generic = generic_kernels();
  static const KernelSet avx2 = cpu_has_avx2() ? avx2_kernels() : generic_kernels();
  static const KernelSet avx512 = cpu_has_avx512() ? avx512_kernels() : generic_kernels();
  const std::string_view name(isa);
  if (name == "generic") return &generic;
  if (name == "avx2") return cpu_has_avx2() ? &avx2 : nullptr;
  if (name == "avx512-vnni") return cpu_has_avx512() ? &avx512 : nullptr;
  return nullptr;
}

const KernelSet& best_kernels() {
  static const KernelSet* best = [] {
    for (const char* isa : {"avx512-vnni", "avx2"})
      if (const KernelSet* s = kernels_named(isa)) return s;
    return kernels_named("generic");
  }();
  return *best;
}

}  // namespace parafuse::cpu_kernels

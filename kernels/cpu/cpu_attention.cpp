// CPU backend: the paged KV cache write (kv_store) and causal GQA attention over it.
//
// Attention is the flash-attention recurrence on one core: for each (new row, query head) it
// walks that sequence's keys in tiles of kTileKeys, keeps a running max and sum (online softmax)
// and rescales the accumulator once per tile, so no score matrix is ever materialized. The dot
// products and the V accumulation are fixed-width kLanes loops that GCC/Clang vectorize at -O2
// without -ffast-math (the partial sums make the float reassociation explicit).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

constexpr int kLanes = 16;     // partial sums per dot product: one AVX-512 / four SSE registers
constexpr int kTileKeys = 64;  // keys scored before each softmax rescale

// sum_i a[i] * b[i], with kLanes independent partial sums so the loop vectorizes.
inline float dot(const float* a, const float* b, int64_t n) {
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) partial[j] += a[i + j] * b[i + j];
  }
  // Fold the partial sums pairwise (vector adds), not one by one (a 16-add dependency chain).
  for (int j = 0; j < kLanes / 2; ++j) partial[j] += partial[j + kLanes / 2];
  for (int j = 0; j < kLanes / 4; ++j) partial[j] += partial[j + kLanes / 4];
  float sum = (partial[0] + partial[2]) + (partial[1] + partial[3]);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[i] = y[i] * scale (skipped when scale is exactly 1).
inline void scale_in_place(float* y, float scale, int64_t n) {
  if (scale == 1.0f) return;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) y[i + j] *= scale;
  }
  for (; i < n; ++i) y[i] *= scale;
}

// y[i] += a * x[i]; y and x never overlap (restrict lets -O2 vectorize without a runtime check).
inline void axpy(float* __restrict y, float a, const float* __restrict x, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) y[i + j] += a * x[i + j];
  }
  for (; i < n; ++i) y[i] += a * x[i];
}

// Cache rows (slots) of positions [0, n_positions) of one sequence, validated against the cache.
std::vector<int64_t> sequence_slots(Op op, size_t seq_index, const AttentionSeq& seq,
                                    int64_t block_size, int64_t n_slots, int64_t n_positions) {
  std::vector<int64_t> slots(static_cast<size_t>(n_positions));
  if (n_positions == 0) return slots;
  PF_CHECK(seq.block_table != nullptr, "{}: sequence {} has {} positions but no block table",
           op_name(op), seq_index, n_positions);
  for (int64_t pos = 0; pos < n_positions; ++pos) {
    const int32_t block = seq.block_table[pos / block_size];
    PF_CHECK(block >= 0, "{}: sequence {} block table entry {} is negative ({})", op_name(op),
             seq_index, pos / block_size, block);
    const int64_t slot = int64_t(block) * block_size + pos % block_size;
    PF_CHECK(slot < n_slots,
             "{}: sequence {} position {} maps to slot {} but the cache has {} slots", op_name(op),
             seq_index, pos, slot, n_slots);
    slots[size_t(pos)] = slot;
  }
  return slots;
}

}  // namespace

void CpuBackend::kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                          const Tensor& v_cache, const AttentionBatch& batch) {
  for (const auto& [t, what] :
       {std::pair{&k, "k"}, {&v, "v"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    require_view(Op::KvStore, *t, what);
    require_dtype(Op::KvStore, *t, what, DType::F32);
  }
  check_kv_store_shapes(k, v, k_cache, v_cache, batch);
  const size_t row_bytes = size_t(k.cols) * sizeof(float);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    const std::vector<int64_t> slots =
        sequence_slots(Op::KvStore, s, seq, batch.block_size, k_cache.rows, seq.n_past + seq.n_new);
    for (int64_t i = 0; i < seq.n_new; ++i) {
      const int64_t slot = slots[size_t(seq.n_past + i)];
      const int64_t row = seq.q_begin + i;
      std::memcpy(k_cache.f32() + slot * k_cache.row_stride, k.f32() + row * k.row_stride,
                  row_bytes);
      std::memcpy(v_cache.f32() + slot * v_cache.row_stride, v.f32() + row * v.row_stride,
                  row_bytes);
    }
  }
}

void CpuBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttentionBatch& batch, const AttentionShape& shape,
                           const Tensor& out) {
  for (const auto& [t, what] :
       {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&out, "out"}}) {
    require_view(Op::Attention, *t, what);
    require_dtype(Op::Attention, *t, what, DType::F32);
  }
  check_attention_shapes(q, k_cache, v_cache, batch, shape, out);
  const int n_heads = shape.n_heads, n_kv_heads = shape.n_kv_heads, hd = shape.head_dim;

  const int group = n_heads / n_kv_heads;  // query heads per kv head
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> q_scaled(static_cast<size_t>(hd)), acc(static_cast<size_t>(hd));
  std::vector<float> scores(kTileKeys);
  std::vector<const float*> k_rows(kTileKeys), v_rows(kTileKeys);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    const std::vector<int64_t> slots = sequence_slots(Op::Attention, s, seq, batch.block_size,
                                                      k_cache.rows, seq.n_past + seq.n_new);
    for (int64_t i = 0; i < seq.n_new; ++i) {
      const int64_t row = seq.q_begin + i;
      const int64_t n_keys = seq.n_past + i + 1;  // causal: positions [0, n_past + i]
      for (int h = 0; h < n_heads; ++h) {
        const int64_t kv_col = int64_t(h / group) * hd;
        const float* qh = q.f32() + row * q.row_stride + int64_t(h) * hd;
        for (int d = 0; d < hd; ++d) q_scaled[size_t(d)] = qh[d] * shape.scale;
        std::fill(acc.begin(), acc.end(), 0.0f);
        float running_max = neg_inf, running_sum = 0.0f;
        for (int64_t t0 = 0; t0 < n_keys; t0 += kTileKeys) {
          const int tile = int(std::min<int64_t>(kTileKeys, n_keys - t0));
          float tile_max = neg_inf;
          for (int j = 0; j < tile; ++j) {
            const int64_t slot = slots[size_t(t0 + j)];
            k_rows[size_t(j)] = k_cache.f32() + slot * k_cache.row_stride + kv_col;
            v_rows[size_t(j)] = v_cache.f32() + slot * v_cache.row_stride + kv_col;
            scores[size_t(j)] = dot(q_scaled.data(), k_rows[size_t(j)], hd);
            tile_max = std::max(tile_max, scores[size_t(j)]);
          }
          const float new_max = std::max(running_max, tile_max);
          const float correction = std::exp(running_max - new_max);  // 0 on the first tile
          running_sum *= correction;
          scale_in_place(acc.data(), correction, hd);
          for (int j = 0; j < tile; ++j) {
            const float p = std::exp(scores[size_t(j)] - new_max);
            running_sum += p;
            axpy(acc.data(), p, v_rows[size_t(j)], hd);
          }
          running_max = new_max;
        }
        float* o = out.f32() + row * out.row_stride + int64_t(h) * hd;
        const float inv_sum = 1.0f / running_sum;
        for (int d = 0; d < hd; ++d) o[d] = acc[size_t(d)] * inv_sum;
      }
    }
  }
}

}  // namespace parafuse

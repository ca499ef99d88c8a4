// CPU backend: the paged KV cache write (kv_store) and causal GQA attention over it.
//
// Attention is the flash-attention recurrence; the pool splits the (new row, query head) pairs
// of the batch between its threads. For each (new row, query head) it
// walks that sequence's keys in tiles of kTileKeys, keeps a running max and sum (online softmax)
// and rescales the accumulator once per tile, so no score matrix is ever materialized. The dot
// products, the exponentials of a tile and the V accumulation are the kernel set's SIMD loops
// (cpu_kernels.h: attention_scores, exp_shift_sum, attention_accumulate).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

constexpr int kLanes = 16;     // elements per step of scale_in_place (vectorizes at -O2)
constexpr int kTileKeys = 64;  // keys scored before each softmax rescale

// y[i] = y[i] * scale (skipped when scale is exactly 1).
inline void scale_in_place(float* y, float scale, int64_t n) {
  if (scale == 1.0f) return;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) y[i + j] *= scale;
  }
  for (; i < n; ++i) y[i] *= scale;
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
  // Every sequence's slots, and its new rows in batch order.
  std::vector<std::vector<int64_t>> seq_slots(batch.seqs.size());
  struct RowRef {
    size_t seq;
    int64_t i;  // row within the sequence's new rows
  };
  std::vector<RowRef> rows;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    seq_slots[s] = sequence_slots(Op::Attention, s, seq, batch.block_size, k_cache.rows,
                                  seq.n_past + seq.n_new);
    for (int64_t i = 0; i < seq.n_new; ++i) rows.push_back({s, i});
  }
  // A work item is a run of query heads of one row that share a kv head: each tile of keys and
  // values is then read from memory once for the whole run and reused from L1 by its heads. The
  // run is the whole GQA group where that leaves enough items to keep every thread busy, else
  // one head (decode at batch 1 has only n_kv_heads groups).
  const int64_t n_rows = int64_t(rows.size());
  const int run = n_rows * n_kv_heads >= 4 * int64_t(pool_->threads()) ? group : 1;
  const int64_t runs_per_row = n_heads / run;
  const cpu_kernels::KernelSet& kernels = *kernels_;
  pool_->parallel_for(n_rows * runs_per_row, 1, [&](int64_t item_begin, int64_t item_end) {
    std::vector<float> q_scaled(size_t(run) * size_t(hd)), acc(size_t(run) * size_t(hd));
    std::vector<float> running_max(static_cast<size_t>(run)), running_sum(static_cast<size_t>(run));
    std::vector<float> scores(kTileKeys);
    std::vector<const float*> k_rows(kTileKeys), v_rows(kTileKeys);
    for (int64_t item = item_begin; item < item_end; ++item) {
      const RowRef& ref = rows[size_t(item / runs_per_row)];
      const int h0 = int(item % runs_per_row) * run;  // first query head of the run
      const AttentionSeq& seq = batch.seqs[ref.seq];
      const std::vector<int64_t>& slots = seq_slots[ref.seq];
      const int64_t row = seq.q_begin + ref.i;
      const int64_t n_keys = seq.n_past + ref.i + 1;  // causal: positions [0, n_past + i]
      const int64_t kv_col = int64_t(h0 / group) * hd;
      for (int g = 0; g < run; ++g) {
        const float* qh = q.f32() + row * q.row_stride + int64_t(h0 + g) * hd;
        for (int d = 0; d < hd; ++d) q_scaled[size_t(g * hd + d)] = qh[d] * shape.scale;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(running_max.begin(), running_max.end(), neg_inf);
      std::fill(running_sum.begin(), running_sum.end(), 0.0f);
      for (int64_t t0 = 0; t0 < n_keys; t0 += kTileKeys) {
        const int tile = int(std::min<int64_t>(kTileKeys, n_keys - t0));
        for (int j = 0; j < tile; ++j) {
          const int64_t slot = slots[size_t(t0 + j)];
          k_rows[size_t(j)] = k_cache.f32() + slot * k_cache.row_stride + kv_col;
          v_rows[size_t(j)] = v_cache.f32() + slot * v_cache.row_stride + kv_col;
        }
        for (int g = 0; g < run; ++g) {
          float* acc_g = acc.data() + size_t(g * hd);
          kernels.attention_scores(q_scaled.data() + size_t(g * hd), k_rows.data(), tile, hd,
                                   scores.data());
          float tile_max = neg_inf;
          for (int j = 0; j < tile; ++j) tile_max = std::max(tile_max, scores[size_t(j)]);
          const float new_max = std::max(running_max[size_t(g)], tile_max);
          const float correction = std::exp(running_max[size_t(g)] - new_max);  // 0 at first
          running_sum[size_t(g)] *= correction;
          scale_in_place(acc_g, correction, hd);
          running_sum[size_t(g)] += kernels.exp_shift_sum(scores.data(), tile, new_max);
          kernels.attention_accumulate(acc_g, scores.data(), v_rows.data(), tile, hd);
          running_max[size_t(g)] = new_max;
        }
      }
      for (int g = 0; g < run; ++g) {
        float* o = out.f32() + row * out.row_stride + int64_t(h0 + g) * hd;
        const float inv_sum = 1.0f / running_sum[size_t(g)];
        for (int d = 0; d < hd; ++d) o[d] = acc[size_t(g * hd + d)] * inv_sum;
      }
    }
  });
}

}  // namespace parafuse

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

constexpr int kLanes = 16;              // elements per step of scale_in_place (vectorizes at -O2)
constexpr int kTileKeys = 64;           // keys scored before each softmax rescale
constexpr int64_t kMinChunkKeys = 128;  // fewest keys worth a work item of their own (decode)

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
  // A work item is the GQA group of query heads of one row that share a kv head, over one chunk
  // of that row's keys: each tile of keys and values is read from memory once for the group and
  // reused from L1 by its heads. Prefill has rows enough to keep every thread busy with one
  // chunk per item; decode at batch 1 has only n_kv_heads groups, so its keys are split into
  // chunks (of at least kMinChunkKeys) until there are a few items per thread, and each chunk's
  // partial softmax (max, sum, unnormalized output) is merged after the parallel loop.
  const int64_t n_rows = int64_t(rows.size());
  const int64_t groups = n_rows * n_kv_heads;
  int64_t max_keys = 0;
  for (const RowRef& ref : rows)
    max_keys = std::max(max_keys, batch.seqs[ref.seq].n_past + ref.i + 1);
  const int64_t threads = pool_->threads(), want_items = 2 * threads;
  int64_t n_chunks = 1;
  if (groups < want_items) {
    // The fewest chunks that give want_items, then more until every thread gets as many items.
    const int64_t most = std::max<int64_t>(1, max_keys / kMinChunkKeys);
    n_chunks = std::min(most, (want_items + groups - 1) / groups);
    while (n_chunks < most && (groups * n_chunks) % threads != 0) ++n_chunks;
  }
  // A chunk's partial result per query head: [max, sum, hd unnormalized outputs].
  const size_t partial_floats = size_t(hd) + 2;
  std::vector<float>& partials = attention_partials_;
  if (n_chunks > 1) partials.resize(size_t(groups * n_chunks * group) * partial_floats);
  const cpu_kernels::KernelSet& kernels = *kernels_;
  pool_->parallel_for(groups * n_chunks, 1, [&](int64_t item_begin, int64_t item_end) {
    thread_local std::vector<float> q_scaled, acc, running_max, running_sum, scores;
    thread_local std::vector<const float*> k_rows, v_rows;
    q_scaled.resize(size_t(group) * size_t(hd));
    acc.resize(size_t(group) * size_t(hd));
    running_max.resize(size_t(group));
    running_sum.resize(size_t(group));
    scores.resize(kTileKeys);
    k_rows.resize(kTileKeys);
    v_rows.resize(kTileKeys);
    for (int64_t item = item_begin; item < item_end; ++item) {
      const int64_t chunk = item % n_chunks, g_item = item / n_chunks;
      const RowRef& ref = rows[size_t(g_item / n_kv_heads)];
      const int kv_head = int(g_item % n_kv_heads);
      const int h0 = kv_head * group;  // first query head of the group
      const AttentionSeq& seq = batch.seqs[ref.seq];
      const std::vector<int64_t>& slots = seq_slots[ref.seq];
      const int64_t row = seq.q_begin + ref.i;
      const int64_t n_keys = seq.n_past + ref.i + 1;  // causal: positions [0, n_past + i]
      // This chunk's keys: [key_begin, key_end).
      const int64_t chunk_keys = (n_keys + n_chunks - 1) / n_chunks;
      const int64_t key_begin = std::min(n_keys, chunk * chunk_keys);
      const int64_t key_end = std::min(n_keys, key_begin + chunk_keys);
      const int64_t kv_col = int64_t(kv_head) * hd;
      for (int g = 0; g < group; ++g) {
        const float* qh = q.f32() + row * q.row_stride + int64_t(h0 + g) * hd;
        for (int d = 0; d < hd; ++d) q_scaled[size_t(g * hd + d)] = qh[d] * shape.scale;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(running_max.begin(), running_max.end(), neg_inf);
      std::fill(running_sum.begin(), running_sum.end(), 0.0f);
      for (int64_t t0 = key_begin; t0 < key_end; t0 += kTileKeys) {
        const int tile = int(std::min<int64_t>(kTileKeys, key_end - t0));
        for (int j = 0; j < tile; ++j) {
          const int64_t slot = slots[size_t(t0 + j)];
          k_rows[size_t(j)] = k_cache.f32() + slot * k_cache.row_stride + kv_col;
          v_rows[size_t(j)] = v_cache.f32() + slot * v_cache.row_stride + kv_col;
        }
        // The next tile's keys and values start on their way from memory while this one is
        // scored (decode reads the whole cache once per step; its rows are strided by the other
        // kv heads' columns, which the hardware prefetcher follows poorly).
        const int64_t next_end = std::min(key_end, t0 + 2 * kTileKeys);
        for (int64_t j = t0 + kTileKeys; j < next_end; ++j) {
          const int64_t slot = slots[size_t(j)];
          const auto* kp =
              reinterpret_cast<const char*>(k_cache.f32() + slot * k_cache.row_stride + kv_col);
          const auto* vp =
              reinterpret_cast<const char*>(v_cache.f32() + slot * v_cache.row_stride + kv_col);
          for (int64_t byte = 0; byte < int64_t(hd) * int64_t(sizeof(float)); byte += 64) {
            __builtin_prefetch(kp + byte);
            __builtin_prefetch(vp + byte);
          }
        }
        for (int g = 0; g < group; ++g) {
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
      for (int g = 0; g < group; ++g) {
        const float* acc_g = acc.data() + size_t(g * hd);
        if (n_chunks == 1) {
          float* o = out.f32() + row * out.row_stride + int64_t(h0 + g) * hd;
          const float inv_sum = 1.0f / running_sum[size_t(g)];
          for (int d = 0; d < hd; ++d) o[d] = acc_g[d] * inv_sum;
        } else {
          float* part = partials.data() + size_t(item * group + g) * partial_floats;
          part[0] = running_max[size_t(g)];
          part[1] = running_sum[size_t(g)];
          std::copy(acc_g, acc_g + hd, part + 2);
        }
      }
    }
  });
  if (n_chunks == 1) return;
  // Merge the chunks of each (row, query head): weights exp(max_c - max), an empty chunk (max
  // -inf) weighs 0; chunk 0 always has keys.
  for (int64_t g_item = 0; g_item < groups; ++g_item) {
    const RowRef& ref = rows[size_t(g_item / n_kv_heads)];
    const int64_t row = batch.seqs[ref.seq].q_begin + ref.i;
    const int h0 = int(g_item % n_kv_heads) * group;
    for (int g = 0; g < group; ++g) {
      auto part = [&](int64_t chunk) {
        return partials.data() + size_t((g_item * n_chunks + chunk) * group + g) * partial_floats;
      };
      float max = neg_inf;
      for (int64_t c = 0; c < n_chunks; ++c) max = std::max(max, part(c)[0]);
      float* o = out.f32() + row * out.row_stride + int64_t(h0 + g) * hd;
      std::fill(o, o + hd, 0.0f);
      float sum = 0.0f;
      for (int64_t c = 0; c < n_chunks; ++c) {
        const float* pc = part(c);
        if (pc[0] == neg_inf) continue;
        const float weight = std::exp(pc[0] - max);
        sum += pc[1] * weight;
        for (int d = 0; d < hd; ++d) o[d] += pc[2 + d] * weight;
      }
      const float inv_sum = 1.0f / sum;
      for (int d = 0; d < hd; ++d) o[d] *= inv_sum;
    }
  }
}

}  // namespace parafuse

// CPU backend: the paged KV cache write (kv_store) and causal GQA attention over it.
//
// The cache holds F32 or F16 rows (supports_kv_cache): kv_store rounds new rows to halves
// (round to nearest even), and attention widens them as it reads (vcvtph2ps in the SIMD sets),
// so an F16 cache halves the bytes that decode attention streams and computes exactly as an
// F32 cache holding the same rounded values.
//
// Attention is the flash-attention recurrence: the pool splits work items (one kv head's GQA
// group over a block of new rows, or every head of one new row over one chunk of its keys; see
// attention()) between its threads, and each walks its keys in tiles of kTileKeys, keeps a
// running max and sum per query vector (online softmax) and rescales the accumulator once per
// tile, so no score matrix is ever materialized. The dot products, the exponentials of a tile and
// the V accumulation are the kernel set's SIMD loops (cpu_kernels.h: attention_scores_tile /
// attention_accumulate_tile for blocks of rows, attention_scores / attention_accumulate for one
// row, exp_shift_sum for both).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

constexpr int kLanes = 16;  // elements per step of scale_in_place (vectorizes at -O2)
constexpr int kTileKeys = cpu_kernels::kAttentionTileKeys;  // keys per softmax rescale
constexpr int64_t kMinChunkKeys = 64;  // fewest keys worth a work item of their own (decode)
// New rows of a sequence per blocked (prefill) item. Each tile of keys and values is widened and
// transposed once per block: 32 rows halve that work against 16 (SmolLM2's 512-token prefill
// attention 7.7 -> 6.9 ms per layer at one thread, best of 10); at 64 the scores and accumulators
// of 192 query vectors outgrow L1 and it swung between 6.7 and 10.7 ms.
constexpr int64_t kBlockRows = 32;
constexpr int64_t kBlockMinRows = 4;   // fewer new rows go row by row

// y[i] = y[i] * scale (skipped when scale is exactly 1).
inline void scale_in_place(float* y, float scale, int64_t n) {
  if (scale == 1.0f) return;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) y[i + j] *= scale;
  }
  for (; i < n; ++i) y[i] *= scale;
}

// One tile of the online softmax for one query vector: scores s[0..n) -> exp(s - new max) in
// place; the running max and sum and the unnormalized output acc (hd floats) rescaled to the new
// max (the caller then adds the tile's values, weighted by s, to acc).
inline void softmax_step(const cpu_kernels::KernelSet& kernels, float* s, int64_t n,
                         float& running_max, float& running_sum, float* acc, int64_t hd) {
  const float new_max = std::max(running_max, max_of(s, n));
  const float correction = std::exp(running_max - new_max);  // 0 at the first tile
  running_sum *= correction;
  scale_in_place(acc, correction, hd);
  running_sum += kernels.exp_shift_sum(s, n, new_max);
  running_max = new_max;
}

// Every cache line of `bytes` bytes at `p` on its way into the cache. On x86 through an asm
// statement: GCC 12 treats __builtin_prefetch as free of side effects, so a function that does
// nothing but prefetch is marked const and its calls are deleted as dead code (it happened to a
// lambda around this loop: no prefetch was left in the binary).
inline void prefetch_row(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (size_t off = 0; off < bytes; off += 64) {
#if defined(__x86_64__) || defined(__i386__)
    asm volatile("prefetcht0 %0" : : "m"(c[off]));
#else
    __builtin_prefetch(c + off);
#endif
  }
}

// Cache rows (slots) of positions [begin, end) of one sequence into slots[0, end - begin),
// validated against the cache: each block table entry is checked once (not each position: decode
// calls this for every layer, and it used to be 1.5% of a decode step).
void sequence_slots(Op op, size_t seq_index, const AttentionSeq& seq, int64_t block_size,
                    int64_t n_slots, int64_t begin, int64_t end, std::vector<int64_t>& slots) {
  slots.resize(static_cast<size_t>(end - begin));
  if (begin == end) return;
  PF_CHECK(seq.block_table != nullptr, "{}: sequence {} has {} positions but no block table",
           op_name(op), seq_index, end);
  for (int64_t b = begin / block_size; b * block_size < end; ++b) {
    const int32_t block = seq.block_table[b];
    PF_CHECK(block >= 0, "{}: sequence {} block table entry {} is negative ({})", op_name(op),
             seq_index, b, block);
    const int64_t first = std::max(begin, b * block_size);
    const int64_t last = std::min(end, (b + 1) * block_size);           // positions [first, last)
    const int64_t base = int64_t(block) * block_size - b * block_size;  // slot = base + pos
    PF_CHECK(base + last - 1 < n_slots,
             "{}: sequence {} position {} maps to slot {} but the cache has {} slots", op_name(op),
             seq_index, last - 1, base + last - 1, n_slots);
    for (int64_t pos = first; pos < last; ++pos) slots[size_t(pos - begin)] = base + pos;
  }
}

// The KV cache tensors' checks: views, a dtype supports_kv_cache() takes, one dtype for both.
void require_kv_caches(Op op, const Tensor& k_cache, const Tensor& v_cache) {
  for (const auto& [t, what] : {std::pair{&k_cache, "k_cache"}, {&v_cache, "v_cache"}}) {
    require_view(op, *t, what);
    PF_CHECK(t->dtype == DType::F32 || t->dtype == DType::F16,
             "{}: {} has dtype {}, but the cpu backend keeps its KV cache in F32 or F16",
             op_name(op), what, dtype_name(t->dtype));
  }
  PF_CHECK(k_cache.dtype == v_cache.dtype, "{}: k_cache is {} but v_cache is {}", op_name(op),
           dtype_name(k_cache.dtype), dtype_name(v_cache.dtype));
}

// A cache row as elements of its dtype (float or uint16_t halves).
template <class T>
const T* cache_rows(const Tensor& cache) {
  return static_cast<const T*>(cache.data);
}

}  // namespace

bool CpuBackend::supports_kv_cache(DType dtype) const {
  return dtype == DType::F32 || dtype == DType::F16;
}

void CpuBackend::kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                          const Tensor& v_cache, const AttentionBatch& batch) {
  require_tensors(Op::KvStore, {{k, "k", DType::F32}, {v, "v", DType::F32}});
  require_kv_caches(Op::KvStore, k_cache, v_cache);
  check_kv_store_shapes(k, v, k_cache, v_cache, batch);
  const bool f16 = k_cache.dtype == DType::F16;
  const size_t row_bytes = size_t(k.cols) * sizeof(float);
  auto* k_half = static_cast<uint16_t*>(k_cache.data);
  auto* v_half = static_cast<uint16_t*>(v_cache.data);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    if (slot_scratch_.empty()) slot_scratch_.resize(1);
    std::vector<int64_t>& slots = slot_scratch_.front();
    sequence_slots(Op::KvStore, s, seq, batch.block_size, k_cache.rows, seq.n_past,
                   seq.n_past + seq.n_new, slots);
    for (int64_t i = 0; i < seq.n_new; ++i) {
      const int64_t slot = slots[size_t(i)];
      const int64_t row = seq.q_begin + i;
      if (f16) {
        kernels_->to_f16(k.f32() + row * k.row_stride, k.cols, k_half + slot * k_cache.row_stride);
        kernels_->to_f16(v.f32() + row * v.row_stride, v.cols, v_half + slot * v_cache.row_stride);
      } else {
        std::memcpy(k_cache.f32() + slot * k_cache.row_stride, k.f32() + row * k.row_stride,
                    row_bytes);
        std::memcpy(v_cache.f32() + slot * v_cache.row_stride, v.f32() + row * v.row_stride,
                    row_bytes);
      }
    }
  }
}

void CpuBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const AttentionBatch& batch, const AttentionShape& shape,
                           const Tensor& out) {
  require_tensors(Op::Attention, {{q, "q", DType::F32}, {out, "out", DType::F32}});
  require_kv_caches(Op::Attention, k_cache, v_cache);
  check_attention_shapes(q, k_cache, v_cache, batch, shape, out);
  const int n_heads = shape.n_heads, n_kv_heads = shape.n_kv_heads, hd = shape.head_dim;

  const int group = n_heads / n_kv_heads;  // query heads per kv head
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Every sequence's slots.
  if (slot_scratch_.size() < batch.seqs.size()) slot_scratch_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    sequence_slots(Op::Attention, s, seq, batch.block_size, k_cache.rows, 0, seq.n_past + seq.n_new,
                   slot_scratch_[s]);
  }
  const std::vector<std::vector<int64_t>>& seq_slots = slot_scratch_;
  // Work items; each tile of keys and values is read from memory once for all the query heads
  // that use it:
  //  - one kv head's GQA group over a block of up to kBlockRows new rows of a sequence with at
  //    least kBlockMinRows new rows (prefill): the block's rows x group query vectors meet each
  //    tile of keys as two small matrix products (attention_scores_tile,
  //    attention_accumulate_tile), with the tile of keys transposed and the values copied into
  //    contiguous scratch once for all of them;
  //  - every head of one new row (decode), over one chunk of its keys, so that the item streams
  //    whole cache rows (all kv heads) front to back. Where there are fewer such items than two
  //    per thread (decode at batch 1), the keys are split into chunks (of at least kMinChunkKeys)
  //    and each chunk's partial softmax (max, sum, unnormalized output) is merged after the
  //    parallel loop.
  struct Item {
    size_t seq;
    int64_t i0;  // first new row of the sequence in the item
    int64_t rows;
    int kv_head;    // blocked items: the kv head; row items cover every head
    int64_t chunk;  // row items: the chunk of keys; blocked items: -1
  };
  std::vector<Item> items;
  int64_t row_items = 0, max_keys = 0;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    if (seq.n_new >= kBlockMinRows) {
      // Causal blocks cost more the later they are, and the pool splits items into contiguous
      // ranges: take the blocks first, last, second, second to last, ... so that every range
      // gets as much work.
      const int64_t n_blocks = (seq.n_new + kBlockRows - 1) / kBlockRows;
      for (int64_t k = 0; k < n_blocks; ++k) {
        const int64_t block = k % 2 == 0 ? k / 2 : n_blocks - 1 - k / 2;
        const int64_t i0 = block * kBlockRows;
        const int64_t rows = std::min(kBlockRows, seq.n_new - i0);
        for (int h = 0; h < n_kv_heads; ++h) items.push_back({s, i0, rows, h, -1});
      }
    } else {
      for (int64_t i = 0; i < seq.n_new; ++i) {
        ++row_items;
        max_keys = std::max(max_keys, seq.n_past + i + 1);
        items.push_back({s, i, 1, 0, 0});
      }
    }
  }
  // (one thread: nothing to split; more: one item per thread — the pool hands each thread one
  // contiguous range of items anyway, and a chunk's first tile is fetched in one burst, where
  // every later tile is prefetched while the one before it is computed)
  const int64_t threads = pool_->threads(), want_items = threads;
  int64_t n_chunks = 1;
  if (int64_t(items.size()) < want_items && row_items > 0) {
    // The fewest chunks that give want_items, then more until every thread gets as many items.
    const int64_t groups = int64_t(items.size());
    const int64_t most = std::max<int64_t>(1, max_keys / kMinChunkKeys);
    n_chunks = std::min(most, (want_items + groups - 1) / groups);
    while (n_chunks < most && (groups * n_chunks) % threads != 0) ++n_chunks;
  }
  if (n_chunks > 1) {  // each row item becomes n_chunks consecutive ones
    std::vector<Item> chunked;
    chunked.reserve(items.size() * size_t(n_chunks));
    for (const Item& it : items) {
      if (it.chunk < 0) {
        chunked.push_back(it);
      } else {
        for (int64_t c = 0; c < n_chunks; ++c) chunked.push_back({it.seq, it.i0, 1, 0, c});
      }
    }
    items.swap(chunked);
  }
  // A chunk's partial result per query head: [max, sum, hd unnormalized outputs].
  const size_t partial_floats = size_t(hd) + 2;
  std::vector<float>& partials = attention_partials_;
  if (n_chunks > 1) partials.resize(items.size() * size_t(n_heads) * partial_floats);

  const cpu_kernels::KernelSet& kernels = *kernels_;
  // Query vector g of a row, scaled.
  auto load_query = [&](int64_t row, int head, float* dst) {
    const float* qh = q.f32() + row * q.row_stride + int64_t(head) * hd;
    for (int d = 0; d < hd; ++d) dst[d] = qh[d] * shape.scale;
  };

  // The parallel loop over the items, for cache rows of T: float (F32) or uint16_t (F16).
  auto attend_items = [&]<class T>() {
    const T* k_base = cache_rows<T>(k_cache);
    const T* v_base = cache_rows<T>(v_cache);
    constexpr bool kHalf = std::is_same_v<T, uint16_t>;
    const size_t row_bytes = size_t(k_cache.cols) * sizeof(T);  // kv heads x head_dim
    // the decode kernels for rows of T
    const auto attention_scores = [&] {
      if constexpr (kHalf)
        return kernels.attention_scores_f16;
      else
        return kernels.attention_scores;
    }();
    const auto attention_accumulate = [&] {
      if constexpr (kHalf)
        return kernels.attention_accumulate_f16;
      else
        return kernels.attention_accumulate;
    }();

    // Every head of one row over keys [key_begin, key_end), the per-vector SIMD loops.
    auto attend_row = [&](const Item& it, size_t item_index) {
      thread_local std::vector<float> q_scaled, acc, running_max, running_sum, scores;
      thread_local std::vector<const T*> k_base_rows, v_base_rows, k_rows, v_rows;
      q_scaled.resize(size_t(n_heads) * size_t(hd));
      acc.assign(size_t(n_heads) * size_t(hd), 0.0f);
      running_max.assign(size_t(n_heads), neg_inf);
      running_sum.assign(size_t(n_heads), 0.0f);
      scores.resize(kTileKeys);
      for (auto* v : {&k_base_rows, &v_base_rows, &k_rows, &v_rows}) v->resize(kTileKeys);
      const AttentionSeq& seq = batch.seqs[it.seq];
      const std::vector<int64_t>& slots = seq_slots[it.seq];
      const int64_t row = seq.q_begin + it.i0;
      const int64_t n_keys = seq.n_past + it.i0 + 1;  // causal: positions [0, n_past + i]
      const int64_t chunk_keys = (n_keys + n_chunks - 1) / n_chunks;
      const int64_t key_begin = std::min(n_keys, it.chunk * chunk_keys);
      const int64_t key_end = std::min(n_keys, key_begin + chunk_keys);
      // The kernels read a few rows at a time, too few misses in flight for one core to reach the
      // memory's bandwidth: every cache line of the next tile's rows is prefetched while this tile
      // is computed, a few rows before each kernel call. (A whole tile's prefetches issued at once
      // fill the core's miss buffers and stall it until they drain: 30 layers of decode attention
      // over 576 keys, cache in DRAM, took 2.7 ms at one thread that way and 1.9 ms spread out.)
      auto prefetch_rows = [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          const int64_t slot = slots[size_t(p)];
          prefetch_row(k_base + slot * k_cache.row_stride, row_bytes);
          prefetch_row(v_base + slot * v_cache.row_stride, row_bytes);
        }
      };
      prefetch_rows(key_begin, std::min(key_end, key_begin + kTileKeys));
      for (int h = 0; h < n_heads; ++h)
        load_query(row, h, q_scaled.data() + size_t(h) * size_t(hd));
      for (int64_t t0 = key_begin; t0 < key_end; t0 += kTileKeys) {
        const int tile = int(std::min<int64_t>(kTileKeys, key_end - t0));
        for (int j = 0; j < tile; ++j) {
          const int64_t slot = slots[size_t(t0 + j)];
          k_base_rows[size_t(j)] = k_base + slot * k_cache.row_stride;
          v_base_rows[size_t(j)] = v_base + slot * v_cache.row_stride;
        }
        const int64_t next_begin = std::min(key_end, t0 + kTileKeys);
        const int64_t next_rows = std::min(key_end, t0 + 2 * kTileKeys) - next_begin;
        const int64_t steps = 2 * int64_t(n_heads);  // two kernel calls per head
        int64_t step = 0, prefetched = 0;
        auto prefetch_step = [&] {
          const int64_t upto = next_rows * ++step / steps;
          prefetch_rows(next_begin + prefetched, next_begin + upto);
          prefetched = upto;
        };
        for (int kv_head = 0; kv_head < n_kv_heads; ++kv_head) {
          const int64_t kv_col = int64_t(kv_head) * hd;
          for (int j = 0; j < tile; ++j) {
            k_rows[size_t(j)] = k_base_rows[size_t(j)] + kv_col;
            v_rows[size_t(j)] = v_base_rows[size_t(j)] + kv_col;
          }
          for (int h = kv_head * group; h < (kv_head + 1) * group; ++h) {
            float* acc_h = acc.data() + size_t(h) * size_t(hd);
            const float* qh = q_scaled.data() + size_t(h) * size_t(hd);
            prefetch_step();
            attention_scores(qh, k_rows.data(), tile, hd, scores.data());
            softmax_step(kernels, scores.data(), tile, running_max[size_t(h)],
                         running_sum[size_t(h)], acc_h, hd);
            prefetch_step();
            attention_accumulate(acc_h, scores.data(), v_rows.data(), tile, hd);
          }
        }
      }
      for (int h = 0; h < n_heads; ++h) {
        const float* acc_h = acc.data() + size_t(h) * size_t(hd);
        if (n_chunks == 1) {
          float* o = out.f32() + row * out.row_stride + int64_t(h) * hd;
          const float inv_sum = 1.0f / running_sum[size_t(h)];
          for (int d = 0; d < hd; ++d) o[d] = acc_h[d] * inv_sum;
        } else {
          float* part =
              partials.data() + (item_index * size_t(n_heads) + size_t(h)) * partial_floats;
          part[0] = running_max[size_t(h)];
          part[1] = running_sum[size_t(h)];
          std::copy(acc_h, acc_h + hd, part + 2);
        }
      }
    };

    // A block of rows: nq = rows * group query vectors (row-major: row r, head g at r * group + g),
    // padded to a multiple of 4 vectors and to hdp = hd rounded up to 16 columns with zeros, and
    // each tile of keys padded to kTileKeys with zeros; the padding's scores are masked (keys) or
    // ignored (query vectors), and its columns are zero.
    const int64_t hdp = (int64_t(hd) + 15) / 16 * 16;
    auto attend_block = [&](const Item& it) {
      thread_local std::vector<float> qb, acc, kt, vt, scores, running_max, running_sum, key;
      const AttentionSeq& seq = batch.seqs[it.seq];
      const std::vector<int64_t>& slots = seq_slots[it.seq];
      const int nq = int(it.rows) * group, nq_pad = (nq + 3) / 4 * 4;
      qb.assign(size_t(nq_pad) * size_t(hdp), 0.0f);
      acc.assign(size_t(nq_pad) * size_t(hdp), 0.0f);
      kt.assign(size_t(hdp) * kTileKeys, 0.0f);
      vt.assign(size_t(kTileKeys) * size_t(hdp), 0.0f);
      scores.resize(size_t(nq_pad) * kTileKeys);
      running_max.assign(size_t(nq), neg_inf);
      running_sum.assign(size_t(nq), 0.0f);
      key.resize(size_t(hd));
      const int h0 = it.kv_head * group;
      const int64_t kv_col = int64_t(it.kv_head) * hd;
      for (int64_t r = 0; r < it.rows; ++r)
        for (int g = 0; g < group; ++g)
          load_query(seq.q_begin + it.i0 + r, h0 + g, qb.data() + size_t((r * group + g) * hdp));
      const int64_t n_keys = seq.n_past + it.i0 + it.rows;  // the block's last row's keys
      for (int64_t t0 = 0; t0 < n_keys; t0 += kTileKeys) {
        const int tile = int(std::min<int64_t>(kTileKeys, n_keys - t0));
        for (int j = 0; j < tile; ++j) {
          const int64_t slot = slots[size_t(t0 + j)];
          const T* kr = k_base + slot * k_cache.row_stride + kv_col;
          const T* vr = v_base + slot * v_cache.row_stride + kv_col;
          const float* kf = nullptr;  // the key as floats
          if constexpr (kHalf) {
            kernels.dequant_f16(kr, hd, key.data());
            kf = key.data();
            kernels.dequant_f16(vr, hd, vt.data() + size_t(j) * size_t(hdp));
          } else {
            kf = kr;
            std::copy(vr, vr + hd, vt.data() + size_t(j) * size_t(hdp));
          }
          for (int d = 0; d < hd; ++d) kt[size_t(d) * kTileKeys + size_t(j)] = kf[d];
        }
        if (tile < kTileKeys) {  // the last tile: padding keys are zero (their scores are masked)
          for (int d = 0; d < hd; ++d)
            std::fill(kt.data() + size_t(d) * kTileKeys + size_t(tile),
                      kt.data() + size_t(d + 1) * kTileKeys, 0.0f);
          std::fill(vt.data() + size_t(tile) * size_t(hdp), vt.data() + vt.size(), 0.0f);
        }
        kernels.attention_scores_tile(qb.data(), nq_pad, hdp, kt.data(), scores.data());
        for (int v = 0; v < nq; ++v) {
          float* sv = scores.data() + size_t(v) * kTileKeys;
          // causal: row r sees keys [0, n_past + i0 + r]
          const int64_t valid =
              std::clamp<int64_t>(seq.n_past + it.i0 + v / group + 1 - t0, 0, tile);
          std::fill(sv + valid, sv + kTileKeys, 0.0f);
          if (valid == 0) continue;
          softmax_step(kernels, sv, valid, running_max[size_t(v)], running_sum[size_t(v)],
                       acc.data() + size_t(v) * size_t(hdp), hd);
        }
        kernels.attention_accumulate_tile(acc.data(), nq_pad, hdp, scores.data(), vt.data());
      }
      for (int v = 0; v < nq; ++v) {
        const int64_t row = seq.q_begin + it.i0 + v / group;
        float* o = out.f32() + row * out.row_stride + int64_t(h0 + v % group) * hd;
        const float* av = acc.data() + size_t(v) * size_t(hdp);
        const float inv_sum = 1.0f / running_sum[size_t(v)];
        for (int d = 0; d < hd; ++d) o[d] = av[d] * inv_sum;
      }
    };

    pool_->parallel_for(int64_t(items.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const Item& it = items[size_t(i)];
        if (it.chunk < 0) {
          attend_block(it);
        } else {
          attend_row(it, size_t(i));
        }
      }
    });
  };  // attend_items
  if (k_cache.dtype == DType::F16) {
    attend_items.template operator()<uint16_t>();
  } else {
    attend_items.template operator()<float>();
  }
  if (n_chunks == 1) return;
  // Merge the chunks of each (row, query head): weights exp(max_c - max), an empty chunk (max
  // -inf) weighs 0; chunk 0 always has keys. A row's chunks are consecutive items.
  for (size_t first = 0; first < items.size(); ++first) {
    const Item& it = items[first];
    if (it.chunk != 0) continue;
    const int64_t row = batch.seqs[it.seq].q_begin + it.i0;
    for (int h = 0; h < n_heads; ++h) {
      auto part = [&](int64_t chunk) {
        return partials.data() +
               ((first + size_t(chunk)) * size_t(n_heads) + size_t(h)) * partial_floats;
      };
      float max = neg_inf;
      for (int64_t c = 0; c < n_chunks; ++c) max = std::max(max, part(c)[0]);
      float* o = out.f32() + row * out.row_stride + int64_t(h) * hd;
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

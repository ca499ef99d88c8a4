// Case builders of the backend op test: one function per op that turns a shape into an OpCase.
//
// Each builder draws its inputs from a seeded RNG, captures them by value in the case's `run`
// (any Backend, guarded device tensors) and `reference` (naive loops of backend_op_reference.h).
// Output tensors start as NaN wherever the op must overwrite them, so a skipped write shows.
// The table of concrete cases is backend_op_cases.h.
#pragma once

#include <algorithm>
#include <limits>
#include <numeric>
#include <random>

#include "tests/unit/backend_op_harness.h"
#include "tests/unit/backend_op_reference.h"

namespace parafuse::op_test {

inline std::vector<float> random_normal(std::mt19937_64& rng, int64_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> filled(int64_t n, float value) {
  return std::vector<float>(size_t(n), value);
}
inline float nan_f32() {
  return std::numeric_limits<float>::quiet_NaN();
}
inline float inf_f32() {
  return std::numeric_limits<float>::infinity();
}
// Each value rounded to the nearest IEEE half (kernels/core/dtype.h), back as floats.
inline std::vector<float> round_to_f16(std::vector<float> v) {
  for (float& x : v) x = f16_to_f32(f32_to_f16(x));
  return v;
}

// ---- gemm -------------------------------------------------------------------------------------

// Strides < 0 mean contiguous. beta 0 starts y as NaN: beta 0 must overwrite, not scale.
inline OpCase gemm_case(std::string name, int64_t m, int64_t n, int64_t k, float beta,
                        uint64_t seed, int64_t x_stride = -1, int64_t w_stride = -1,
                        int64_t y_stride = -1) {
  std::mt19937_64 rng(seed);
  auto x = random_normal(rng, m * k), w = random_normal(rng, n * k);
  auto y0 = beta == 0.0f ? filled(m * n, nan_f32()) : random_normal(rng, m * n);
  OpCase c{std::move(name), Op::Gemm, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tx = g.f32(x, m, k, x_stride), tw = g.f32(w, n, k, w_stride);
    Tensor ty = g.f32(y0, m, n, y_stride, true);
    be.gemm(tx, tw, ty, beta);
    return CaseOutput{{g.read(ty)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_gemm(x, w, y0, m, n, k, beta)}; };
  return c;
}

// ---- rmsnorm ----------------------------------------------------------------------------------

// special: row 0 gets a NaN, row 1 is all zeros (eps keeps it finite), row 2 is scaled by 1e4.
inline OpCase rmsnorm_case(std::string name, int64_t m, int64_t d, bool with_weight, float eps,
                           uint64_t seed, bool in_place = false, int64_t x_stride = -1,
                           int64_t y_stride = -1, bool special = false) {
  std::mt19937_64 rng(seed);
  auto x = random_normal(rng, m * d, 2.0f);
  auto w = with_weight ? random_normal(rng, d) : std::vector<float>{};
  if (special) {
    x[size_t(d / 2)] = nan_f32();
    std::fill(x.begin() + d, x.begin() + 2 * d, 0.0f);
    for (int64_t c = 0; c < d; ++c) x[size_t(2 * d + c)] *= 1e4f;
  }
  auto y0 = filled(m * d, nan_f32());
  OpCase c{std::move(name), Op::RmsNorm, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tx = g.f32(x, m, d, x_stride, in_place);
    Tensor tw = with_weight ? g.f32(w, 1, d) : Tensor{};
    Tensor ty = in_place ? tx : g.f32(y0, m, d, y_stride, true);
    be.rmsnorm(tx, tw, eps, ty);
    return CaseOutput{{g.read(ty)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_rmsnorm(x, w, m, d, eps)}; };
  return c;
}

// ---- rope -------------------------------------------------------------------------------------

inline OpCase rope_case(std::string name, int64_t m, int n_heads, int head_dim, int32_t max_pos,
                        float theta, uint64_t seed, int64_t x_stride = -1) {
  std::mt19937_64 rng(seed);
  const int64_t cols = int64_t(n_heads) * head_dim;
  auto x = random_normal(rng, m * cols);
  std::vector<int32_t> pos(static_cast<size_t>(m));
  std::uniform_int_distribution<int32_t> pick(0, max_pos);
  for (int32_t& p : pos) p = pick(rng);
  pos[0] = m > 1 ? 0 : max_pos;  // both ends of the range appear
  pos[size_t(m - 1)] = max_pos;
  std::vector<float> inv_freq(static_cast<size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    inv_freq[size_t(i)] = float(1.0 / std::pow(double(theta), 2.0 * i / head_dim));
  }
  OpCase c{std::move(name), Op::Rope, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tx = g.f32(x, m, cols, x_stride, true);
    Tensor tp = g.i32(pos, m, 1), tf = g.f32(inv_freq, 1, head_dim / 2);
    be.rope(tx, tp, tf, n_heads, head_dim);
    return CaseOutput{{g.read(tx)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_rope(x, pos, inv_freq, m, n_heads, head_dim)}; };
  return c;
}

// ---- kv_store / attention ---------------------------------------------------------------------

// Gives every sequence blocks from a shuffled pool (so tables are not contiguous) with a few
// spare blocks that no sequence uses; returns the number of cache slots.
inline int64_t assign_blocks(std::mt19937_64& rng, std::vector<SeqSpec>& seqs, int64_t block_size) {
  int64_t needed = 0;
  for (const SeqSpec& s : seqs) needed += (s.n_past + s.n_new + block_size - 1) / block_size;
  const int64_t n_blocks = needed + 3;
  std::vector<int32_t> pool(static_cast<size_t>(n_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  for (SeqSpec& s : seqs) {
    s.blocks.clear();
    for (int64_t b = 0; b < (s.n_past + s.n_new + block_size - 1) / block_size; ++b) {
      s.blocks.push_back(pool[next++]);
    }
  }
  return n_blocks * block_size;
}

inline AttentionBatch make_batch(const std::vector<SeqSpec>& seqs, int64_t block_size) {
  AttentionBatch batch;
  batch.block_size = block_size;
  for (const SeqSpec& s : seqs)
    batch.seqs.push_back({s.q_begin, s.n_new, s.n_past, s.blocks.data()});
  return batch;
}

inline int64_t batch_rows(const std::vector<SeqSpec>& seqs) {
  int64_t rows = 0;
  for (const SeqSpec& s : seqs) rows = std::max(rows, s.q_begin + s.n_new);
  return rows;
}

// cache_dtype F16: the caches start as halves and the new rows are rounded to halves.
inline OpCase kv_store_case(std::string name, std::vector<SeqSpec> seqs, int64_t width,
                            uint64_t seed, int64_t kv_stride = -1, int64_t block_size = 16,
                            DType cache_dtype = DType::F32) {
  std::mt19937_64 rng(seed);
  const int64_t n_slots = assign_blocks(rng, seqs, block_size);
  const int64_t m = batch_rows(seqs);
  auto k = random_normal(rng, m * width), v = random_normal(rng, m * width);
  auto k_cache = random_normal(rng, n_slots * width), v_cache = random_normal(rng, n_slots * width);
  const bool half = cache_dtype == DType::F16;
  if (half) k_cache = round_to_f16(k_cache), v_cache = round_to_f16(v_cache);
  OpCase c{std::move(name), Op::KvStore, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tk = g.f32(k, m, width, kv_stride), tv = g.f32(v, m, width, kv_stride);
    Tensor tkc = g.floats(cache_dtype, k_cache, n_slots, width, -1, true);
    Tensor tvc = g.floats(cache_dtype, v_cache, n_slots, width, -1, true);
    be.kv_store(tk, tv, tkc, tvc, make_batch(seqs, block_size));
    return CaseOutput{{g.read(tkc), g.read(tvc)}, g.memory_errors()};
  };
  c.reference = [=] {
    auto kc = k_cache, vc = v_cache;
    ref_kv_store(half ? round_to_f16(k) : k, half ? round_to_f16(v) : v, kc, vc, width, seqs,
                 block_size);
    return Outputs{kc, vc};
  };
  return c;
}

// q_stddev large (e.g. 4) gives scores in the hundreds: a softmax without max-subtraction
// overflows. Slots no sequence uses hold values of magnitude ~1000 so reading them shows.
// cache_dtype F16: the caches hold halves; the reference reads the same values.
inline OpCase attention_case(std::string name, std::vector<SeqSpec> seqs, AttentionShape shape,
                             uint64_t seed, float q_stddev = 1.0f, int64_t q_stride = -1,
                             int64_t out_stride = -1, int64_t block_size = 16,
                             DType cache_dtype = DType::F32) {
  std::mt19937_64 rng(seed);
  if (shape.scale == 0.0f) shape.scale = 1.0f / std::sqrt(float(shape.head_dim));
  const int64_t n_slots = assign_blocks(rng, seqs, block_size);
  const int64_t m = batch_rows(seqs);
  const int64_t q_cols = int64_t(shape.n_heads) * shape.head_dim;
  const int64_t kv_cols = int64_t(shape.n_kv_heads) * shape.head_dim;
  auto q = random_normal(rng, m * q_cols, q_stddev);
  auto k_cache = random_normal(rng, n_slots * kv_cols, 1000.0f);
  auto v_cache = random_normal(rng, n_slots * kv_cols, 1000.0f);
  for (const SeqSpec& s : seqs) {
    for (int64_t p = 0; p < s.n_past + s.n_new; ++p) {
      const int64_t slot = ref_slot(s, p, block_size);
      for (int64_t col = 0; col < kv_cols; ++col) {
        k_cache[size_t(slot * kv_cols + col)] *= 1e-3f;
        v_cache[size_t(slot * kv_cols + col)] *= 1e-3f;
      }
    }
  }
  if (cache_dtype == DType::F16) k_cache = round_to_f16(k_cache), v_cache = round_to_f16(v_cache);
  auto out0 = filled(m * q_cols, nan_f32());
  OpCase c{std::move(name), Op::Attention, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tq = g.f32(q, m, q_cols, q_stride);
    Tensor tkc = g.floats(cache_dtype, k_cache, n_slots, kv_cols);
    Tensor tvc = g.floats(cache_dtype, v_cache, n_slots, kv_cols);
    Tensor tout = g.f32(out0, m, q_cols, out_stride, true);
    be.attention(tq, tkc, tvc, make_batch(seqs, block_size), shape, tout);
    return CaseOutput{{g.read(tout)}, g.memory_errors()};
  };
  c.reference = [=] {
    return Outputs{ref_attention(q, k_cache, v_cache, out0, seqs, block_size, shape)};
  };
  return c;
}

// ---- swiglu / add / embedding / copy ----------------------------------------------------------

// special: the first row holds +-Inf, NaN and +-100 (exp overflow) gate values.
inline OpCase swiglu_case(std::string name, int64_t m, int64_t f, uint64_t seed,
                          int64_t in_stride = -1, bool special = false) {
  std::mt19937_64 rng(seed);
  auto gate = random_normal(rng, m * f, 3.0f), up = random_normal(rng, m * f);
  if (special) {
    const float values[] = {inf_f32(), -inf_f32(), nan_f32(), 100.0f, -100.0f, 0.0f};
    for (size_t i = 0; i < 6 && int64_t(i) < f; ++i) gate[i] = values[i];
  }
  auto out0 = filled(m * f, nan_f32());
  OpCase c{std::move(name), Op::SwiGlu, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tg = g.f32(gate, m, f, in_stride), tu = g.f32(up, m, f, in_stride);
    Tensor to = g.f32(out0, m, f, -1, true);
    be.swiglu(tg, tu, to);
    return CaseOutput{{g.read(to)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_swiglu(gate, up)}; };
  return c;
}

enum class AddAlias { None, OutIsA, OutIsB };

inline OpCase add_case(std::string name, int64_t m, int64_t n, uint64_t seed,
                       AddAlias alias = AddAlias::None, int64_t stride = -1, bool special = false) {
  std::mt19937_64 rng(seed);
  auto a = random_normal(rng, m * n), b = random_normal(rng, m * n);
  if (special) {  // inf + -inf = NaN, inf + 1 = inf, NaN + 1 = NaN
    a[0] = inf_f32(), b[0] = -inf_f32();
    a[1] = inf_f32();
    b[2] = nan_f32();
  }
  auto out0 = filled(m * n, nan_f32());
  OpCase c{std::move(name), Op::Add, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor ta = g.f32(a, m, n, stride, alias == AddAlias::OutIsA);
    Tensor tb = g.f32(b, m, n, stride, alias == AddAlias::OutIsB);
    Tensor to = alias == AddAlias::OutIsA   ? ta
                : alias == AddAlias::OutIsB ? tb
                                            : g.f32(out0, m, n, -1, true);
    be.add(ta, tb, to);
    return CaseOutput{{g.read(to)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_add(a, b)}; };
  return c;
}

inline OpCase embedding_case(std::string name, int64_t table_rows, int64_t d,
                             std::vector<int32_t> ids, int64_t vocab_begin, uint64_t seed,
                             int64_t table_stride = -1, int64_t out_stride = -1) {
  std::mt19937_64 rng(seed);
  auto table = random_normal(rng, table_rows * d);
  const int64_t m = int64_t(ids.size());
  auto out0 = filled(m * d, nan_f32());
  OpCase c{std::move(name), Op::Embedding, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tt = g.f32(table, table_rows, d, table_stride), ti = g.i32(ids, m, 1);
    Tensor to = g.f32(out0, m, d, out_stride, true);
    be.embedding(tt, ti, vocab_begin, to);
    return CaseOutput{{g.read(to)}, g.memory_errors()};
  };
  c.reference = [=] { return Outputs{ref_embedding(table, table_rows, d, ids, vocab_begin)}; };
  return c;
}

inline OpCase copy_case(std::string name, int64_t rows, int64_t cols, DType dtype, uint64_t seed,
                        int64_t src_stride = -1, int64_t dst_stride = -1) {
  std::mt19937_64 rng(seed);
  auto values = random_normal(rng, rows * cols, 100.0f);
  std::vector<int32_t> ints(values.size());
  for (size_t i = 0; i < values.size(); ++i) ints[i] = int32_t(values[i] * 1000.0f);
  OpCase c{std::move(name), Op::Copy, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    const bool f = dtype == DType::F32;
    const std::vector<int32_t> zeros(ints.size(), 0);
    Tensor src = f ? g.f32(values, rows, cols, src_stride) : g.i32(ints, rows, cols, src_stride);
    Tensor dst = f ? g.f32(filled(rows * cols, nan_f32()), rows, cols, dst_stride, true)
                   : g.i32(zeros, rows, cols, dst_stride, true);
    be.copy(src, dst);
    return CaseOutput{{g.read(dst)}, g.memory_errors()};
  };
  c.reference = [=] {
    if (dtype == DType::F32) return Outputs{values};
    return Outputs{std::vector<float>(ints.begin(), ints.end())};
  };
  return c;
}

// ---- sample -----------------------------------------------------------------------------------

// One row per params entry; logits are N(0, logit_stddev), except that row 0's maximum (50)
// appears three times (tokens 1, 2 and vocab-1), so tie-breaking shows.
inline OpCase sample_case(std::string name, int64_t vocab, std::vector<SamplingParams> params,
                          uint64_t seed, float logit_stddev = 2.0f, int64_t stride = -1) {
  std::mt19937_64 rng(seed);
  const int64_t m = int64_t(params.size());
  auto logits = random_normal(rng, m * vocab, logit_stddev);
  if (m > 0 && vocab > 3) {  // row 0: the maximum appears three times
    logits[1] = logits[size_t(vocab - 1)] = logits[2] = 50.0f;
  }
  OpCase c{std::move(name), Op::Sample, {}, {}};
  c.run = [=](Backend& be) {
    GuardedTensors g(be);
    Tensor tl = g.f32(logits, m, vocab, stride);
    std::vector<int32_t> ids(size_t(m), -1);
    be.sample(tl, params.data(), ids.data());
    return CaseOutput{{std::vector<float>(ids.begin(), ids.end())}, g.memory_errors()};
  };
  c.reference = [=] {
    std::vector<float> ids;
    for (int64_t r = 0; r < m; ++r) {
      std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
      ids.push_back(float(ref_sample(row, params[size_t(r)])));
    }
    return Outputs{ids};
  };
  return c;
}

inline SamplingParams sampling(float temperature, int top_k, float top_p, uint64_t seed,
                               uint64_t counter) {
  SamplingParams p;
  p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.seed = seed, p.counter = counter;
  return p;
}

}  // namespace parafuse::op_test

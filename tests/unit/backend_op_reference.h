// Naive reference implementations of every Backend op, for tests/unit/backend_op_cases.h.
//
// Deliberately the dumbest correct code: plain loops over contiguous host vectors, double
// accumulation, attention as an explicit causal softmax over each sequence's full key list,
// sampling with a full sort. No code is shared with kernels/cpu, so a bug cannot hide in both.
// Each function takes and returns row-major (rows, cols) host data without strides; the harness
// packs and unpacks the strided device views.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kernels/backend.h"
#include "kernels/core/random.h"

namespace parafuse::op_test {

// One sequence of an attention batch, owning its block table.
struct SeqSpec {
  int64_t q_begin = 0;
  int64_t n_new = 0;
  int64_t n_past = 0;
  std::vector<int32_t> blocks;  // covers positions [0, n_past + n_new)
};

inline int64_t ref_slot(const SeqSpec& s, int64_t pos, int64_t block_size) {
  return int64_t(s.blocks.at(size_t(pos / block_size))) * block_size + pos % block_size;
}

// y (m,n) = x (m,k) * w (n,k)^T + beta * y0; beta 0 ignores y0 entirely (NaN included).
inline std::vector<float> ref_gemm(const std::vector<float>& x, const std::vector<float>& w,
                                   const std::vector<float>& y0, int64_t m, int64_t n, int64_t k,
                                   float beta) {
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0.0;
      for (int64_t l = 0; l < k; ++l) acc += double(x[size_t(i * k + l)]) * w[size_t(j * k + l)];
      if (beta != 0.0f) acc += double(beta) * y0[size_t(i * n + j)];
      y[size_t(i * n + j)] = float(acc);
    }
  }
  return y;
}

// weight empty = ones.
inline std::vector<float> ref_rmsnorm(const std::vector<float>& x, const std::vector<float>& weight,
                                      int64_t m, int64_t d, float eps) {
  std::vector<float> y(static_cast<size_t>(m * d));
  for (int64_t i = 0; i < m; ++i) {
    double sum_sq = 0.0;
    for (int64_t c = 0; c < d; ++c) sum_sq += double(x[size_t(i * d + c)]) * x[size_t(i * d + c)];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / double(d) + double(eps));
    for (int64_t c = 0; c < d; ++c) {
      const double g = weight.empty() ? 1.0 : double(weight[size_t(c)]);
      y[size_t(i * d + c)] = float(double(x[size_t(i * d + c)]) * inv_rms * g);
    }
  }
  return y;
}

// Rotate-half RoPE; the angle is float32 pos * inv_freq (as HF computes it), the rest double.
inline std::vector<float> ref_rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                                   const std::vector<float>& inv_freq, int64_t m, int n_heads,
                                   int head_dim) {
  std::vector<float> y = x;
  const int64_t cols = int64_t(n_heads) * head_dim;
  const int half = head_dim / 2;
  for (int64_t r = 0; r < m; ++r) {
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const float angle = float(pos[size_t(r)]) * inv_freq[size_t(i)];
        const double c = std::cos(double(angle)), s = std::sin(double(angle));
        const size_t lo = size_t(r * cols + int64_t(h) * head_dim + i), hi = lo + size_t(half);
        y[lo] = float(double(x[lo]) * c - double(x[hi]) * s);
        y[hi] = float(double(x[hi]) * c + double(x[lo]) * s);
      }
    }
  }
  return y;
}

// Returns the caches (n_slots, width) after writing each sequence's new rows at their slots.
inline void ref_kv_store(const std::vector<float>& k, const std::vector<float>& v,
                         std::vector<float>& k_cache, std::vector<float>& v_cache, int64_t width,
                         const std::vector<SeqSpec>& seqs, int64_t block_size) {
  for (const SeqSpec& s : seqs) {
    for (int64_t i = 0; i < s.n_new; ++i) {
      const int64_t slot = ref_slot(s, s.n_past + i, block_size);
      for (int64_t c = 0; c < width; ++c) {
        k_cache[size_t(slot * width + c)] = k[size_t((s.q_begin + i) * width + c)];
        v_cache[size_t(slot * width + c)] = v[size_t((s.q_begin + i) * width + c)];
      }
    }
  }
}

// out (m, n_heads*hd); rows not covered by any sequence keep out0's values.
inline std::vector<float> ref_attention(const std::vector<float>& q,
                                        const std::vector<float>& k_cache,
                                        const std::vector<float>& v_cache,
                                        const std::vector<float>& out0,
                                        const std::vector<SeqSpec>& seqs, int64_t block_size,
                                        const AttentionShape& sh) {
  std::vector<float> out = out0;
  const int64_t q_cols = int64_t(sh.n_heads) * sh.head_dim;
  const int64_t kv_cols = int64_t(sh.n_kv_heads) * sh.head_dim;
  const int group = sh.n_heads / sh.n_kv_heads;
  for (const SeqSpec& s : seqs) {
    for (int64_t i = 0; i < s.n_new; ++i) {
      const int64_t row = s.q_begin + i;
      const int64_t n_keys = s.n_past + i + 1;
      for (int h = 0; h < sh.n_heads; ++h) {
        const int64_t kv_off = int64_t(h / group) * sh.head_dim;
        std::vector<double> score(static_cast<size_t>(n_keys));
        for (int64_t p = 0; p < n_keys; ++p) {
          const int64_t slot = ref_slot(s, p, block_size);
          double dot = 0.0;
          for (int d = 0; d < sh.head_dim; ++d) {
            dot += double(q[size_t(row * q_cols + int64_t(h) * sh.head_dim + d)]) *
                   k_cache[size_t(slot * kv_cols + kv_off + d)];
          }
          score[size_t(p)] = dot * double(sh.scale);
        }
        const double max_score = *std::max_element(score.begin(), score.end());
        double sum = 0.0;
        for (double& x : score) sum += (x = std::exp(x - max_score));
        for (int d = 0; d < sh.head_dim; ++d) {
          double acc = 0.0;
          for (int64_t p = 0; p < n_keys; ++p) {
            acc += score[size_t(p)] / sum *
                   v_cache[size_t(ref_slot(s, p, block_size) * kv_cols + kv_off + d)];
          }
          out[size_t(row * q_cols + int64_t(h) * sh.head_dim + d)] = float(acc);
        }
      }
    }
  }
  return out;
}

inline std::vector<float> ref_swiglu(const std::vector<float>& gate, const std::vector<float>& up) {
  std::vector<float> out(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    out[i] = float(g / (1.0 + std::exp(-g)) * double(up[i]));
  }
  return out;
}

inline std::vector<float> ref_add(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = float(double(a[i]) + double(b[i]));
  return out;
}

inline std::vector<float> ref_embedding(const std::vector<float>& table, int64_t table_rows,
                                        int64_t d, const std::vector<int32_t>& ids,
                                        int64_t vocab_begin) {
  std::vector<float> out(ids.size() * size_t(d), 0.0f);
  for (size_t r = 0; r < ids.size(); ++r) {
    const int64_t local = int64_t(ids[r]) - vocab_begin;
    if (local < 0 || local >= table_rows) continue;
    for (int64_t c = 0; c < d; ++c) out[r * size_t(d) + size_t(c)] = table[size_t(local * d + c)];
  }
  return out;
}

// The sampling rule of kernels/backend.h, written from its statement with normalized
// probabilities and a full stable sort.
inline int32_t ref_sample(const std::vector<float>& logits, const SamplingParams& p) {
  const int64_t vocab = int64_t(logits.size());
  std::vector<int32_t> by_prob(static_cast<size_t>(vocab));
  std::iota(by_prob.begin(), by_prob.end(), 0);
  if (p.temperature == 0.0f) {
    return *std::max_element(by_prob.begin(), by_prob.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] < logits[size_t(b)] ||
             (logits[size_t(a)] == logits[size_t(b)] && a > b);
    });
  }
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<double> prob(static_cast<size_t>(vocab));
  double z = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    z += prob[size_t(i)] = std::exp((double(logits[size_t(i)]) - max_logit) / p.temperature);
  }
  for (double& x : prob) x /= z;
  std::stable_sort(by_prob.begin(), by_prob.end(),
                   [&](int32_t a, int32_t b) { return prob[size_t(a)] > prob[size_t(b)]; });
  int64_t n_keep = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int64_t j = 0; j < n_keep; ++j) mass += prob[size_t(by_prob[size_t(j)])];
    double cumulative = 0.0;
    int64_t j = 0;
    while (j < n_keep) {
      cumulative += prob[size_t(by_prob[size_t(j++)])];
      if (cumulative >= double(p.top_p) * mass) break;
    }
    n_keep = j;
  }
  std::vector<int32_t> kept(by_prob.begin(), by_prob.begin() + n_keep);
  std::sort(kept.begin(), kept.end());
  double kept_mass = 0.0;
  for (int32_t id : kept) kept_mass += prob[size_t(id)];
  const double target = counter_uniform(p.seed, p.counter) * kept_mass;
  double cumulative = 0.0;
  for (int32_t id : kept) {
    cumulative += prob[size_t(id)];
    if (cumulative > target) return id;
  }
  return kept.back();
}

}  // namespace parafuse::op_test

// CPU backend: per-row token sampling, the reference for the rule every backend follows.
//
// The rule (also stated at SamplingParams in kernels/backend.h):
//   temperature 0: argmax, lowest index on ties.
//   otherwise: weights w_i = exp((logit_i - max) / temperature) in double;
//     top-k (k > 0): keep the k largest weights (ties: lower index first);
//     top-p (p < 1): of those, sorted by weight descending (ties: lower index first), keep the
//       shortest prefix whose weight sum reaches p * (sum of kept weights); at least one token;
//     draw: u = counter_uniform(seed, counter) (kernels/core/random.h), target = u * (sum of
//       kept weights), walk the kept tokens in ascending token id adding weights and take the
//       first whose running sum exceeds target.
// Walking in token-id order (not sorted order) makes the unfiltered case a plain prefix sum,
// which a GPU does without sorting.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/core/random.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

// argmax of a row without NaNs whose maximum is max: the lowest index holding it.
int32_t first_index_of(const float* logits, int64_t vocab, float max) {
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] == max) return int32_t(i);
  }
  return 0;  // unreachable: max is one of the logits
}

int32_t sample_row(const float* logits, int64_t vocab, float row_max, const SamplingParams& p,
                   std::vector<double>& weight, std::vector<int32_t>& order,
                   std::vector<char>& kept) {
  const double inv_t = 1.0 / double(p.temperature);
  for (int64_t i = 0; i < vocab; ++i) {
    weight[size_t(i)] = std::exp((double(logits[i]) - double(row_max)) * inv_t);
  }
  const bool use_top_k = p.top_k > 0 && p.top_k < vocab;
  const bool use_top_p = p.top_p < 1.0f;
  if (use_top_k || use_top_p) {
    // Candidates by weight descending, lower token id first on ties.
    std::iota(order.begin(), order.end(), 0);
    auto heavier = [&](int32_t a, int32_t b) {
      return weight[size_t(a)] > weight[size_t(b)] ||
             (weight[size_t(a)] == weight[size_t(b)] && a < b);
    };
    int64_t n_keep = use_top_k ? p.top_k : vocab;
    std::partial_sort(order.begin(), order.begin() + n_keep, order.end(), heavier);
    if (use_top_p) {
      double mass = 0.0;
      for (int64_t j = 0; j < n_keep; ++j) mass += weight[size_t(order[size_t(j)])];
      const double threshold = double(p.top_p) * mass;
      double cumulative = 0.0;
      int64_t j = 0;
      while (j < n_keep) {
        cumulative += weight[size_t(order[size_t(j)])];
        ++j;
        if (cumulative >= threshold) break;
      }
      n_keep = j;
    }
    std::fill(kept.begin(), kept.end(), 0);
    for (int64_t j = 0; j < n_keep; ++j) kept[size_t(order[size_t(j)])] = 1;
  } else {
    std::fill(kept.begin(), kept.end(), 1);
  }
  double mass = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (kept[size_t(i)]) mass += weight[size_t(i)];
  }
  const double target = counter_uniform(p.seed, p.counter) * mass;
  double cumulative = 0.0;
  int64_t last_positive = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!kept[size_t(i)] || weight[size_t(i)] <= 0.0) continue;
    cumulative += weight[size_t(i)];
    last_positive = i;
    if (cumulative > target) return int32_t(i);
  }
  return int32_t(last_positive);  // only reached through rounding at the very top of [0, mass)
}

}  // namespace

void CpuBackend::sample(const Tensor& logits, const SamplingParams* params, int32_t* ids_out) {
  require_view(Op::Sample, logits, "logits");
  require_dtype(Op::Sample, logits, "logits", DType::F32);
  check_sample_shapes(logits, params, ids_out);
  const int64_t m = logits.rows, vocab = logits.cols;
  if (m == 0) return;
  std::vector<float>& row_max = sample_scratch_;
  row_max.resize(size_t(m));
  for (int64_t r = 0; r < m; ++r) {  // validate every row before sampling any
    check_sample_params(r, params[r]);
    const float* row = logits.f32() + r * logits.row_stride;
    bool has_nan = false;
    row_max[size_t(r)] = max_of<true>(row, vocab, &has_nan);  // one pass for both
    if (has_nan) {
      const int64_t i = std::find_if(row, row + vocab, [](float x) { return std::isnan(x); }) - row;
      PF_THROW("sample: row {} has a NaN logit at token {}", r, i);
    }
    if (params[r].temperature > 0.0f) {
      PF_CHECK(std::isfinite(row_max[size_t(r)]),
               "sample: row {} has maximum logit {}; temperature sampling needs a finite maximum",
               r, row_max[size_t(r)]);
    }
  }
  // Rows are independent: the pool splits them.
  pool_->parallel_for(m, 1, [&](int64_t row_begin, int64_t row_end) {
    std::vector<double> weight;
    std::vector<int32_t> order;
    std::vector<char> kept;
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* row = logits.f32() + r * logits.row_stride;
      if (params[r].temperature == 0.0f) {
        ids_out[r] = first_index_of(row, vocab, row_max[size_t(r)]);
        continue;
      }
      weight.resize(size_t(vocab));
      order.resize(size_t(vocab));
      kept.resize(size_t(vocab));
      ids_out[r] = sample_row(row, vocab, row_max[size_t(r)], params[r], weight, order, kept);
    }
  });
}

}  // namespace parafuse

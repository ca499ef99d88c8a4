// Greedy decoding on two engines (e.g. CUDA bf16 vs CPU f32) and the divergence rule of the GPU
// end-to-end tests: bf16 rounding may change a near-tie late in a generation, so the two token
// streams must agree until the first step where they differ, and at that step each side's
// token must be in the other side's top 5 logits (same prefix, so the logits are comparable);
// comparison stops there.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/engine/generate.h"

namespace parafuse::test {

struct GreedyRun {
  std::vector<int32_t> ids;
  std::vector<std::vector<float>> logits;  // the row each token was taken from
};

inline GreedyRun greedy(Engine& engine, const std::vector<int32_t>& prompt, int max_tokens) {
  GreedyRun run;
  GenerateOptions options;
  options.max_tokens = max_tokens;
  options.on_logits = [&](std::span<const float> row) {
    run.logits.emplace_back(row.begin(), row.end());
  };
  run.ids = generate(engine, prompt, options).ids;
  return run;
}

inline std::vector<int32_t> top_ids(const std::vector<float>& row, size_t k) {
  std::vector<int32_t> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::min(k, order.size());
  std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(),
                    [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)]; });
  order.resize(k);
  return order;
}

// Number of identical leading tokens; fails the test if the first divergence breaks the rule.
inline size_t expect_greedy_agrees(const GreedyRun& reference, const GreedyRun& device,
                                   const std::string& what) {
  const size_t n = std::min(reference.ids.size(), device.ids.size());
  EXPECT_GT(n, 0u) << what << ": no tokens generated";
  for (size_t t = 0; t < n; ++t) {
    if (reference.ids[t] == device.ids[t]) continue;
    const auto ref_top = top_ids(reference.logits.at(t), 5);
    const auto dev_top = top_ids(device.logits.at(t), 5);
    const bool dev_in_ref = std::count(ref_top.begin(), ref_top.end(), device.ids[t]) > 0;
    const bool ref_in_dev = std::count(dev_top.begin(), dev_top.end(), reference.ids[t]) > 0;
    EXPECT_TRUE(dev_in_ref && ref_in_dev)
        << what << ": token " << t << " differs (reference " << reference.ids[t] << ", device "
        << device.ids[t] << ") and one is not in the other's top 5";
    std::printf("  %s: %zu identical tokens, then a top-5 divergence at token %zu\n", what.c_str(),
                t, t);
    return t;
  }
  std::printf("  %s: all %zu tokens identical\n", what.c_str(), n);
  return n;
}

}  // namespace parafuse::test

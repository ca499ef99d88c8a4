#include "runtime/engine/pipeline_plan.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "kernels/core/error.h"

namespace parafuse {

BlockCost block_cost(const ModelConfig& c, int block) {
  const BlockConfig& b = c.blocks.at(size_t(block));
  const int64_t H = c.hidden_size, hd = c.head_dim;
  int64_t params = 0;
  double attention_flops = 0;
  if (b.attention != AttentionKind::None) params += H;
  if (b.attention == AttentionKind::Full) {
    params += (int64_t(c.n_heads) + 2 * b.n_kv_heads) * hd * H + H * c.n_heads * hd;
    attention_flops = 4.0 * double(kCostContext) * double(c.n_heads * hd);  // QK^T and PV
  }
  if (b.attention == AttentionKind::Linear) params += H * H;
  if (b.ffn != FfnKind::None && !b.ffn_norm_folded) params += H;
  if (b.ffn == FfnKind::SwiGlu) params += 3 * b.intermediate_size * H;
  if (b.ffn == FfnKind::Linear) params += H * H;
  return BlockCost{2.0 * double(params) + attention_flops, params};
}

std::vector<StagePlan> plan_pipeline(const ModelConfig& c, int pp, const std::vector<int>& pinned) {
  const int n = c.n_blocks();
  PF_CHECK(pp >= 1, "pp must be at least 1, got {}", pp);
  PF_CHECK(pp <= n, "pp={} stages for a model of {} blocks: each stage needs a block", pp, n);
  std::vector<double> cost(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) cost[size_t(i)] = block_cost(c, i).flops_per_token;
  const double head = 2.0 * double(c.vocab_size * c.hidden_size);  // LM head on the last stage

  std::vector<int> starts;
  if (!pinned.empty()) {
    PF_CHECK(int(pinned.size()) == pp, "pp_split has {} entries but pp={}: give the first block of "
             "each stage", pinned.size(), pp);
    PF_CHECK(pinned[0] == 0, "pp_split must start at block 0, got {}", pinned[0]);
    for (size_t i = 1; i < pinned.size(); ++i)
      PF_CHECK(pinned[i] > pinned[i - 1] && pinned[i] < n,
               "pp_split entry {} = {} must be greater than {} and below the block count {}", i,
               pinned[i], pinned[i - 1], n);
    starts = pinned;
  } else {
    // best[s][i]: the least possible max stage cost covering blocks [0, i) with s stages.
    std::vector<double> prefix(size_t(n) + 1, 0.0);
    for (int i = 0; i < n; ++i) prefix[size_t(i) + 1] = prefix[size_t(i)] + cost[size_t(i)];
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<std::vector<double>> best(size_t(pp) + 1, std::vector<double>(size_t(n) + 1, inf));
    std::vector<std::vector<int>> cut(size_t(pp) + 1, std::vector<int>(size_t(n) + 1, 0));
    best[0][0] = 0;
    for (int s = 1; s <= pp; ++s) {
      for (int i = s; i <= n; ++i) {
        for (int j = s - 1; j < i; ++j) {
          double stage = prefix[size_t(i)] - prefix[size_t(j)];
          if (s == pp && i == n) stage += head;
          const double v = std::max(best[size_t(s) - 1][size_t(j)], stage);
          // Ties go to the later cut, keeping earlier stages no heavier than later ones.
          if (v <= best[size_t(s)][size_t(i)]) {
            best[size_t(s)][size_t(i)] = v;
            cut[size_t(s)][size_t(i)] = j;
          }
        }
      }
    }
    starts.assign(size_t(pp), 0);
    int i = n;
    for (int s = pp; s >= 1; --s) {
      starts[size_t(s) - 1] = cut[size_t(s)][size_t(i)];
      i = starts[size_t(s) - 1];
    }
  }
  std::vector<StagePlan> plan;
  for (int s = 0; s < pp; ++s) {
    StagePlan p;
    p.first = starts[size_t(s)];
    p.last = s + 1 < pp ? starts[size_t(s) + 1] : n;
    for (int i = p.first; i < p.last; ++i) {
      const BlockCost bc = block_cost(c, i);
      p.flops_per_token += bc.flops_per_token;
      p.parameters += bc.parameters;
    }
    if (s == pp - 1) {
      p.flops_per_token += head;
      p.parameters += c.tie_word_embeddings ? 0 : c.vocab_size * c.hidden_size;
    }
    if (s == 0) p.parameters += c.vocab_size * c.hidden_size;
    plan.push_back(p);
  }
  return plan;
}

std::string describe_plan(const std::vector<StagePlan>& plan) {
  double total = 0;
  for (const auto& p : plan) total += p.flops_per_token;
  std::string out;
  for (size_t s = 0; s < plan.size(); ++s) {
    const StagePlan& p = plan[s];
    out += fmt::format("stage {}: blocks [{}, {}) {:.3f} GFLOP/token ({:.1f}%), {:.3f} B params{}",
                       s, p.first, p.last, p.flops_per_token / 1e9,
                       100.0 * p.flops_per_token / std::max(total, 1.0), double(p.parameters) / 1e9,
                       s + 1 < plan.size() ? "\n" : "");
  }
  return out;
}

}  // namespace parafuse

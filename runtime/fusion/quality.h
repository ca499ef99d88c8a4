// The quality cost of a modified forward pass (attention removed, FFNs in parallel-FFN mode)
// against a baseline on held-out tokens: perplexity, its increase in percent, and the mean KL
// divergence KL(baseline || modified) of the next-token distribution.
//
// Perplexity alone can hide changes that move probability between wrong tokens; the KL of the
// full distribution sees them, and the paper's planner uses both. The baseline keeps its
// log-softmax rows (float, predictions x vocab) so each candidate plan costs one forward pass:
// 512 tokens of a 49k vocabulary is 100 MB, fine for calibration-sized texts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/engine/engine.h"

namespace parafuse {

struct QualityBaseline {
  std::vector<int32_t> tokens;  // the held-out ids (predictions = tokens - 1)
  int64_t vocab = 0;
  std::vector<float> log_probs;  // (predictions, vocab) log-softmax of the baseline
  double mean_nll = 0.0;
  double perplexity = 0.0;
  int64_t predictions() const { return int64_t(tokens.size()) - 1; }
};

struct QualityResult {
  double perplexity = 0.0;
  double ppl_increase_pct = 0.0;  // 100 * (ppl / baseline ppl - 1)
  double mean_kl = 0.0;           // nats per prediction, KL(baseline || modified)
};

// Runs `tokens` (at least 2, fitting the KV cache and context) with `overrides` on a
// single-rank engine; the engine's own overrides are restored afterwards.
QualityBaseline quality_baseline(Engine& engine, std::span<const int32_t> tokens,
                                 const ForwardOverrides& overrides = {});

QualityResult evaluate(Engine& engine, const QualityBaseline& baseline,
                       const ForwardOverrides& overrides);

}  // namespace parafuse

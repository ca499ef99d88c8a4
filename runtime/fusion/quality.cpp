// Perplexity and KL against a stored baseline (see quality.h). Both passes share one loop that
// feeds the held-out ids through one sequence in chunks and hands each chunk's logits rows to a
// callback, so the baseline and the candidates are scored on exactly the same rows.
#include "runtime/fusion/quality.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

constexpr int kQualitySeq = 0;

// log_softmax(row) into `out`, in double for the normaliser.
void log_softmax(std::span<const float> row, float* out) {
  const float max = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float v : row) sum += std::exp(double(v) - double(max));
  const double log_z = double(max) + std::log(sum);
  for (size_t k = 0; k < row.size(); ++k) out[k] = float(double(row[k]) - log_z);
}

// Feeds tokens[0 .. n-2] with `overrides`; calls on_row(prediction index, logits row).
void score_rows(Engine& engine, std::span<const int32_t> tokens, const ForwardOverrides& overrides,
                const std::function<void(int64_t, std::span<const float>)>& on_row) {
  PF_CHECK(engine.pipeline_plan().size() == 1 && engine.is_last_stage(),
           "quality evaluation runs on one rank (pp=1)");
  PF_CHECK(tokens.size() >= 2, "quality evaluation needs at least 2 tokens, got {}", tokens.size());
  Stage& stage = engine.stage();
  struct RestoreOverrides {
    Stage& s;
    ForwardOverrides saved;
    ~RestoreOverrides() { s.set_overrides(saved); }
  } restore_overrides{stage, stage.overrides()};
  stage.set_overrides(overrides);
  engine.add_sequence(kQualitySeq);
  struct RemoveSequence {
    Engine& e;
    ~RemoveSequence() { e.remove_sequence(kQualitySeq); }
  } remove_sequence{engine};
  const size_t chunk = size_t(engine.options().max_batch_tokens);
  const size_t V = size_t(engine.config().vocab_size);
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += chunk) {
    const size_t n = std::min(tokens.size() - 1 - begin, chunk);
    SeqTokens step{kQualitySeq, tokens.subspan(begin, n), true};
    const std::vector<float> logits =
        engine.to_host(engine.forward(std::span<const SeqTokens>(&step, 1)));
    for (size_t i = 0; i < n; ++i)
      on_row(int64_t(begin + i), std::span<const float>(logits.data() + i * V, V));
  }
}

}  // namespace

QualityBaseline quality_baseline(Engine& engine, std::span<const int32_t> tokens,
                                 const ForwardOverrides& overrides) {
  QualityBaseline b;
  b.tokens.assign(tokens.begin(), tokens.end());
  b.vocab = engine.config().vocab_size;
  const size_t V = size_t(b.vocab);
  b.log_probs.resize(size_t(b.predictions()) * V);
  double nll = 0.0;
  score_rows(engine, tokens, overrides, [&](int64_t i, std::span<const float> row) {
    float* out = b.log_probs.data() + size_t(i) * V;
    log_softmax(row, out);
    nll -= double(out[size_t(tokens[size_t(i) + 1])]);
  });
  b.mean_nll = nll / double(b.predictions());
  b.perplexity = std::exp(b.mean_nll);
  return b;
}

QualityResult evaluate(Engine& engine, const QualityBaseline& baseline,
                       const ForwardOverrides& overrides) {
  PF_CHECK(baseline.vocab == engine.config().vocab_size,
           "the quality baseline has a vocabulary of {}, the model {}", baseline.vocab,
           engine.config().vocab_size);
  const size_t V = size_t(baseline.vocab);
  std::vector<float> mine(V);
  double nll = 0.0, kl = 0.0;
  score_rows(engine, baseline.tokens, overrides, [&](int64_t i, std::span<const float> row) {
    log_softmax(row, mine.data());
    const float* base = baseline.log_probs.data() + size_t(i) * V;
    double row_kl = 0.0;
    for (size_t k = 0; k < V; ++k) {
      const double p = std::exp(double(base[k]));
      row_kl += p * (double(base[k]) - double(mine[k]));
    }
    kl += std::max(0.0, row_kl);  // >= 0 in exact arithmetic; clip float rounding
    nll -= double(mine[size_t(baseline.tokens[size_t(i) + 1])]);
  });
  const double n = double(baseline.predictions());
  QualityResult r;
  r.perplexity = std::exp(nll / n);
  r.ppl_increase_pct = 100.0 * (r.perplexity / baseline.perplexity - 1.0);
  r.mean_kl = kl / n;
  return r;
}

}  // namespace parafuse

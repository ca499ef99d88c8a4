#include "runtime/engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Removes the sequence on every exit path.
struct SequenceGuard {
  Engine& engine;
  int seq;
  ~SequenceGuard() { engine.remove_sequence(seq); }
};

}  // namespace

double log_prob(std::span<const float> row, int32_t target) {
  PF_CHECK(target >= 0 && size_t(target) < row.size(), "target id {} outside the {} logits",
           target, row.size());
  const float max = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float x : row) sum += std::exp(double(x) - double(max));
  return double(row[size_t(target)]) - double(max) - std::log(sum);
}

GenerateResult generate(Engine& engine, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<bool(int32_t)>& on_token, int seq) {
  PF_CHECK(!prompt.empty(), "the prompt is empty");
  GenerateResult result;
  engine.add_sequence(seq);
  SequenceGuard guard{engine, seq};
  const int64_t chunk = engine.options().max_batch_tokens;

  auto t0 = std::chrono::steady_clock::now();
  Tensor logits;
  for (size_t begin = 0; begin < prompt.size(); begin += size_t(chunk)) {
    const size_t n = std::min(prompt.size() - begin, size_t(chunk));
    SeqTokens step{seq, prompt.subspan(begin, n), false};
    logits = engine.forward(std::span<const SeqTokens>(&step, 1));
  }
  auto report_logits = [&] {
    if (options.on_logits && engine.is_last_stage()) {
      const std::vector<float> row = engine.to_host(logits);
      options.on_logits(row);
    }
  };
  report_logits();
  SamplingParams params = options.sampling;
  params.counter = uint64_t(prompt.size());
  int32_t next = engine.sample(logits, std::span<const SamplingParams>(&params, 1))[0];
  result.prefill_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  for (int produced = 0; produced < options.max_tokens; ++produced) {
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) !=
        options.stop_ids.end()) {
      result.stopped = true;
      break;
    }
    result.ids.push_back(next);
    if (on_token && !on_token(next)) break;
    if (produced + 1 == options.max_tokens) break;
    if (engine.sequence_length(seq) + 1 > engine.config().max_position_embeddings) break;
    SeqTokens step{seq, std::span<const int32_t>(&next, 1), false};
    logits = engine.forward(std::span<const SeqTokens>(&step, 1));
    report_logits();
    params.counter = uint64_t(engine.sequence_length(seq));
    next = engine.sample(logits, std::span<const SamplingParams>(&params, 1))[0];
  }
  result.decode_seconds = seconds_since(t0);
  return result;
}

PerplexityResult perplexity(Engine& engine, std::span<const int32_t> tokens, int seq) {
  PF_CHECK(tokens.size() >= 2, "perplexity needs at least 2 tokens, got {}", tokens.size());
  engine.add_sequence(seq);
  SequenceGuard guard{engine, seq};
  const int64_t chunk = engine.options().max_batch_tokens;
  const int64_t V = engine.config().vocab_size;
  PerplexityResult r;
  double nll = 0.0;
  for (size_t begin = 0; begin + 1 < tokens.size(); begin += size_t(chunk)) {
    // Predictions for positions begin..begin+n-1 need inputs up to the one before the target.
    const size_t n = std::min(tokens.size() - 1 - begin, size_t(chunk));
    SeqTokens step{seq, tokens.subspan(begin, n), true};
    std::vector<float> logits = engine.to_host(engine.forward(std::span<const SeqTokens>(&step, 1)));
    // Scored where the logits are (the last pipeline stage), then shared with every rank.
    double chunk_nll = 0.0;
    if (engine.is_last_stage()) {
      for (size_t i = 0; i < n; ++i) {
        std::span<const float> row(logits.data() + i * size_t(V), size_t(V));
        chunk_nll -= log_prob(row, tokens[begin + i + 1]);
      }
    }
    engine.broadcast_from_last_stage(&chunk_nll, sizeof(chunk_nll));
    nll += chunk_nll;
    r.tokens += int64_t(n);
  }
  r.mean_nll = nll / double(r.tokens);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace parafuse

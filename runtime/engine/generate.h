// The token loop on top of Engine: chunked prefill, then one decode step per token, and the
// perplexity of a text. Single-sequence helpers used by `parafuse generate` / `eval-ppl` and
// the benchmarks; batches of many sequences go through Engine::forward directly.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/engine/engine.h"

namespace parafuse {

struct GenerateOptions {
  int max_tokens = 128;
  SamplingParams sampling;  // counter is set per token (the token's position)
  std::vector<int32_t> stop_ids;  // usually the tokenizer's eos ids
  // Called with the logits row each token is sampled from, where the logits are (last stage).
  std::function<void(std::span<const float>)> on_logits;
};

struct GenerateResult {
  std::vector<int32_t> ids;  // generated ids (the stop id, if hit, is not included)
  bool stopped = false;      // hit a stop id (else max_tokens or the callback ended it)
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

// on_token returns false to stop early. Uses sequence id `seq`, removed again at the end.
GenerateResult generate(Engine& engine, std::span<const int32_t> prompt,
                        const GenerateOptions& options,
                        const std::function<bool(int32_t)>& on_token = {}, int seq = 0);

struct PerplexityResult {
  int64_t tokens = 0;  // predictions scored (input tokens - 1)
  double mean_nll = 0.0;
  double perplexity = 0.0;
};

// Scores every next-token prediction of `tokens` in one sequence (the whole text must fit the
// model's context and the KV cache), fed in chunks of max_batch_tokens.
PerplexityResult perplexity(Engine& engine, std::span<const int32_t> tokens, int seq = 0);

// log softmax(row)[target], computed stably in double.
double log_prob(std::span<const float> logits_row, int32_t target);

}  // namespace parafuse

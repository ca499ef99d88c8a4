#include "runtime/engine/throughput.h"

#include <algorithm>
#include <chrono>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ThroughputResult measure_throughput(Engine& engine, int batch, int prompt_tokens,
                                    int decode_steps) {
  PF_CHECK(batch >= 1 && prompt_tokens >= 1 && decode_steps >= 1,
           "throughput needs batch, prompt and steps >= 1 (got {}, {}, {})", batch, prompt_tokens,
           decode_steps);
  const int64_t needed =
      int64_t(batch) * (prompt_tokens + decode_steps + engine.options().page_size);
  PF_CHECK(needed <= engine.kv_cache().capacity_tokens(),
           "batch {} x {} tokens needs a KV cache of {} tokens, it holds {} (--kv-cache-tokens)",
           batch, prompt_tokens + decode_steps, needed, engine.kv_cache().capacity_tokens());
  const int64_t V = engine.config().vocab_size;
  constexpr int kFirstSeq = 1000;
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (int b = 0; b < batch; ++b) {
    engine.add_sequence(kFirstSeq + b);
    for (int i = 0; i < prompt_tokens; ++i)
      prompts[size_t(b)].push_back(int32_t((int64_t(b) * 7919 + int64_t(i) * 104729 + 1) % V));
  }
  ThroughputResult r;
  r.batch = batch;
  r.prompt_tokens = prompt_tokens;
  r.decode_steps = decode_steps;

  // Prefill: sequences packed into forwards of at most max_batch_tokens rows.
  double t0 = now();
  const int64_t max_rows = engine.options().max_batch_tokens;
  std::vector<SeqTokens> steps;
  std::vector<int> finishing;  // sequences whose last prompt chunk is in `steps`
  r.first_token_seconds.assign(static_cast<size_t>(batch), 0.0);
  int64_t rows = 0;
  auto flush = [&] {
    if (steps.empty()) return;
    engine.forward(steps);
    engine.backend().synchronize();
    for (int b : finishing) r.first_token_seconds[size_t(b)] = now() - t0;
    finishing.clear();
    steps.clear();
    rows = 0;
  };
  for (int b = 0; b < batch; ++b) {
    for (int begin = 0; begin < prompt_tokens;) {
      const int n = int(std::min<int64_t>(prompt_tokens - begin, max_rows));
      if (rows + n > max_rows) flush();
      steps.push_back(
          {kFirstSeq + b,
           std::span<const int32_t>(prompts[size_t(b)]).subspan(size_t(begin), size_t(n)), false});
      rows += n;
      begin += n;
      if (begin == prompt_tokens) finishing.push_back(b);
    }
  }
  flush();
  engine.backend().synchronize();
  r.prefill_seconds = now() - t0;
  r.prefill_tokens_per_second = double(batch) * prompt_tokens / r.prefill_seconds;

  // Decode: every sequence advances one (fixed) token per step.
  engine.reset_stats();
  std::vector<int32_t> next(static_cast<size_t>(batch), 1);
  std::vector<SamplingParams> greedy(static_cast<size_t>(batch));
  std::vector<double> step_seconds;
  for (int s = 0; s < decode_steps; ++s) {
    steps.clear();
    for (int b = 0; b < batch; ++b)
      steps.push_back({kFirstSeq + b, std::span<const int32_t>(&next[size_t(b)], 1), false});
    t0 = now();
    Tensor logits = engine.forward(steps);
    next = engine.sample(logits, greedy);
    step_seconds.push_back(now() - t0);
  }
  r.step_seconds = step_seconds;
  std::sort(step_seconds.begin(), step_seconds.end());
  r.decode_step_seconds = step_seconds[step_seconds.size() / 2];
  r.decode_tokens_per_second = batch / r.decode_step_seconds;
  const EngineStats& st = engine.stats();
  r.all_reduces_per_step = double(st.tp_all_reduces) / decode_steps;
  r.collective_seconds_per_step = st.collective_seconds / decode_steps;
  r.transport_seconds_per_step = st.transport_seconds / decode_steps;
  r.compute_seconds_per_step =
      std::max(0.0, st.seconds / decode_steps - r.collective_seconds_per_step -
                        r.transport_seconds_per_step);
  for (int b = 0; b < batch; ++b) engine.remove_sequence(kFirstSeq + b);
  return r;
}

}  // namespace parafuse

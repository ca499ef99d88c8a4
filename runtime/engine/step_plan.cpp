#include "runtime/engine/step_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "runtime/engine/engine.h"

namespace parafuse {
namespace {

// ---- bytes ---------------------------------------------------------------------------------

class Writer {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }
  std::vector<uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<uint8_t> bytes_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& bytes) : bytes_(bytes) {}
  template <typename T>
  T get() {
    PF_CHECK(bytes_.size() - at_ >= sizeof(T), "step plan: truncated at byte {} of {}", at_,
             bytes_.size());
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  // A count of items of at least `item_bytes` each that must fit in what is left.
  size_t count(size_t item_bytes) {
    const uint32_t n = get<uint32_t>();
    PF_CHECK(size_t(n) * item_bytes <= bytes_.size() - at_,
             "step plan: a count of {} at byte {} runs past the end ({} bytes)", n, at_,
             bytes_.size());
    return n;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  const std::vector<uint8_t>& bytes_;
  size_t at_ = 0;
};

constexpr uint32_t kPlanMagic = 0x50465350;  // "PSFP"

// ---- logprobs ------------------------------------------------------------------------------

// log softmax of one row at `ids`, and the `k` most likely ids (ties: lower id first).
void row_logprobs(std::span<const float> row, int32_t sampled, int k, TokenLogprob& sampled_out,
                  std::vector<TokenLogprob>& top_out) {
  const float max = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float x : row) sum += std::exp(double(x) - double(max));
  const double log_z = double(max) + std::log(sum);
  auto logprob = [&](int32_t id) { return float(double(row[size_t(id)]) - log_z); };
  sampled_out = {sampled, sampled >= 0 ? logprob(sampled) : 0.0f};
  std::vector<int32_t> ids(row.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t n = std::min(size_t(k), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + long(n), ids.end(), [&](int32_t a, int32_t b) {
    return row[size_t(a)] > row[size_t(b)] || (row[size_t(a)] == row[size_t(b)] && a < b);
  });
  top_out.clear();
  for (size_t i = 0; i < n; ++i) top_out.push_back({ids[i], logprob(ids[i])});
}

}  // namespace

std::vector<uint8_t> encode_step_plan(const StepPlan& plan) {
  Writer w;
  w.put(kPlanMagic);
  w.put(plan.step);
  w.put(uint8_t(plan.shutdown));
  w.put(uint32_t(plan.release.size()));
  for (int s : plan.release) w.put(int32_t(s));
  w.put(uint32_t(plan.start.size()));
  for (int s : plan.start) w.put(int32_t(s));
  w.put(uint32_t(plan.seqs.size()));
  for (const PlannedSeq& p : plan.seqs) {
    w.put(int32_t(p.seq));
    w.put(uint8_t(p.sample));
    w.put(p.sampling.temperature);
    w.put(int32_t(p.sampling.top_k));
    w.put(p.sampling.top_p);
    w.put(p.sampling.seed);
    w.put(p.sampling.counter);
    w.put(int32_t(p.top_logprobs));
    w.put(uint32_t(p.tokens.size()));
    for (int32_t t : p.tokens) w.put(t);
  }
  return w.take();
}

StepPlan decode_step_plan(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  PF_CHECK(r.get<uint32_t>() == kPlanMagic, "step plan: bad magic (not a plan)");
  StepPlan plan;
  plan.step = r.get<uint64_t>();
  plan.shutdown = r.get<uint8_t>() != 0;
  for (size_t i = 0, n = r.count(4); i < n; ++i) plan.release.push_back(r.get<int32_t>());
  for (size_t i = 0, n = r.count(4); i < n; ++i) plan.start.push_back(r.get<int32_t>());
  const size_t n_seqs = r.count(41);
  for (size_t i = 0; i < n_seqs; ++i) {
    PlannedSeq p;
    p.seq = r.get<int32_t>();
    p.sample = r.get<uint8_t>() != 0;
    p.sampling.temperature = r.get<float>();
    p.sampling.top_k = r.get<int32_t>();
    p.sampling.top_p = r.get<float>();
    p.sampling.seed = r.get<uint64_t>();
    p.sampling.counter = r.get<uint64_t>();
    p.top_logprobs = r.get<int32_t>();
    PF_CHECK(p.top_logprobs >= -1 && p.top_logprobs <= kMaxTopLogprobs,
             "step plan: top_logprobs {} outside [-1, {}]", p.top_logprobs, kMaxTopLogprobs);
    const size_t n_tokens = r.count(4);
    for (size_t t = 0; t < n_tokens; ++t) p.tokens.push_back(r.get<int32_t>());
    plan.seqs.push_back(std::move(p));
  }
  PF_CHECK(r.done(), "step plan: {} bytes left after the plan", bytes.size());
  return plan;
}

void broadcast_step_plan(Collectives& world, StepPlan& plan, int root) {
  std::vector<uint8_t> bytes;
  if (world.rank() == root) bytes = encode_step_plan(plan);
  uint64_t size = bytes.size();
  world.broadcast_bytes(&size, sizeof(size), root);
  if (world.rank() == root) return world.broadcast_bytes(bytes.data(), bytes.size(), root);
  bytes.resize(size);
  world.broadcast_bytes(bytes.data(), bytes.size(), root);
  plan = decode_step_plan(bytes);
}

StepOutput run_step(Engine& engine, const StepPlan& plan) {
  for (int seq : plan.release) engine.remove_sequence(seq);
  for (int seq : plan.start) engine.add_sequence(seq);
  StepOutput out;
  if (plan.seqs.empty()) return out;

  std::vector<SeqTokens> steps;
  steps.reserve(plan.seqs.size());
  for (const PlannedSeq& p : plan.seqs) steps.push_back({p.seq, p.tokens, false});
  const Tensor logits = engine.forward(steps);

  // One logits row per planned sequence; rows that sample nothing are sampled greedily (cheap)
  // and their ids dropped.
  std::vector<SamplingParams> params(plan.seqs.size());
  for (size_t i = 0; i < plan.seqs.size(); ++i)
    if (plan.seqs[i].sample) params[i] = plan.seqs[i].sampling;
  out.ids = engine.sample(logits, params);
  for (size_t i = 0; i < plan.seqs.size(); ++i)
    if (!plan.seqs[i].sample) out.ids[i] = -1;

  // Logprobs where asked: computed from the host logits on the last stage, then shared as one
  // fixed-size block per asking row (the sampled id's, then kMaxTopLogprobs alternatives).
  std::vector<size_t> asking;
  for (size_t i = 0; i < plan.seqs.size(); ++i)
    if (plan.seqs[i].sample && plan.seqs[i].top_logprobs >= 0) asking.push_back(i);
  out.sampled_logprob.resize(plan.seqs.size());
  out.top.resize(plan.seqs.size());
  if (asking.empty()) return out;
  constexpr size_t kBlock = 1 + kMaxTopLogprobs;
  std::vector<TokenLogprob> blocks(asking.size() * kBlock, TokenLogprob{-1, 0.0f});
  if (engine.is_last_stage()) {
    const std::vector<float> host = engine.to_host(logits);
    const size_t vocab = size_t(engine.config().vocab_size);
    std::vector<TokenLogprob> top;
    for (size_t a = 0; a < asking.size(); ++a) {
      const size_t i = asking[a];
      std::span<const float> row(host.data() + i * vocab, vocab);
      row_logprobs(row, out.ids[i], plan.seqs[i].top_logprobs, blocks[a * kBlock], top);
      std::copy(top.begin(), top.end(), blocks.begin() + long(a * kBlock + 1));
    }
  }
  engine.broadcast_from_last_stage(blocks.data(), blocks.size() * sizeof(TokenLogprob));
  for (size_t a = 0; a < asking.size(); ++a) {
    const size_t i = asking[a];
    out.sampled_logprob[i] = blocks[a * kBlock];
    for (int k = 0; k < plan.seqs[i].top_logprobs; ++k)
      out.top[i].push_back(blocks[a * kBlock + 1 + size_t(k)]);
  }
  return out;
}

}  // namespace parafuse

// The continuous-batching scheduler and its step plans: budgets, chunked prefill beside
// decodes, preemption by recompute, cancellation; the plan's byte form; and run_step on a real
// engine giving the ids of the same requests run one at a time.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generate.h"
#include "runtime/engine/scheduler.h"
#include "runtime/engine/step_plan.h"
#include "runtime/model/model_files.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";

ScheduledRequest request(int64_t id, int prompt_tokens, int max_tokens) {
  ScheduledRequest r;
  r.id = id;
  for (int i = 0; i < prompt_tokens; ++i) r.prompt.push_back(int32_t(10 + (i * 7 + id) % 200));
  r.max_tokens = max_tokens;
  return r;
}

// Feeds a plan's sampled rows the ids `next(seq)` without an engine.
StepOutput fake_output(const StepPlan& plan, int32_t id = 5) {
  StepOutput out;
  for (const PlannedSeq& p : plan.seqs) out.ids.push_back(p.sample ? id : -1);
  return out;
}

int64_t planned_tokens(const StepPlan& plan) {
  int64_t n = 0;
  for (const PlannedSeq& p : plan.seqs) n += int64_t(p.tokens.size());
  return n;
}

TEST(Scheduler, LongPromptIsChunkedBesideDecodes) {
  SchedulerOptions o;
  o.kv_pages = 1000;
  o.page_size = 16;
  o.max_batch_tokens = 64;
  Scheduler s(o);
  for (int i = 0; i < 4; ++i) s.add(request(i, 8, 100));
  StepPlan first = s.schedule();
  EXPECT_EQ(first.seqs.size(), 4u);
  s.complete(first, fake_output(first));
  s.add(request(99, 1000, 4));  // a long prompt arrives while 4 sequences decode
  int chunks = 0;
  for (int step = 0; step < 30 && s.counts().running > 0; ++step) {
    StepPlan plan = s.schedule();
    EXPECT_LE(planned_tokens(plan), o.max_batch_tokens);
    int decodes = 0;
    for (const PlannedSeq& p : plan.seqs) {
      if (p.tokens.size() == 1 && p.sample) ++decodes;
      if (p.tokens.size() > 1) ++chunks;
    }
    if (step < 15) {
      EXPECT_EQ(decodes, 4) << "step " << step << ": a decode stalled";
    }
    s.complete(plan, fake_output(plan));
  }
  // 1000 prompt tokens with 60 rows a step left over: 17 chunks.
  EXPECT_EQ(chunks, 17);
}

TEST(Scheduler, SamplingCounterIsThePositionOfTheSampledToken) {
  SchedulerOptions o;
  o.max_batch_tokens = 4;
  Scheduler s(o);
  s.add(request(1, 10, 3));
  std::vector<std::pair<bool, uint64_t>> seen;
  while (s.has_work()) {
    StepPlan plan = s.schedule();
    for (const PlannedSeq& p : plan.seqs) seen.emplace_back(p.sample, p.sampling.counter);
    s.complete(plan, fake_output(plan));
  }
  // Chunks of 4, 4, 2 (the last samples at position 10), then decodes at 11 and 12.
  const std::vector<std::pair<bool, uint64_t>> want = {
      {false, 4}, {false, 8}, {true, 10}, {true, 11}, {true, 12}};
  EXPECT_EQ(seen, want);
}

TEST(Scheduler, FullCachePreemptsTheNewestAndRecomputesIt) {
  SchedulerOptions o;
  o.kv_pages = 5;
  o.page_size = 4;
  o.max_batch_tokens = 64;
  Scheduler s(o);
  // Each needs 2 pages to start (4 prompt tokens + 1) and 3 by the end (4 + 8): two start, and
  // when both need their third page only one is left.
  s.add(request(1, 4, 8));
  s.add(request(2, 4, 8));
  s.add(request(3, 4, 8));
  std::map<int64_t, std::vector<int32_t>> out;
  std::map<int64_t, FinishReason> finished;
  int32_t next = 20;
  int steps = 0;
  while (s.has_work() && steps++ < 200) {
    StepPlan plan = s.schedule();
    EXPECT_LE(s.counts().used_pages, o.kv_pages);
    StepOutput output;
    for (const PlannedSeq& p : plan.seqs) output.ids.push_back(p.sample ? next++ : -1);
    for (const TokenEvent& e : s.complete(plan, output)) {
      if (e.token >= 0) out[e.request].push_back(e.token);
      if (e.finished != FinishReason::None) finished[e.request] = e.finished;
    }
  }
  EXPECT_GT(s.counts().preemptions, 0);
  for (int64_t id : {1, 2, 3}) {
    EXPECT_EQ(out[id].size(), 8u) << "request " << id;
    EXPECT_EQ(finished[id], FinishReason::Length);
  }
  EXPECT_EQ(s.counts().used_pages, 0);
}

TEST(Scheduler, StopIdEndsWithoutEmittingIt) {
  Scheduler s(SchedulerOptions{});
  ScheduledRequest r = request(7, 3, 10);
  r.stop_ids = {2};
  s.add(r);
  StepPlan plan = s.schedule();
  const auto events = s.complete(plan, fake_output(plan, 2));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, -1);
  EXPECT_EQ(events[0].finished, FinishReason::Stop);
  EXPECT_EQ(events[0].completion_tokens, 1);  // generated, though not emitted (as vLLM counts)
  EXPECT_FALSE(s.counts().running);
  // Its sequence is released in the next plan.
  plan = s.schedule();
  EXPECT_EQ(plan.release.size(), 1u);
}

TEST(Scheduler, CancelFreesPagesAndReportsAbort) {
  Scheduler s(SchedulerOptions{});
  s.add(request(1, 40, 10));
  s.add(request(2, 40, 10));
  StepPlan plan = s.schedule();
  s.complete(plan, fake_output(plan));
  const int64_t used = s.counts().used_pages;
  s.cancel(1);
  EXPECT_LT(s.counts().used_pages, used);
  plan = s.schedule();
  EXPECT_EQ(plan.release.size(), 1u);
  const auto events = s.complete(plan, fake_output(plan));
  bool aborted = false;
  for (const TokenEvent& e : events)
    if (e.request == 1) aborted = e.finished == FinishReason::Cancelled;
  EXPECT_TRUE(aborted);
  s.cancel(1);  // twice, or after the end: nothing happens
  s.cancel(42);
}

TEST(Scheduler, RequestsThatCanNeverFitAreRefused) {
  SchedulerOptions o;
  o.kv_pages = 4;
  o.page_size = 16;
  Scheduler s(o);
  EXPECT_EQ(s.admission_problem(0, 5), "the prompt is empty");
  EXPECT_EQ(s.admission_problem(60, 5),
            "the prompt (60 tokens) plus max_tokens (5) needs 65 tokens of KV cache, but the "
            "cache holds 64 (batch.kv_cache_tokens)");
  EXPECT_EQ(s.admission_problem(60, 4), "");
  EXPECT_NE(error_of([&] { s.add(request(1, 100, 1)); }).find("needs 101 tokens"),
            std::string::npos);
}

TEST(StepPlan, BytesRoundTripAndMalformedBytesAreErrors) {
  StepPlan plan;
  plan.step = 77;
  plan.release = {3, 4};
  plan.start = {9};
  PlannedSeq p;
  p.seq = 9;
  p.tokens = {1, 2, 3};
  p.sample = true;
  p.sampling.temperature = 0.5f;
  p.sampling.top_k = 40;
  p.sampling.top_p = 0.9f;
  p.sampling.seed = 1234567890123ull;
  p.sampling.counter = 3;
  p.top_logprobs = 5;
  plan.seqs.push_back(p);
  const std::vector<uint8_t> bytes = encode_step_plan(plan);
  const StepPlan back = decode_step_plan(bytes);
  EXPECT_EQ(back.step, 77u);
  EXPECT_EQ(back.release, plan.release);
  EXPECT_EQ(back.start, plan.start);
  ASSERT_EQ(back.seqs.size(), 1u);
  EXPECT_EQ(back.seqs[0].tokens, p.tokens);
  EXPECT_EQ(back.seqs[0].sampling.seed, p.sampling.seed);
  EXPECT_EQ(back.seqs[0].sampling.top_p, p.sampling.top_p);
  EXPECT_EQ(back.seqs[0].top_logprobs, 5);

  std::vector<uint8_t> truncated(bytes.begin(), bytes.end() - 1);
  EXPECT_EQ(error_of([&] { decode_step_plan(truncated); }).rfind("step plan: ", 0), 0u);
  std::vector<uint8_t> huge_count = bytes;
  huge_count[13] = 0xff;  // the release count
  EXPECT_NE(error_of([&] { decode_step_plan(huge_count); }).find("runs past the end"),
            std::string::npos);
  EXPECT_NE(error_of([&] { decode_step_plan({1, 2, 3}); }).find("truncated"), std::string::npos);
}

// The scheduler's plans run on a real engine give each request the greedy ids it gets alone.
TEST(StepPlan, ContinuousBatchEqualsEachRequestAlone) {
  ModelFiles m = open_model("synthetic:" + kTinyLlama + "@5");
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 512;
  eo.page_size = 8;
  eo.max_batch_tokens = 24;
  Engine engine(m.config, *m.weights, *backend, eo);
  std::vector<ScheduledRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(request(i, 5 + 9 * i, 12));
  std::map<int64_t, std::vector<int32_t>> alone;
  for (const ScheduledRequest& r : requests) {
    GenerateOptions go;
    go.max_tokens = r.max_tokens;
    alone[r.id] = generate(engine, r.prompt, go).ids;
  }
  SchedulerOptions so;
  so.kv_pages = engine.kv_cache().pages();
  so.page_size = eo.page_size;
  so.max_batch_tokens = eo.max_batch_tokens;
  Scheduler s(so);
  std::map<int64_t, std::vector<int32_t>> batched;
  int steps = 0;
  for (size_t next = 0; (s.has_work() || next < requests.size()) && steps < 500; ++steps) {
    if (next < requests.size() && steps % 2 == 0) s.add(requests[next++]);  // staggered arrivals
    StepPlan plan = s.schedule();
    for (const TokenEvent& e : s.complete(plan, run_step(engine, plan)))
      if (e.token >= 0) batched[e.request].push_back(e.token);
  }
  EXPECT_EQ(batched, alone);
  EXPECT_EQ(engine.kv_cache().used_pages(), 0);
}

}  // namespace
}  // namespace parafuse

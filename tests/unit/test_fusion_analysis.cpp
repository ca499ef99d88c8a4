// FFN Fusion analysis, quality and planner on small synthetic Nemotron-NAS models: the
// statistics are in range and do not depend on how the tokens are chunked, the dependency
// matrix covers the candidates, quality is zero-cost for the unmodified model, and the planner
// respects its budget and leaves the last FFN of each run alone unless told otherwise.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model_files.h"
#include "runtime/fusion/analysis.h"
#include "runtime/fusion/planner.h"
#include "runtime/fusion/quality.h"

using namespace parafuse;

namespace {

// 8 blocks: 0 attention + FFN, 1-5 attention-free FFNs, 6 attention + FFN, 7 attention-free.
const std::string kRuns =
    "synthetic:" + std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-ffn-runs.json@5";
const std::string kTinyNas = std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-nas.json";

std::vector<int32_t> test_tokens(int n, int vocab, int salt) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t((i * 37 + salt * 11 + 5) % vocab));
  return t;
}

struct TestModel {
  explicit TestModel(int64_t max_batch_tokens = 32) : files(open_model(kRuns)) {
    backend = make_cpu_backend(1);
    EngineOptions eo;
    eo.kv_cache_tokens = 256;
    eo.page_size = 8;
    eo.max_batch_tokens = max_batch_tokens;
    engine = std::make_unique<Engine>(files.config, *files.weights, *backend, eo);
  }
  ModelFiles files;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Engine> engine;
};

}  // namespace

TEST(FusionAnalysis, CandidatesAndRuns) {
  const ModelConfig nas = load_hf_config(kTinyNas);
  // Run heads 0 and 7 keep their attention; 4 has a linear FFN, 6 none.
  EXPECT_EQ(fusion_candidates(nas), (std::vector<int>{0, 1, 2, 3, 7, 8}));
  EXPECT_EQ(ffn_runs(nas), (std::vector<std::vector<int>>{{0, 1, 2, 3}, {7, 8}}));
  FusionPlan remove9;
  remove9.model_blocks = 10;
  remove9.remove_attention = {9};
  EXPECT_EQ(ffn_runs(remove9.without_removed_attention(nas)),
            (std::vector<std::vector<int>>{{0, 1, 2, 3}, {7, 8, 9}}));
}

TEST(FusionAnalysis, StatisticsAreSaneAndIndependentOfChunking) {
  TestModel chunked(24), whole(128);
  const auto tokens = test_tokens(70, 256, 1);
  const FusionAnalysis a = analyze_fusion(*chunked.engine, tokens, {nullptr, "tiny", {}});
  const FusionAnalysis b = analyze_fusion(*whole.engine, tokens, {nullptr, "tiny", {}});

  EXPECT_EQ(a.tokens, 70);
  EXPECT_EQ(a.model_blocks, 8);
  // attention of blocks 0 and 6, FFN of all 8, in forward order
  ASSERT_EQ(a.sublayers.size(), 10u);
  EXPECT_FALSE(a.sublayers[0].is_ffn);
  EXPECT_EQ(a.sublayers[0].block, 0);
  EXPECT_TRUE(a.sublayers[1].is_ffn);
  for (size_t i = 0; i < a.sublayers.size(); ++i) {
    const SublayerStats& s = a.sublayers[i];
    EXPECT_GT(s.cosine_distance, 0.0) << s.block;
    EXPECT_LE(s.cosine_distance, 2.0) << s.block;
    EXPECT_GT(s.norm_ratio, 0.0) << s.block;
    EXPECT_TRUE(std::isfinite(s.norm_ratio)) << s.block;
    EXPECT_EQ(s.block, b.sublayers[i].block);
    EXPECT_NEAR(s.cosine_distance, b.sublayers[i].cosine_distance, 1e-4 * s.cosine_distance);
    EXPECT_NEAR(s.norm_ratio, b.sublayers[i].norm_ratio, 1e-4 * s.norm_ratio);
  }
  EXPECT_EQ(a.candidates, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(a.candidate_has_attention, (std::vector<char>{1, 0, 0, 0, 0, 0, 1, 0}));
  ASSERT_EQ(a.dependency.size(), a.candidates.size());
  for (size_t i = 0; i < a.candidates.size(); ++i) {
    ASSERT_EQ(a.dependency[i].size(), a.candidates.size());
    for (size_t j = 0; j < a.candidates.size(); ++j) {
      if (j <= i) {
        EXPECT_EQ(a.dependency[i][j], 0.0);
        continue;
      }
      EXPECT_GT(a.dependency[i][j], 0.0) << i << "," << j;
      EXPECT_LE(a.dependency[i][j], 2.0) << i << "," << j;
      EXPECT_NEAR(a.dependency[i][j], b.dependency[i][j], 1e-3 * a.dependency[i][j] + 1e-7);
    }
  }
  EXPECT_EQ(a.dependency_between(2, 3), a.dependency[2][3]);
  EXPECT_LT(a.dependency_between(3, 2), 0.0);
  const std::vector<int> ranking = a.attention_ranking();
  ASSERT_EQ(ranking.size(), 2u);
  EXPECT_LE(a.find(ranking[0], false)->cosine_distance, a.find(ranking[1], false)->cosine_distance);

  // JSON round trip.
  const FusionAnalysis c = analysis_from_json(to_json(a), "test");
  EXPECT_EQ(c.candidates, a.candidates);
  EXPECT_EQ(c.dependency, a.dependency);
  EXPECT_EQ(c.candidate_has_attention, a.candidate_has_attention);
  ASSERT_EQ(c.sublayers.size(), a.sublayers.size());
  EXPECT_EQ(c.sublayers[3].cosine_distance, a.sublayers[3].cosine_distance);
  nlohmann::json broken = to_json(a);
  broken["dependency"].erase(0);
  EXPECT_THROW(analysis_from_json(broken, "broken.json"), Error);
}

TEST(FusionAnalysis, PlanRemovalsMakeCandidatesAndAreRestored) {
  TestModel m;
  FusionPlan plan;
  plan.model_blocks = 8;
  plan.remove_attention = {6};
  const FusionAnalysis a = analyze_fusion(*m.engine, test_tokens(40, 256, 2), {&plan, "tiny", {}});
  EXPECT_EQ(a.removed_attention, (std::vector<int>{6}));
  EXPECT_EQ(a.find(6, false), nullptr);  // removed attention is not observed
  ASSERT_NE(a.find(0, false), nullptr);
  EXPECT_EQ(a.candidate_has_attention, (std::vector<char>{1, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_TRUE(m.engine->stage().overrides().skip_attention.empty());  // restored
}

TEST(FusionQuality, UnmodifiedIsFreeAndSkippingCosts) {
  TestModel m;
  const auto tokens = test_tokens(50, 256, 3);
  const QualityBaseline base = quality_baseline(*m.engine, tokens);
  EXPECT_EQ(base.predictions(), 49);
  EXPECT_GT(base.perplexity, 1.0);
  const QualityResult same = evaluate(*m.engine, base, {});
  EXPECT_NEAR(same.ppl_increase_pct, 0.0, 1e-3);
  EXPECT_LT(same.mean_kl, 1e-6);
  ForwardOverrides skip;
  skip.skip_ffn.assign(8, 0);
  skip.skip_ffn[2] = 1;
  const QualityResult worse = evaluate(*m.engine, base, skip);
  EXPECT_GT(worse.mean_kl, 1e-4);
  EXPECT_NE(worse.perplexity, base.perplexity);
}

TEST(FusionPlanner, TightBudgetFusesNothing) {
  TestModel m;
  const auto calib = test_tokens(48, 256, 4), heldout = test_tokens(40, 256, 5);
  const FusionAnalysis a = analyze_fusion(*m.engine, calib, {nullptr, "tiny", {}});
  PlannerOptions o;
  o.max_kl = 0.0;
  int seen = 0;
  const PlanResult r = plan_fusion(*m.engine, a, heldout, o, [&](const PlanStep&) { ++seen; });
  // Runs [0..5] and [6, 7]; without their last FFN: [0..4] (4 pairs) and [6] (nothing).
  EXPECT_EQ(r.runs, (std::vector<std::vector<int>>{{0, 1, 2, 3, 4}}));
  EXPECT_EQ(r.steps.size(), 4u);
  EXPECT_EQ(seen, 4);
  for (const auto& s : r.steps) {
    EXPECT_FALSE(s.accepted);
    EXPECT_GT(s.quality.mean_kl, 0.0);
    EXPECT_EQ(s.group, (std::vector<int>{s.left, s.left + 1}));
  }
  // Least dependent neighbours first.
  for (size_t k = 1; k < r.steps.size(); ++k)
    EXPECT_LE(r.steps[k - 1].dependency, r.steps[k].dependency);
  EXPECT_TRUE(r.plan.fuse.empty());
  EXPECT_EQ(r.final_quality.mean_kl, 0.0);
}

TEST(FusionPlanner, LooseBudgetFusesAndLeavesTheLastFfnOut) {
  TestModel m;
  const auto calib = test_tokens(48, 256, 6), heldout = test_tokens(40, 256, 7);
  const FusionAnalysis a = analyze_fusion(*m.engine, calib, {nullptr, "tiny", {}});
  PlannerOptions o;
  o.max_ppl_increase_pct = 1e6;
  const PlanResult r = plan_fusion(*m.engine, a, heldout, o);
  EXPECT_EQ(r.plan.fuse, (std::vector<std::vector<int>>{{0, 1, 2, 3, 4}}));
  for (const auto& s : r.steps) EXPECT_TRUE(s.accepted);
  EXPECT_NO_THROW(r.plan.validate(m.files.config));
  // The reported quality is the plan's.
  const QualityBaseline base = quality_baseline(*m.engine, heldout);
  EXPECT_NEAR(evaluate(*m.engine, base, r.plan.overrides(m.files.config)).mean_kl,
              r.final_quality.mean_kl, 1e-6);
  EXPECT_GT(r.final_quality.mean_kl, 0.0);

  o.fuse_last = true;
  o.max_steps = 3;
  const PlanResult last = plan_fusion(*m.engine, a, heldout, o);
  EXPECT_EQ(last.runs, (std::vector<std::vector<int>>{{0, 1, 2, 3, 4, 5}, {6, 7}}));
  EXPECT_EQ(last.steps.size(), 3u);  // bounded by max_steps

  o.max_steps = 64;
  const PlanResult all = plan_fusion(*m.engine, a, heldout, o);
  EXPECT_EQ(all.plan.fuse, (std::vector<std::vector<int>>{{0, 1, 2, 3, 4, 5}, {6, 7}}));
}

TEST(FusionPlanner, RemovesTheLeastImportantAttentionFirst) {
  TestModel m;
  const auto calib = test_tokens(48, 256, 8), heldout = test_tokens(40, 256, 9);
  const FusionAnalysis a = analyze_fusion(*m.engine, calib, {nullptr, "tiny", {}});
  PlannerOptions o;
  o.remove_attention = 1;
  o.fuse_last = true;
  o.max_ppl_increase_pct = 1e6;
  const PlanResult r = plan_fusion(*m.engine, a, heldout, o);
  EXPECT_EQ(r.newly_removed, (std::vector<int>{a.attention_ranking()[0]}));
  EXPECT_EQ(r.plan.remove_attention, r.newly_removed);
  ASSERT_TRUE(r.removal.has_value());
  EXPECT_GT(r.removal->mean_kl, 0.0);
  if (r.newly_removed[0] == 6) {  // one run of all 8 blocks
    EXPECT_EQ(r.plan.fuse, (std::vector<std::vector<int>>{{0, 1, 2, 3, 4, 5, 6, 7}}));
  }
  EXPECT_NO_THROW(r.plan.validate(m.files.config));
  o.remove_attention = 3;
  EXPECT_THROW(plan_fusion(*m.engine, a, heldout, o), Error);
}

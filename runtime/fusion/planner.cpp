// The greedy fusion planner (see planner.h). The state is one flag per neighbouring pair of
// run members, "joined"; the groups of a plan are the maximal chains of joined pairs. A merge
// sets one flag, evaluates the resulting plan, and clears the flag again if it breaks the
// budget, so every accepted plan is a superset of the previous one.
#include "runtime/fusion/planner.h"

#include <algorithm>
#include <tuple>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

constexpr double kDefaultMaxPplIncreasePct = 1.0;

// The groups made by the joined pairs: joined[b] joins block b with block b + 1.
std::vector<std::vector<int>> groups_of(const std::vector<char>& joined) {
  std::vector<std::vector<int>> groups;
  for (size_t b = 0; b < joined.size(); ++b) {
    if (!joined[b]) continue;
    if (groups.empty() || groups.back().back() != int(b)) groups.push_back({int(b)});
    groups.back().push_back(int(b) + 1);
  }
  return groups;
}

}  // namespace

bool within_budget(const QualityResult& q, const PlannerOptions& options) {
  if (!options.max_ppl_increase_pct && !options.max_kl)
    return q.ppl_increase_pct <= kDefaultMaxPplIncreasePct;
  if (options.max_ppl_increase_pct && q.ppl_increase_pct > *options.max_ppl_increase_pct)
    return false;
  if (options.max_kl && q.mean_kl > *options.max_kl) return false;
  return true;
}

std::vector<std::vector<int>> ffn_runs(const ModelConfig& config) {
  const int n = config.n_blocks();
  const auto swiglu = [&](int i) { return config.blocks[size_t(i)].ffn == FfnKind::SwiGlu; };
  std::vector<std::vector<int>> runs;
  for (int i = 0; i < n; ++i) {
    if (!swiglu(i)) continue;
    int end = i + 1;
    while (end < n && swiglu(end) && config.blocks[size_t(end)].attention == AttentionKind::None)
      ++end;
    if (end - i >= 2) {
      runs.emplace_back();
      for (int b = i; b < end; ++b) runs.back().push_back(b);
    }
    i = end - 1;  // block `end` (with attention) may open the next run
  }
  return runs;
}

PlanResult plan_fusion(Engine& engine, const FusionAnalysis& analysis,
                       std::span<const int32_t> tokens, const PlannerOptions& options,
                       const std::function<void(const PlanStep&)>& on_step) {
  const ModelConfig& config = engine.config();
  const int n = config.n_blocks();
  PF_CHECK(analysis.model_blocks == n,
           "the analysis was made for a model with {} blocks, this model has {}",
           analysis.model_blocks, n);
  PF_CHECK(options.remove_attention >= 0, "remove_attention must be >= 0, got {}",
           options.remove_attention);
  PF_CHECK(options.max_steps >= 0, "max_steps must be >= 0, got {}", options.max_steps);

  PlanResult r;
  r.plan.model_blocks = n;
  r.plan.remove_attention = analysis.removed_attention;
  if (options.remove_attention > 0) {
    const std::vector<int> ranking = analysis.attention_ranking();
    PF_CHECK(size_t(options.remove_attention) <= ranking.size(),
             "cannot remove {} attention sublayers: the analysis measured only {}",
             options.remove_attention, ranking.size());
    r.newly_removed.assign(ranking.begin(), ranking.begin() + options.remove_attention);
    r.plan.remove_attention.insert(r.plan.remove_attention.end(), r.newly_removed.begin(),
                                   r.newly_removed.end());
  }
  std::sort(r.plan.remove_attention.begin(), r.plan.remove_attention.end());
  r.plan.validate(config);

  // Step 1: the original model's baseline, and the cost of the removals.
  const QualityBaseline original = quality_baseline(engine, tokens);
  r.baseline_perplexity = original.perplexity;
  QualityBaseline after_removal;
  const QualityBaseline* fusion_base = &original;
  if (!r.plan.remove_attention.empty()) {
    const ForwardOverrides removal = r.plan.overrides(config);
    r.removal = evaluate(engine, original, removal);
    after_removal = quality_baseline(engine, tokens, removal);
    fusion_base = &after_removal;
  }
  r.fusion_baseline_perplexity = fusion_base->perplexity;

  // Step 2: the runs, without their last FFN unless asked.
  for (std::vector<int> run : ffn_runs(r.plan.without_removed_attention(config))) {
    if (!options.fuse_last) run.pop_back();
    if (run.size() >= 2) r.runs.push_back(std::move(run));
  }

  // Step 3: neighbouring pairs, least dependent first; unmeasured pairs last, by block id.
  struct Pair {
    int left;
    double dependency;
  };
  std::vector<Pair> pairs;
  for (const auto& run : r.runs)
    for (size_t k = 0; k + 1 < run.size(); ++k)
      pairs.push_back({run[k], analysis.dependency_between(run[k], run[k + 1])});
  std::stable_sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    return std::make_tuple(a.dependency < 0, a.dependency, a.left) <
           std::make_tuple(b.dependency < 0, b.dependency, b.left);
  });

  std::vector<char> joined(size_t(n), 0);
  FusionPlan trial = r.plan;
  r.final_quality = QualityResult{fusion_base->perplexity, 0.0, 0.0};
  for (const Pair& pair : pairs) {
    if (int(r.steps.size()) >= options.max_steps) break;
    joined[size_t(pair.left)] = 1;
    trial.fuse = groups_of(joined);
    PlanStep step;
    step.step = int(r.steps.size()) + 1;
    step.left = pair.left;
    step.right = pair.left + 1;
    step.dependency = pair.dependency;
    for (const auto& g : trial.fuse)
      if (g.front() <= pair.left && pair.left < g.back()) step.group = g;
    step.quality = evaluate(engine, *fusion_base, trial.overrides(config));
    step.accepted = within_budget(step.quality, options);
    if (step.accepted) {
      r.final_quality = step.quality;
    } else {
      joined[size_t(pair.left)] = 0;
    }
    if (on_step) on_step(step);
    r.steps.push_back(std::move(step));
  }
  r.plan.fuse = groups_of(joined);
  r.plan.validate(config);

  if (r.plan.remove_attention.empty()) {
    r.final_vs_original = r.final_quality;
  } else if (r.plan.fuse.empty()) {
    r.final_vs_original = *r.removal;
  } else {
    r.final_vs_original = evaluate(engine, original, r.plan.overrides(config));
  }
  return r;
}

}  // namespace parafuse

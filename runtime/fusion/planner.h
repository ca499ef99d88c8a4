// The fusion planner behind `parafuse plan`: from an analysis and held-out text to a FusionPlan
// that stays within a quality budget.
//
//  1. Optionally remove the k least important attention sublayers (lowest attention cosine
//     distance in the analysis), as Puzzle did, on top of any the analysis already ran
//     without; the cost of that removal against the original model is reported.
//  2. Find the maximal runs of consecutive blocks with a SwiGLU FFN whose attention is absent
//     (after removals). A run may start at a block that still has attention: that attention
//     runs before the block's FFN, so the FFN reads the same input as the attention-free FFNs
//     after it and can lead their group. Unless `fuse_last` is set, the last FFN of each run
//     stays unfused (the paper: fusing it costs the most accuracy).
//  3. Greedily merge neighbouring members into groups, lowest dependency(i, i+1) from the
//     analysis first (pairs the analysis did not measure come last, by block id). Each merge is
//     evaluated in parallel-FFN mode (plan.overrides(), quality.h) and kept only if the budget
//     still holds, measured against the model after step 1: the budget is what fusion may cost.
//     At most `max_steps` merges are evaluated, so a CPU run ends in bounded time.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/fusion/analysis.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/fusion/quality.h"

namespace parafuse {

struct PlannerOptions {
  int remove_attention = 0;                    // k more attention sublayers to remove
  std::optional<double> max_ppl_increase_pct;  // budget; when neither is set: 1% perplexity
  std::optional<double> max_kl;                // mean KL in nats
  bool fuse_last = false;
  int max_steps = 64;  // merges evaluated at most
};

// One evaluated merge.
struct PlanStep {
  int step = 0;              // 1-based
  int left = 0, right = 0;   // the neighbouring blocks whose groups were joined
  double dependency = -1.0;  // dependency(left, right) from the analysis; < 0: not measured
  std::vector<int> group;    // the group the merge would make
  QualityResult quality;     // of all accepted groups plus this one
  bool accepted = false;
};

struct PlanResult {
  FusionPlan plan;
  double baseline_perplexity = 0.0;         // the original model on the held-out tokens
  std::vector<int> newly_removed;           // attention removed in step 1 (beyond the analysis')
  std::optional<QualityResult> removal;     // cost of all removals vs the original model
  double fusion_baseline_perplexity = 0.0;  // the model after removals
  std::vector<std::vector<int>> runs;       // eligible run members (last dropped unless fuse_last)
  std::vector<PlanStep> steps;
  QualityResult final_quality;  // the final plan vs the model after removals
  QualityResult final_vs_original;
};

// The maximal runs of step 2 for `config` (attention already removed in it), whole (the last
// member included); only runs of at least 2 blocks.
std::vector<std::vector<int>> ffn_runs(const ModelConfig& config);

// `tokens`: held-out ids. Single-rank engine. `on_step` sees each step as it is decided.
PlanResult plan_fusion(Engine& engine, const FusionAnalysis& analysis,
                       std::span<const int32_t> tokens, const PlannerOptions& options,
                       const std::function<void(const PlanStep&)>& on_step = {});

// True when `q` is within the budget of `options`.
bool within_budget(const QualityResult& q, const PlannerOptions& options);

}  // namespace parafuse

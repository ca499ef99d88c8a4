// What `parafuse analyze` measures on calibration text, to decide which FFNs to fuse (the FFN
// Fusion paper, arXiv 2503.18908, section 3) and which attention sublayers matter least (Puzzle).
//
// Everything is observed inside one unmodified forward pass per measurement (a
// SublayerObserver on the Engine's Stage, tp = 1, pp = 1), over the calibration tokens fed
// through one sequence in chunks of max_batch_tokens, as perplexity() does:
//   - per sublayer s with input x and update f(x) (its output is x + f(x)), per token:
//       cosine distance 1 - cos(x, x + f(x))   how much the sublayer turns the residual stream
//       norm ratio ||f(x)|| / ||x||            how much it adds,
//     each averaged over the tokens. Low distance = the sublayer barely changes its input: a
//     candidate for removal (attention) or for fusion (FFN).
//   - the block-wise dependency matrix over the FFN candidates: entry (i, j), i < j, is the mean
//     over tokens of the cosine distance between f_j (block j's FFN update) computed normally
//     and computed with block i's FFN skipped. One extra forward per candidate i observes every
//     j > i. Low dependency = j barely reads what i wrote, so running them in parallel (fusing)
//     changes little.
// The candidates are the blocks whose FFN is SwiGLU and whose attention is absent (after the
// plan's removals when a plan is given), plus the block that opens each run of them: its own
// attention runs before its FFN, so that FFN can lead a fused group, and the planner needs its
// dependency with the next block. `candidate_has_attention` marks those run heads.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine/engine.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {

struct SublayerStats {
  int block = 0;
  bool is_ffn = false;           // else attention
  double cosine_distance = 0.0;  // mean over tokens of 1 - cos(x, x + f(x)), in [0, 2]
  double norm_ratio = 0.0;       // mean over tokens of ||f(x)|| / ||x||
};

struct FusionAnalysis {
  std::string model;
  int model_blocks = 0;
  int64_t tokens = 0;
  std::vector<int> removed_attention;    // the plan's removals the analysis ran with
  std::vector<SublayerStats> sublayers;  // in forward order (attention before FFN per block)
  std::vector<int> candidates;           // ascending block ids
  std::vector<char> candidate_has_attention;
  // (candidates, candidates); entry [a][b] for candidates[a] < candidates[b], 0 elsewhere.
  std::vector<std::vector<double>> dependency;
  double seconds = 0.0;

  // Attention blocks, least important (lowest cosine distance) first.
  std::vector<int> attention_ranking() const;
  // The dependency of block j on block i (i < j), or a negative value when either is no
  // candidate.
  double dependency_between(int block_i, int block_j) const;
  const SublayerStats* find(int block, bool is_ffn) const;
};

struct AnalysisProgress {
  int forward = 0;  // 1-based
  int forwards = 0;
  std::string what;  // "baseline", "without FFN 13"
};

struct AnalysisOptions {
  const FusionPlan* plan = nullptr;  // its attention removals apply (its groups do not)
  std::string model_name;
  std::function<void(const AnalysisProgress&)> on_forward;  // before each forward pass
};

// Runs the measurements on `tokens` (at least 2; they must fit the KV cache). Needs a
// single-rank engine (tp = 1, pp = 1); the engine's overrides are restored afterwards.
FusionAnalysis analyze_fusion(Engine& engine, std::span<const int32_t> tokens,
                              const AnalysisOptions& options);

// The candidate blocks of `config` (see the header comment): attention-free SwiGLU blocks
// and the SwiGLU block right before each run of them.
std::vector<int> fusion_candidates(const ModelConfig& config);

nlohmann::json to_json(const FusionAnalysis& analysis);
// Throws naming `origin` and the missing or malformed field.
FusionAnalysis analysis_from_json(const nlohmann::json& json, const std::string& origin);
void save_analysis(const FusionAnalysis& analysis, const std::string& path);
FusionAnalysis load_analysis(const std::string& path);

}  // namespace parafuse

// Splitting a model's blocks into pipeline stages by cost, not by count: a Nemotron-NAS
// attention block costs 10x or more than an attention-free block with a narrow FFN, so equal
// block counts would leave most stages idle. A block's cost is its per-token FLOPs (2 per
// weight, plus attention over an assumed context); the embedding lookup is free, the LM head
// counts toward the last stage. The split minimises the most expensive stage (exact DP over
// contiguous splits), or is pinned by the user.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/model_config.h"

namespace parafuse {

struct StagePlan {
  int first = 0, last = 0;  // blocks [first, last)
  double flops_per_token = 0;
  int64_t parameters = 0;
};

struct BlockCost {
  double flops_per_token = 0;
  int64_t parameters = 0;
};

// Context length assumed for the attention term of the cost.
inline constexpr int64_t kCostContext = 2048;

BlockCost block_cost(const ModelConfig& config, int block);

// `pinned` (may be empty): the first block of each stage, starting at 0, strictly increasing.
// Throws naming the problem when pp exceeds the block count or a pinned split is invalid.
std::vector<StagePlan> plan_pipeline(const ModelConfig& config, int pp,
                                     const std::vector<int>& pinned = {});

// "stage 0: blocks [0, 12) 1.23 GFLOP/token 0.61 B params (34%)" per line.
std::string describe_plan(const std::vector<StagePlan>& plan);

}  // namespace parafuse

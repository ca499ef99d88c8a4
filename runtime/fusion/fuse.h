// Rewriting a checkpoint by a FusionPlan: the FFN Fusion transform itself.
//
// For a group of consecutive FFNs k = a..b with no attention between them, the chain
// x_{k+1} = x_k + FFN_k(RMSNorm_k(x_k)) becomes y = x + sum_k FFN_k(RMSNorm_k(x)). Because
// RMSNorm_k(x) = g_k * x / rms(x) and rms(x) is shared, each g_k folds into the columns of that
// FFN's gate and up weights; stacking gate/up rows and down columns gives one SwiGLU FFN of
// width sum I_k that computes the sum exactly, behind a weightless RMSNorm. The output is an HF
// `nemotron-nas` checkpoint (config.json with block_configs, one model.safetensors) that
// parafuse loads like any model, at any TP x PP split; TP shards the fused width, so the whole
// group costs one all-reduce.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "kernels/core/dtype.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {

// The config of the fused model: removed attention gone, each group one wide block placed at
// its first member's position (keeping that block's attention), the other members dropped.
ModelConfig fused_config(const ModelConfig& config, const FusionPlan& plan);

struct FuseStats {
  int blocks_before = 0, blocks_after = 0;
  int64_t parameters_before = 0, parameters_after = 0;
  // Row-parallel GEMMs per token, i.e. TP all-reduces per token per stage chain (plus the
  // embedding's), before and after.
  int all_reduces_before = 0, all_reduces_after = 0;
};

// Writes out_dir/config.json, out_dir/model.safetensors (F32 or BF16 storage) and, when a
// tokenizer is given, out_dir/tokenizer.json + tokenizer_config.json.
FuseStats write_fused_checkpoint(const ModelConfig& config, const WeightSource& weights,
                                 const FusionPlan& plan, const std::string& out_dir,
                                 const Tokenizer* tokenizer, DType storage = DType::F32,
                                 const std::function<void(size_t, size_t)>& progress = {});

int64_t count_parameters(const ModelConfig& config);
// Sublayers that end in a row-parallel GEMM (one TP all-reduce each), plus the embedding's.
int count_all_reduces_per_token(const ModelConfig& config);

}  // namespace parafuse

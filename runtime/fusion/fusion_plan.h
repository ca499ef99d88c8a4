// A fusion plan: which attention sublayers to remove first (Puzzle-style, for models with no
// attention-free runs), and which runs of consecutive FFNs to fuse into one wide FFN.
//
// It is a small YAML file a person can read and edit:
//
//   # parafuse fusion plan for .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
//   model_blocks: 30              # block count of the model it was made for (checked)
//   remove_attention: [12, 17]    # block ids whose attention sublayer is dropped
//   fuse:                         # each group: consecutive block ids, attention-free after
//     - [13, 14, 15]              #   the first (its own attention, if any, runs first)
//     - [18, 19]
//
// Block ids are those of the input model. validate() rejects a group that crosses an
// attention sublayer that still runs, names a block the model does not have, overlaps another
// group, is not consecutive, or holds a block without a SwiGLU FFN, each with a message naming
// the group and the block.
#pragma once

#include <string>
#include <vector>

#include "runtime/engine/stage.h"
#include "runtime/model/model_config.h"

namespace parafuse {

struct FusionPlan {
  int model_blocks = 0;
  std::vector<int> remove_attention;
  std::vector<std::vector<int>> fuse;  // groups of >= 2 consecutive block ids

  void validate(const ModelConfig& config) const;
  // The config with the removed attention sublayers gone (blocks keep their ids).
  ModelConfig without_removed_attention(const ModelConfig& config) const;
  // The unfused model run as the plan says (removed attention skipped, each group in
  // parallel-FFN mode): what the fused checkpoint must reproduce.
  ForwardOverrides overrides(const ModelConfig& config) const;
  std::string to_yaml(const std::string& comment = {}) const;
};

FusionPlan parse_fusion_plan(const std::string& yaml_text, const std::string& origin);
FusionPlan load_fusion_plan(const std::string& path);
void save_fusion_plan(const FusionPlan& plan, const std::string& path,
                      const std::string& comment = {});

}  // namespace parafuse

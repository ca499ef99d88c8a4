// Fusion plan tests: the YAML reader (strict: every bad key, type and id is an error naming the
// origin, the line and the key), validate() against a model (each bad plan gives one message
// naming the group and the block), the overrides a plan produces, and the to_yaml round trip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/core/error.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/model/model_config.h"
#include "tests/unit/error_of.h"

using namespace parafuse;
using ::testing::HasSubstr;

namespace {

const std::string kTinyNas = std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-nas.json";
const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";

// Blocks: 0 attn+ffn, 1-3 attention-free ffn, 4 attn + linear ffn, 5 linear attn + ffn,
// 6 no-op, 7 attn+ffn, 8 attention-free ffn, 9 attn+ffn.
ModelConfig tiny_nas() {
  return load_hf_config(kTinyNas);
}

// A plain Llama of 30 blocks, like SmolLM2: every block has attention.
ModelConfig llama30() {
  ModelConfig c = load_hf_config(kTinyLlama);
  c.blocks.resize(30, c.blocks[0]);
  return c;
}

std::string parse_error(const std::string& yaml) {
  return error_of([&] { parse_fusion_plan(yaml, "plan.yaml"); });
}

std::string validate_error(const std::string& yaml, const ModelConfig& config) {
  return error_of([&] { parse_fusion_plan(yaml, "plan.yaml").validate(config); });
}

}  // namespace

TEST(FusionPlan, ParsesTheDocumentedExample) {
  const FusionPlan p = parse_fusion_plan(
      "# parafuse fusion plan\n"
      "model_blocks: 30              # block count\n"
      "remove_attention: [12, 17]\n"
      "fuse:\n"
      "  - [11, 12, 13]\n"
      "  - [16, 17]\n",
      "plan.yaml");
  EXPECT_EQ(p.model_blocks, 30);
  EXPECT_EQ(p.remove_attention, (std::vector<int>{12, 17}));
  EXPECT_EQ(p.fuse, (std::vector<std::vector<int>>{{11, 12, 13}, {16, 17}}));
  EXPECT_THAT(error_of([&] { p.validate(llama30()); }),
              HasSubstr("group [11, 12, 13] fuses across the attention of block 13"));
}

TEST(FusionPlan, EmptyListsAndMissingOptionalKeys) {
  const FusionPlan p = parse_fusion_plan("model_blocks: 10\nremove_attention:\nfuse: []\n", "p");
  EXPECT_TRUE(p.remove_attention.empty());
  EXPECT_TRUE(p.fuse.empty());
  EXPECT_NO_THROW(p.validate(tiny_nas()));
  EXPECT_TRUE(parse_fusion_plan("model_blocks: 10\n", "p").fuse.empty());
}

TEST(FusionPlan, ValidPlanGivesOverridesAndConfig) {
  const ModelConfig c = tiny_nas();
  const FusionPlan p = parse_fusion_plan(
      "model_blocks: 10\nremove_attention: [9]\nfuse: [[0, 1, 2], [8, 9]]\n", "p");
  ASSERT_NO_THROW(p.validate(c));
  const ForwardOverrides o = p.overrides(c);
  for (int b = 0; b < 10; ++b) {
    EXPECT_EQ(o.skips_attention(b), b == 9) << b;
    EXPECT_FALSE(o.skips_ffn(b)) << b;
    EXPECT_EQ(o.group_of(b), b <= 2 ? 0 : b >= 8 ? 1 : -1) << b;
  }
  const ModelConfig removed = p.without_removed_attention(c);
  EXPECT_EQ(removed.blocks[9].attention, AttentionKind::None);
  EXPECT_EQ(removed.blocks[9].n_kv_heads, 0);
  EXPECT_EQ(removed.blocks[7].attention, AttentionKind::Full);
  EXPECT_NO_THROW(removed.validate());
}

TEST(FusionPlan, RoundTripsThroughYamlWithComments) {
  FusionPlan p;
  p.model_blocks = 30;
  p.remove_attention = {12, 17, 18};
  p.fuse = {{11, 12}, {16, 17, 18}};
  const std::string text = p.to_yaml("made for SmolLM2\n\nbudget: 1%");
  EXPECT_EQ(text.rfind("# made for SmolLM2\n#\n# budget: 1%\n", 0), 0u) << text;
  const FusionPlan q = parse_fusion_plan(text, "round-trip");
  EXPECT_EQ(q.model_blocks, p.model_blocks);
  EXPECT_EQ(q.remove_attention, p.remove_attention);
  EXPECT_EQ(q.fuse, p.fuse);
  EXPECT_NO_THROW(q.validate(llama30()));

  FusionPlan empty;
  empty.model_blocks = 3;
  const FusionPlan e = parse_fusion_plan(empty.to_yaml(), "empty");
  EXPECT_EQ(e.model_blocks, 3);
  EXPECT_TRUE(e.fuse.empty() && e.remove_attention.empty());

  const auto path = std::filesystem::temp_directory_path() / "parafuse_test_plan.yaml";
  save_fusion_plan(p, path.string(), "saved");
  EXPECT_EQ(load_fusion_plan(path.string()).fuse, p.fuse);
  std::filesystem::remove(path);
}

TEST(FusionPlanBad, FusesAcrossAnAttentionBlock) {
  EXPECT_THAT(validate_error("model_blocks: 30\nremove_attention: [13, 15]\nfuse: [[13, 14, 15]]",
                             llama30()),
              HasSubstr("group [13, 14, 15] fuses across the attention of block 14"));
  // tiny-nemotron-nas: block 7 has attention; [6, 7] would also cross it, but 6 has no FFN.
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[3, 4]]", tiny_nas()),
              HasSubstr("group [3, 4]: block 4 has no SwiGLU FFN (its FFN is linear)"));
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[7, 8, 9]]", tiny_nas()),
              HasSubstr("group [7, 8, 9] fuses across the attention of block 9"));
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[5, 6]]", tiny_nas()),
              HasSubstr("group [5, 6]: block 6 has no SwiGLU FFN (its FFN is none)"));
}

TEST(FusionPlanBad, NamesBlocksThatDoNotExist) {
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[8, 9, 10]]", tiny_nas()),
              HasSubstr("group [8, 9, 10] names block 10, but the model has blocks 0-9"));
  EXPECT_THAT(validate_error("model_blocks: 10\nremove_attention: [12]", tiny_nas()),
              HasSubstr("remove_attention names block 12, but the model has blocks 0-9"));
  EXPECT_THAT(validate_error("model_blocks: 10\nremove_attention: [2]", tiny_nas()),
              HasSubstr("remove_attention names block 2, which has no attention to remove"));
  EXPECT_THAT(validate_error("model_blocks: 10\nremove_attention: [7, 7]", tiny_nas()),
              HasSubstr("remove_attention names block 7 twice"));
}

TEST(FusionPlanBad, OverlappingNonConsecutiveAndSingleGroups) {
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[1, 2], [2, 3]]", tiny_nas()),
              HasSubstr("group [2, 3] overlaps group [1, 2] at block 2"));
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[1, 3]]", tiny_nas()),
              HasSubstr("group [1, 3] is not consecutive ascending block ids: 3 follows 1"));
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[3, 2]]", tiny_nas()),
              HasSubstr("group [3, 2] is not consecutive ascending block ids: 2 follows 3"));
  EXPECT_THAT(validate_error("model_blocks: 10\nfuse: [[2]]", tiny_nas()),
              HasSubstr("group [2] has 1 block(s): a group fuses at least 2 blocks"));
}

TEST(FusionPlanBad, WrongModelBlocks) {
  EXPECT_THAT(validate_error("model_blocks: 12\nfuse: [[1, 2]]", tiny_nas()),
              HasSubstr("the fusion plan was made for a model with 12 blocks (model_blocks: 12), "
                        "this model has 10"));
}

TEST(FusionPlanBad, MalformedYaml) {
  EXPECT_THAT(parse_error("model_blocks: 10\nfuse: [[1, 2]\n"),
              HasSubstr("plan.yaml:3: invalid YAML (column 1): end of sequence flow not found"));
  EXPECT_THAT(parse_error("model_blocks: 10\n  fuse: - [1]\n"),
              HasSubstr("plan.yaml:2: invalid YAML (column 7): illegal map value"));
  EXPECT_THAT(parse_error("- 1\n- 2\n"),
              HasSubstr("plan.yaml:1: the top level must be a map with keys model_blocks, "
                        "remove_attention and fuse, got a list"));
  EXPECT_THAT(parse_error(""), HasSubstr("plan.yaml: required key 'model_blocks' is missing"));
}

TEST(FusionPlanBad, StrictKeysTypesAndIds) {
  EXPECT_THAT(parse_error("model_blocks: 10\nfuze: [[1, 2]]\n"),
              HasSubstr("plan.yaml:2: unknown key 'fuze' at the top level (did you mean 'fuse'?) "
                        "(known keys: model_blocks, remove_attention, fuse)"));
  EXPECT_THAT(parse_error("model_blocks: 10\nmodel_blocks: 10\n"),
              HasSubstr("plan.yaml:2: key 'model_blocks' at the top level is given twice (first "
                        "on line 1)"));
  EXPECT_THAT(parse_error("model_blocks: ten\n"),
              HasSubstr("plan.yaml:1: 'model_blocks' must be an integer (at least 1), got 'ten'"));
  EXPECT_THAT(parse_error("model_blocks: 10\nremove_attention: [1.5]\n"),
              HasSubstr("plan.yaml:2: 'remove_attention[0]' must be an integer (at least 0), got "
                        "'1.5'"));
  EXPECT_THAT(parse_error("model_blocks: 10\nfuse:\n  - [1, two]\n"),
              HasSubstr("plan.yaml:3: 'fuse[0][1]' must be an integer (at least 0), got 'two'"));
  EXPECT_THAT(parse_error("model_blocks: 10\nfuse:\n  - [1, -2]\n"),
              HasSubstr("plan.yaml:3: 'fuse[0][1]' must be at least 0, got '-2'"));
  EXPECT_THAT(parse_error("model_blocks: 10\nfuse: [1, 2]\n"),
              HasSubstr("plan.yaml:2: 'fuse[0]' must be a list of block ids like [12, 17], got "
                        "'1'"));
  EXPECT_THAT(parse_error("model_blocks: 10\nremove_attention: 3\n"),
              HasSubstr("plan.yaml:2: 'remove_attention' must be a list of block ids like [12, "
                        "17], got '3'"));
  EXPECT_THAT(parse_error("fuse: []\n"), HasSubstr("plan.yaml: required key 'model_blocks' is "
                                                   "missing"));
  // A typo of the one required key is reported as the typo, not as a missing key.
  EXPECT_THAT(parse_error("model_block: 10\n"),
              HasSubstr("plan.yaml:1: unknown key 'model_block' at the top level (did you mean "
                        "'model_blocks'?)"));
  EXPECT_THAT(parse_error("model_blocks: 10\nfuse:\n  - [1, 2]\n  -\n"),
              HasSubstr("plan.yaml: 'fuse[1]' must be a list of block ids like [12, 17], got "
                        "nothing"));
  EXPECT_THAT(error_of([] { load_fusion_plan("/nonexistent/plan.yaml"); }),
              HasSubstr("fusion plan '/nonexistent/plan.yaml' does not exist"));
}

// Reading, checking and writing fusion plans (see fusion_plan.h).
//
// The reader is the strict one every config-like file goes through
// (runtime/config/config_reader.h): an unknown key, a key given twice, a value of the wrong type
// or an id that is not an integer is an error naming the file, the 1-based line and the key. A
// plan decides which weights get rewritten; a silently ignored typo would produce a different
// model. validate() then checks the plan against the model it is applied to.
#include "runtime/fusion/fusion_plan.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/core/error.h"
#include "runtime/config/config_reader.h"
#include "runtime/config/read_file.h"
#include "runtime/config/value_rules.h"

namespace parafuse {
namespace {

const IntRule kBlockId{0, kIntMax};

// A list of block ids: `[3, 4]` (or the block form). An empty value is an empty list.
std::vector<int> read_block_ids(const ConfigValue& value) {
  std::vector<int> ids;
  for (const ConfigValue& id : value.list("a list of block ids like [12, 17]"))
    ids.push_back(int(id.integer(kBlockId)));
  return ids;
}

std::string group_text(const std::vector<int>& group) {
  return fmt::format("[{}]", fmt::join(group, ", "));
}

const char* ffn_kind_name(FfnKind kind) {
  switch (kind) {
    case FfnKind::SwiGlu:
      return "swiglu";
    case FfnKind::None:
      return "none";
    case FfnKind::Linear:
      return "linear";
  }
  return "?";
}

}  // namespace

FusionPlan parse_fusion_plan(const std::string& yaml_text, const std::string& origin) {
  const ConfigDocument document = ConfigDocument::from_yaml(yaml_text, origin, UnknownKeys::Refuse);
  const ConfigMap top =
      document.root().map("a map with keys model_blocks, remove_attention and fuse");
  FusionPlan plan;
  plan.model_blocks = int(top.require("model_blocks").integer(kPositiveInt));
  if (auto v = top.get("remove_attention")) plan.remove_attention = read_block_ids(*v);
  if (auto v = top.get("fuse")) {
    for (const ConfigValue& group : v->list("a list of groups like [[13, 14, 15], [18, 19]]"))
      plan.fuse.push_back(read_block_ids(group));
  }
  document.finish();
  return plan;
}

FusionPlan load_fusion_plan(const std::string& path) {
  return parse_fusion_plan(read_file(path, "fusion plan"), path);
}

void save_fusion_plan(const FusionPlan& plan, const std::string& path, const std::string& comment) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PF_CHECK(out.good(), "cannot write fusion plan '{}'", path);
  out << plan.to_yaml(comment);
  out.flush();
  PF_CHECK(out.good(), "writing fusion plan '{}' failed", path);
}

void FusionPlan::validate(const ModelConfig& config) const {
  const int n = config.n_blocks();
  PF_CHECK(model_blocks == n,
           "the fusion plan was made for a model with {} blocks (model_blocks: {}), this model has "
           "{}",
           model_blocks, model_blocks, n);
  const auto in_range = [n](int id) { return id >= 0 && id < n; };

  std::vector<char> removed(size_t(n), 0);
  for (int id : remove_attention) {
    PF_CHECK(in_range(id), "remove_attention names block {}, but the model has blocks 0-{}", id,
             n - 1);
    PF_CHECK(!removed[size_t(id)], "remove_attention names block {} twice", id);
    PF_CHECK(config.blocks[size_t(id)].attention != AttentionKind::None,
             "remove_attention names block {}, which has no attention to remove", id);
    removed[size_t(id)] = 1;
  }

  std::vector<int> owner(size_t(n), -1);  // index of the group holding each block
  for (size_t g = 0; g < fuse.size(); ++g) {
    const std::vector<int>& group = fuse[g];
    const std::string name = group_text(group);
    PF_CHECK(group.size() >= 2, "group {} has {} block(s): a group fuses at least 2 blocks", name,
             group.size());
    for (int id : group)
      PF_CHECK(in_range(id), "group {} names block {}, but the model has blocks 0-{}", name, id,
               n - 1);
    for (size_t k = 1; k < group.size(); ++k)
      PF_CHECK(group[k] == group[k - 1] + 1,
               "group {} is not consecutive ascending block ids: {} follows {}", name, group[k],
               group[k - 1]);
    for (size_t k = 0; k < group.size(); ++k) {
      const int id = group[k];
      const BlockConfig& b = config.blocks[size_t(id)];
      PF_CHECK(owner[size_t(id)] < 0, "group {} overlaps group {} at block {}", name,
               group_text(fuse[size_t(owner[size_t(id)])]), id);
      owner[size_t(id)] = int(g);
      PF_CHECK(b.ffn == FfnKind::SwiGlu, "group {}: block {} has no SwiGLU FFN (its FFN is {})",
               name, id, ffn_kind_name(b.ffn));
      PF_CHECK(k == 0 || b.attention == AttentionKind::None || removed[size_t(id)],
               "group {} fuses across the attention of block {}: blocks after a group's first "
               "must be attention-free (or listed in remove_attention)",
               name, id);
    }
  }
}

ModelConfig FusionPlan::without_removed_attention(const ModelConfig& config) const {
  ModelConfig out = config;
  for (int id : remove_attention) {
    PF_CHECK(id >= 0 && id < config.n_blocks(),
             "remove_attention names block {}, but the model has blocks 0-{}", id,
             config.n_blocks() - 1);
    out.blocks[size_t(id)].attention = AttentionKind::None;
    out.blocks[size_t(id)].n_kv_heads = 0;
  }
  return out;
}

ForwardOverrides FusionPlan::overrides(const ModelConfig& config) const {
  validate(config);
  ForwardOverrides o;
  o.skip_attention.assign(size_t(config.n_blocks()), 0);
  o.ffn_group.assign(size_t(config.n_blocks()), -1);
  for (int id : remove_attention) o.skip_attention[size_t(id)] = 1;
  for (size_t g = 0; g < fuse.size(); ++g)
    for (int id : fuse[g]) o.ffn_group[size_t(id)] = int(g);
  return o;
}

std::string FusionPlan::to_yaml(const std::string& comment) const {
  std::string out;
  if (!comment.empty()) {
    std::istringstream lines(comment);
    for (std::string line; std::getline(lines, line);)
      out += line.empty() ? "#\n" : fmt::format("# {}\n", line);
  }
  out += fmt::format("model_blocks: {}\n", model_blocks);
  out += fmt::format("remove_attention: [{}]\n", fmt::join(remove_attention, ", "));
  if (fuse.empty()) {
    out += "fuse: []\n";
  } else {
    out += "fuse:\n";
    for (const auto& group : fuse) out += fmt::format("  - {}\n", group_text(group));
  }
  return out;
}

}  // namespace parafuse

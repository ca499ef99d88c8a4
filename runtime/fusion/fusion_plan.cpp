// Reading, checking and writing fusion plans (see fusion_plan.h).
//
// The reader is strict in the way the run config reader is (launcher/run_config.cpp): it walks
// every key itself, so an unknown key, a key given twice, a value of the wrong type or an id
// that is not an integer is an error naming the file, the 1-based line and the key. A plan
// decides which weights get rewritten; a silently ignored typo would produce a different model.
// validate() then checks the plan against the model it is applied to.
#include "runtime/fusion/fusion_plan.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <yaml-cpp/yaml.h>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

const char* const kKnownKeys = "model_blocks, remove_attention, fuse";

std::string where(const std::string& origin, const YAML::Mark& mark) {
  return mark.is_null() ? origin : fmt::format("{}:{}", origin, mark.line + 1);
}

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  return "nothing";
}

// A decimal integer in [min, max] ("12", "+12"; not "12.0", "twelve", "0xc"), else an error
// naming `key` and the node's line (or the key's line when the value is empty).
int read_int(const YAML::Node& node, const std::string& key, const YAML::Mark& key_mark,
             const std::string& origin, int64_t min, const char* what) {
  std::string_view text = node.IsScalar() ? std::string_view(node.Scalar()) : std::string_view();
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  const bool ok = node.IsScalar() && !text.empty() && ec == std::errc() &&
                  end == text.data() + text.size() && v >= min &&
                  v <= std::numeric_limits<int>::max();
  const YAML::Mark mark = node.IsNull() || node.Mark().is_null() ? key_mark : node.Mark();
  if (!ok) PF_THROW("{}: '{}' must be {}, got {}", where(origin, mark), key, what, describe(node));
  return int(v);
}

// A list of block ids: `[3, 4]` (or the block form). An empty value is an empty list.
std::vector<int> read_id_list(const YAML::Node& node, const std::string& key,
                              const YAML::Mark& key_mark, const std::string& origin) {
  std::vector<int> ids;
  if (node.IsNull()) return ids;
  if (!node.IsSequence())
    PF_THROW("{}: '{}' must be a list of block ids like [12, 17], got {}",
             where(origin, node.Mark().is_null() ? key_mark : node.Mark()), key, describe(node));
  for (const YAML::Node& item : node)
    ids.push_back(read_int(item, key, key_mark, origin, 0, "a block id (a non-negative integer)"));
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
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    PF_THROW("{}: malformed YAML: {}", where(origin, e.mark), e.msg);
  }
  if (root.IsNull()) PF_THROW("{}: the plan is empty: it needs at least 'model_blocks:'", origin);
  if (!root.IsMap())
    PF_THROW("{}: the top level must be a map with keys {}, got {}", where(origin, root.Mark()),
             kKnownKeys, describe(root));

  FusionPlan plan;
  std::map<std::string, int> first_line;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const YAML::Node key = it->first;  // copies: the iterator hands out temporaries
    const YAML::Node value = it->second;
    const YAML::Mark key_mark = key.Mark();
    if (!key.IsScalar())
      PF_THROW("{}: keys must be plain names ({}), got {}", where(origin, key_mark), kKnownKeys,
               describe(key));
    const std::string& name = key.Scalar();
    if (const auto seen = first_line.find(name); seen != first_line.end())
      PF_THROW("{}: key '{}' is given twice (first on line {})", where(origin, key_mark), name,
               seen->second);
    first_line.emplace(name, key_mark.line + 1);
    if (name == "model_blocks") {
      plan.model_blocks = read_int(value, name, key_mark, origin, 1,
                                   "the model's block count (a positive integer)");
    } else if (name == "remove_attention") {
      plan.remove_attention = read_id_list(value, name, key_mark, origin);
    } else if (name == "fuse") {
      if (value.IsNull()) continue;
      if (!value.IsSequence())
        PF_THROW("{}: 'fuse' must be a list of groups like [[13, 14, 15], [18, 19]], got {}",
                 where(origin, value.Mark().is_null() ? key_mark : value.Mark()), describe(value));
      for (const YAML::Node& group : value) {
        if (!group.IsSequence())
          PF_THROW("{}: each entry of 'fuse' must be a list of block ids like [13, 14, 15], got {}",
                   where(origin, group.Mark().is_null() ? key_mark : group.Mark()),
                   describe(group));
        plan.fuse.push_back(read_id_list(group, "fuse", group.Mark(), origin));
      }
    } else {
      PF_THROW("{}: unknown key '{}' in the fusion plan (known keys: {})", where(origin, key_mark),
               name, kKnownKeys);
    }
  }
  if (!first_line.count("model_blocks"))
    PF_THROW("{}: the plan has no 'model_blocks:' (the block count of the model it was made for)",
             origin);
  return plan;
}

FusionPlan load_fusion_plan(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PF_CHECK(in.good(), "cannot read fusion plan '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_fusion_plan(ss.str(), path);
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

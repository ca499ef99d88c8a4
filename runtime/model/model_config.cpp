// ModelConfig <-> HF config.json, RoPE frequencies, and the invariants every loader relies on.
//
// config.json is user input read by the one config reader (runtime/config/config_reader.h):
// every key is asked for with its type and range checked, and every error is one
// parafuse::Error naming the file, the key path ("block_configs[3].ffn.ffn_mult") and what is
// wrong. Real checkpoints carry many keys parafuse has no use for (torch_dtype, auto_map, ...),
// so an unknown key is refused only when it is a typo of a key read here; the few ignored HF
// keys that would change the math when set (attention_bias, mlp_bias, DeciLM sparsify and
// windowed attention, a hidden_act other than silu) are refused by name. Nemotron-NAS
// block_configs are parsed the way HF's DeciLM code reads them (ffn_mult -> intermediate size
// rounded up to 256), plus our own explicit per-block keys for fused checkpoints
// (intermediate_size, fused_from, ffn_norm_folded) so that `parafuse fuse` output round-trips
// exactly.
#include "runtime/model/model_config.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>       // fmt::join
#include <nlohmann/json.hpp>  // writing config.json

#include "kernels/core/error.h"
#include "runtime/config/config_reader.h"
#include "runtime/config/read_file.h"
#include "runtime/config/value_rules.h"

namespace parafuse {
namespace {

// No dimension of any model comes near 2^40; the cap keeps products of sizes inside int64.
const IntRule kSize{1, int64_t(1) << 40};  // vocab, hidden and FFN sizes, positions
const IntRule kCount{1, kIntMax};          // heads, head_dim, heads per kv group
const IntRule kLayerCount{1, 1 << 20};
const IntRule kTokenId{0, kIntMax};
const IntRule kBlockId{0, kIntMax};
const NumberRule kFfnMult{0.0, 1e6, false, false};
const NumberRule kAnyNumber{};

bool flag(const ConfigMap& map, std::string_view key) {
  const auto value = map.get(key);
  return value && value->boolean();
}

// An HF key parafuse does not implement, refused when true rather than silently ignored.
void refuse_true(const ConfigMap& map, std::string_view key, std::string_view why) {
  if (const auto value = map.get(key); value && value->boolean())
    value->fail(fmt::format("is true, but {}", why));
}

// The same for a key that must be absent (or null).
void refuse_set(const ConfigMap& map, std::string_view key, std::string_view why) {
  if (const auto value = map.get(key))
    value->fail(fmt::format("is set ({}), but {}", value->shown(), why));
}

// HF DeciLM: int(2 * ffn_mult * hidden / 3) rounded up to a multiple of 256.
int64_t ffn_mult_to_intermediate_size(double ffn_mult, int64_t hidden_size) {
  const int64_t size = int64_t(2 * ffn_mult * double(hidden_size) / 3);
  return size % 256 == 0 ? size : size + 256 - size % 256;
}

RopeScaling read_rope_scaling(const ConfigMap& top) {
  RopeScaling scaling;
  const auto value = top.get("rope_scaling");
  if (!value) return scaling;
  const ConfigMap rope = value->map();
  auto type_value = rope.get("rope_type");
  if (!type_value) type_value = rope.get("type");  // the key of older configs
  const std::string type = type_value ? type_value->text("a RoPE type name") : "default";
  if (type == "default") return scaling;
  if (type != "llama3")
    type_value->fail(fmt::format("\"{}\" is not supported (supported: llama3, default)", type));
  scaling.llama3 = true;
  scaling.factor = rope.require("factor").number(kPositiveNumber);
  scaling.low_freq_factor = rope.require("low_freq_factor").number(kPositiveNumber);
  const ConfigValue high = rope.require("high_freq_factor");
  scaling.high_freq_factor = high.number(kPositiveNumber);
  scaling.original_max_position = rope.require("original_max_position_embeddings").integer(kSize);
  if (scaling.high_freq_factor <= scaling.low_freq_factor)
    high.fail(fmt::format("must be greater than low_freq_factor ({}), got {}",
                          scaling.low_freq_factor, scaling.high_freq_factor));
  return scaling;
}

void read_nas_attention(const ConfigValue& value, int n_heads, BlockConfig& config) {
  const ConfigMap attention = value.map();
  const bool no_op = flag(attention, "no_op");
  const bool linear = flag(attention, "replace_with_linear");
  if (no_op && linear) value.fail("has both no_op and replace_with_linear set");
  refuse_set(attention, "sparsify", "parafuse does not implement sparsified attention");
  refuse_set(attention, "window_length", "parafuse does not implement windowed attention");
  refuse_set(attention, "num_sink_tokens", "parafuse does not implement attention sinks");
  attention.ignore({"unshifted_sink", "use_prefill_window_in_sink_attention"});  // sinks only
  if (no_op || linear) {
    config.attention = no_op ? AttentionKind::None : AttentionKind::Linear;
    attention.ignore({"n_heads_in_group"});
    return;
  }
  const ConfigValue group_value = attention.require("n_heads_in_group");
  const int64_t group = group_value.integer(kCount);
  if (n_heads % group != 0)
    group_value.fail(fmt::format("must divide num_attention_heads ({}), got {}", n_heads, group));
  config.n_kv_heads = int(n_heads / group);
}

void read_nas_ffn(const ConfigValue& value, int64_t hidden_size, BlockConfig& config) {
  const ConfigMap ffn = value.map();
  const bool no_op = flag(ffn, "no_op");
  const bool linear = flag(ffn, "replace_with_linear");
  if (no_op && linear) value.fail("has both no_op and replace_with_linear set");
  refuse_set(ffn, "sparsify", "parafuse does not implement sparsified FFNs");
  if (no_op || linear) {
    config.ffn = no_op ? FfnKind::None : FfnKind::Linear;
    ffn.ignore({"ffn_mult", "intermediate_size"});
  } else if (const auto size = ffn.get("intermediate_size")) {  // ours, for fused blocks: exact
    config.intermediate_size = size->integer(kSize);
    ffn.ignore({"ffn_mult"});
  } else {
    const double ffn_mult = ffn.require("ffn_mult").number(kFfnMult);
    config.intermediate_size = ffn_mult_to_intermediate_size(ffn_mult, hidden_size);
  }
  if (const auto fused = ffn.get("fused_from")) {
    for (const ConfigValue& id : fused->list("a list of block ids"))
      config.fused_from.push_back(int(id.integer(kBlockId)));
  }
  config.ffn_norm_folded = flag(ffn, "ffn_norm_folded");
}

std::vector<BlockConfig> read_nas_blocks(const ConfigMap& top, int n_heads, int64_t hidden_size) {
  const ConfigValue blocks_value = top.require("block_configs");
  const std::vector<ConfigValue> items = blocks_value.list("a non-empty list of blocks");
  if (items.empty()) blocks_value.fail("must be a non-empty list of blocks, got an empty array");
  std::vector<BlockConfig> blocks;
  for (const ConfigValue& item : items) {
    const ConfigMap block = item.map();
    BlockConfig config;
    read_nas_attention(block.require("attention"), n_heads, config);
    read_nas_ffn(block.require("ffn"), hidden_size, config);
    blocks.push_back(config);
  }
  if (const auto layers = top.get("num_hidden_layers")) {
    const int64_t n_layers = layers->integer(kLayerCount);
    if (n_layers != int64_t(blocks.size()))
      layers->fail(fmt::format("must equal the number of block_configs ({}), got {}", blocks.size(),
                               n_layers));
  }
  // HF's DeciLM config carries these (usually null); the blocks decide.
  top.ignore({"num_key_value_heads", "intermediate_size"});
  return blocks;
}

std::vector<BlockConfig> read_llama_blocks(const ConfigMap& top, int n_heads) {
  const int64_t n_layers = top.require("num_hidden_layers").integer(kLayerCount);
  BlockConfig block;
  const auto kv_heads = top.get("num_key_value_heads");
  block.n_kv_heads = kv_heads ? int(kv_heads->integer(kCount)) : n_heads;
  block.intermediate_size = top.require("intermediate_size").integer(kSize);
  return std::vector<BlockConfig>(size_t(n_layers), block);
}

bool same_block(const BlockConfig& a, const BlockConfig& b) {
  return a.attention == b.attention && a.n_kv_heads == b.n_kv_heads && a.ffn == b.ffn &&
         a.intermediate_size == b.intermediate_size && a.fused_from == b.fused_from &&
         a.ffn_norm_folded == b.ffn_norm_folded;
}

// True when config.json can be the plain Llama form (every block the same full block).
bool is_uniform_llama(const ModelConfig& config) {
  if (config.model_type == "nemotron-nas") return false;
  for (const BlockConfig& block : config.blocks) {
    if (block.attention != AttentionKind::Full || block.ffn != FfnKind::SwiGlu ||
        !block.fused_from.empty() || block.ffn_norm_folded ||
        !same_block(block, config.blocks.front())) {
      return false;
    }
  }
  return true;
}

std::string describe_block(const BlockConfig& block) {
  std::string attention = block.attention == AttentionKind::None ? "attention none"
                          : block.attention == AttentionKind::Linear
                              ? "attention linear"
                              : fmt::format("attention full ({} kv heads)", block.n_kv_heads);
  std::string ffn = block.ffn == FfnKind::None ? "ffn none"
                    : block.ffn == FfnKind::Linear
                        ? "ffn linear"
                        : fmt::format("ffn swiglu {}", block.intermediate_size);
  if (!block.fused_from.empty()) {
    ffn += fmt::format(" (fused from blocks {})", fmt::join(block.fused_from, ","));
  }
  if (block.ffn_norm_folded) ffn += " (norm folded)";
  return attention + ", " + ffn;
}

}  // namespace

ModelConfig parse_hf_config(const std::string& json_text, const std::string& origin) {
  const ConfigDocument document =
      ConfigDocument::from_json(json_text, origin, UnknownKeys::RefuseNearMisses);
  const ConfigMap top = document.root().map();
  ModelConfig config;
  const ConfigValue type = top.require("model_type");
  config.model_type = type.text("a string");
  if (config.model_type != "llama" && config.model_type != "nemotron-nas")
    type.fail(
        fmt::format("\"{}\" is not supported (supported: llama, nemotron-nas)", config.model_type));
  config.vocab_size = top.require("vocab_size").integer(kSize);
  config.hidden_size = top.require("hidden_size").integer(kSize);
  config.n_heads = int(top.require("num_attention_heads").integer(kCount));
  const auto head_dim = top.get("head_dim");
  config.head_dim =
      head_dim ? int(head_dim->integer(kCount)) : int(config.hidden_size / config.n_heads);
  if (const auto v = top.get("rms_norm_eps")) config.rms_norm_eps = v->number(kPositiveNumber);
  if (const auto v = top.get("rope_theta")) config.rope_theta = v->number(kPositiveNumber);
  config.rope_scaling = read_rope_scaling(top);
  if (const auto v = top.get("rope_freq_factors")) {  // a parafuse key (model_config.h)
    for (const ConfigValue& factor : v->list("a list of numbers"))
      config.rope_freq_factors.push_back(factor.number(kAnyNumber));
  }
  if (const auto v = top.get("tie_word_embeddings")) config.tie_word_embeddings = v->boolean();
  if (const auto v = top.get("max_position_embeddings"))
    config.max_position_embeddings = v->integer(kSize);
  if (const auto v = top.get("bos_token_id")) config.bos_token_id = int(v->integer(kTokenId));
  if (const auto v = top.get("eos_token_id")) {  // one id, or a list of them
    if (v->is_list()) {
      for (const ConfigValue& id : v->list())
        config.eos_token_ids.push_back(int(id.integer(kTokenId)));
    } else {
      config.eos_token_ids = {int(v->integer(kTokenId))};
    }
  }
  // Special tokens parafuse takes from the tokenizer; named so cls_token_id is not taken for a
  // typo of bos_token_id.
  top.ignore({"pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "mask_token_id"});
  // HF keys parafuse reads only to refuse what it does not implement.
  refuse_true(top, "attention_bias", "parafuse's attention projections have no bias");
  refuse_true(top, "mlp_bias", "parafuse's FFN projections have no bias");
  if (const auto act = top.get("hidden_act")) {
    const std::string name = act->text("an activation name");
    if (name != "silu")
      act->fail(fmt::format("\"{}\" is not supported (parafuse's FFN is SwiGLU: silu)", name));
  }

  config.blocks = config.model_type == "llama"
                      ? read_llama_blocks(top, config.n_heads)
                      : read_nas_blocks(top, config.n_heads, config.hidden_size);
  document.finish();
  try {
    config.validate();
  } catch (const Error& e) {
    PF_THROW("{}: {}", origin, e.what());
  }
  return config;
}

ModelConfig load_hf_config(const std::string& path) {
  return parse_hf_config(read_file(path, "model config"), path);
}

std::string to_hf_config_json(const ModelConfig& config) {
  config.validate();
  nlohmann::ordered_json out;
  const bool llama = is_uniform_llama(config);
  out["architectures"] = {llama ? "LlamaForCausalLM" : "DeciLMForCausalLM"};
  out["model_type"] = llama ? "llama" : "nemotron-nas";
  out["vocab_size"] = config.vocab_size;
  out["hidden_size"] = config.hidden_size;
  out["num_hidden_layers"] = config.n_blocks();
  out["num_attention_heads"] = config.n_heads;
  out["head_dim"] = config.head_dim;
  out["hidden_act"] = "silu";
  out["rms_norm_eps"] = config.rms_norm_eps;
  out["rope_theta"] = config.rope_theta;
  // Not an HF key: the factors of a Llama-3.1 GGUF travel to a checkpoint folder this way.
  if (!config.rope_freq_factors.empty()) out["rope_freq_factors"] = config.rope_freq_factors;
  if (config.rope_scaling.llama3) {
    out["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", config.rope_scaling.factor},
        {"low_freq_factor", config.rope_scaling.low_freq_factor},
        {"high_freq_factor", config.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", config.rope_scaling.original_max_position}};
  } else {
    out["rope_scaling"] = nullptr;
  }
  out["tie_word_embeddings"] = config.tie_word_embeddings;
  out["max_position_embeddings"] = config.max_position_embeddings;
  if (config.bos_token_id >= 0) out["bos_token_id"] = config.bos_token_id;
  if (config.eos_token_ids.size() == 1) {
    out["eos_token_id"] = config.eos_token_ids[0];
  } else if (!config.eos_token_ids.empty()) {
    out["eos_token_id"] = config.eos_token_ids;
  }
  if (llama) {
    out["num_key_value_heads"] = config.blocks.front().n_kv_heads;
    out["intermediate_size"] = config.blocks.front().intermediate_size;
    return out.dump(2) + "\n";
  }
  nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
  for (const BlockConfig& block : config.blocks) {
    nlohmann::ordered_json attention, ffn;
    attention["no_op"] = block.attention == AttentionKind::None;
    attention["replace_with_linear"] = block.attention == AttentionKind::Linear;
    attention["n_heads_in_group"] = nullptr;
    if (block.attention == AttentionKind::Full) {
      attention["n_heads_in_group"] = config.n_heads / block.n_kv_heads;
    }
    ffn["no_op"] = block.ffn == FfnKind::None;
    ffn["replace_with_linear"] = block.ffn == FfnKind::Linear;
    ffn["ffn_mult"] = nullptr;
    if (block.ffn == FfnKind::SwiGlu) {
      // HF reads ffn_mult (exact when the size is a multiple of 256); we read intermediate_size.
      ffn["ffn_mult"] = 1.5 * double(block.intermediate_size) / double(config.hidden_size);
      ffn["intermediate_size"] = block.intermediate_size;
    }
    if (!block.fused_from.empty()) ffn["fused_from"] = block.fused_from;
    if (block.ffn_norm_folded) ffn["ffn_norm_folded"] = true;
    blocks.push_back({{"attention", attention}, {"ffn", ffn}});
  }
  out["block_configs"] = blocks;
  return out.dump(2) + "\n";
}

std::vector<float> rope_inv_freq(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  std::vector<float> inv_freq(size_t(std::max(half, 0)));
  const RopeScaling& scaling = config.rope_scaling;
  for (int i = 0; i < half; ++i) {
    double freq = 1.0 / std::pow(config.rope_theta, double(2 * i) / double(config.head_dim));
    if (scaling.llama3) {  // HF _compute_llama3_parameters
      const double orig = double(scaling.original_max_position);
      const double low_freq_wavelen = orig / scaling.low_freq_factor;
      const double high_freq_wavelen = orig / scaling.high_freq_factor;
      const double wavelen = 2 * M_PI / freq;
      if (wavelen > low_freq_wavelen) {
        freq = freq / scaling.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (orig / wavelen - scaling.low_freq_factor) /
                              (scaling.high_freq_factor - scaling.low_freq_factor);
        freq = (1 - smooth) * freq / scaling.factor + smooth * freq;
      }
    }
    if (!config.rope_freq_factors.empty()) freq /= config.rope_freq_factors[size_t(i)];
    inv_freq[size_t(i)] = float(freq);
  }
  return inv_freq;
}

void ModelConfig::validate() const {
  PF_CHECK(vocab_size > 0, "vocab_size = {} must be positive", vocab_size);
  PF_CHECK(hidden_size > 0, "hidden_size = {} must be positive", hidden_size);
  PF_CHECK(n_heads > 0, "num_attention_heads = {} must be positive", n_heads);
  PF_CHECK(hidden_size % n_heads == 0, "hidden_size {} is not a multiple of num_attention_heads {}",
           hidden_size, n_heads);
  PF_CHECK(head_dim > 0 && head_dim % 2 == 0, "head_dim = {} must be positive and even (RoPE)",
           head_dim);
  PF_CHECK(rms_norm_eps > 0, "rms_norm_eps = {} must be positive", rms_norm_eps);
  PF_CHECK(rope_theta > 0, "rope_theta = {} must be positive", rope_theta);
  PF_CHECK(max_position_embeddings > 0, "max_position_embeddings = {} must be positive",
           max_position_embeddings);
  if (rope_scaling.llama3) {
    PF_CHECK(rope_scaling.factor > 0 && rope_scaling.low_freq_factor > 0 &&
                 rope_scaling.high_freq_factor > rope_scaling.low_freq_factor &&
                 rope_scaling.original_max_position > 0,
             "llama3 rope_scaling (factor {}, low_freq_factor {}, high_freq_factor {}, "
             "original_max_position_embeddings {}) needs positive values and high > low",
             rope_scaling.factor, rope_scaling.low_freq_factor, rope_scaling.high_freq_factor,
             rope_scaling.original_max_position);
  }
  if (!rope_freq_factors.empty()) {
    PF_CHECK(!rope_scaling.llama3,
             "RoPE has both llama3 rope_scaling and per-frequency factors; give one of them");
    PF_CHECK(int64_t(rope_freq_factors.size()) == head_dim / 2,
             "RoPE frequency factors: {} entries, but head_dim {} has {} frequencies",
             rope_freq_factors.size(), head_dim, head_dim / 2);
    for (size_t i = 0; i < rope_freq_factors.size(); ++i) {
      PF_CHECK(std::isfinite(rope_freq_factors[i]) && rope_freq_factors[i] > 0,
               "RoPE frequency factor {} = {} must be positive and finite", i,
               rope_freq_factors[i]);
    }
  }
  PF_CHECK(!blocks.empty(), "a model needs at least one block");
  for (int i = 0; i < n_blocks(); ++i) {
    const BlockConfig& block = blocks[size_t(i)];
    if (block.attention == AttentionKind::Full) {
      PF_CHECK(block.n_kv_heads > 0 && n_heads % block.n_kv_heads == 0,
               "block {}: n_kv_heads = {} must be positive and divide num_attention_heads {}", i,
               block.n_kv_heads, n_heads);
    }
    if (block.ffn == FfnKind::SwiGlu) {
      PF_CHECK(block.intermediate_size > 0, "block {}: intermediate_size = {} must be positive", i,
               block.intermediate_size);
    } else {
      PF_CHECK(block.fused_from.empty() && !block.ffn_norm_folded,
               "block {}: fused_from / ffn_norm_folded are only meaningful for a SwiGLU FFN", i);
    }
    for (int source : block.fused_from) {
      PF_CHECK(source >= 0, "block {}: fused_from has negative block id {}", i, source);
    }
  }
}

std::string ModelConfig::summary() const {
  std::string out =
      fmt::format("{}: {} blocks, hidden {}, {} heads x {}, vocab {}, rope theta {}{}{}",
                  model_type.empty() ? "model" : model_type, n_blocks(), hidden_size, n_heads,
                  head_dim, vocab_size, rope_theta,
                  rope_scaling.llama3 ? fmt::format(" (llama3 x{})", rope_scaling.factor)
                  : rope_freq_factors.empty()
                      ? ""
                      : fmt::format(" (frequency factors {}..{})", rope_freq_factors.front(),
                                    rope_freq_factors.back()),
                  tie_word_embeddings ? ", tied embeddings" : "");
  int run_start = 0;
  for (int i = 1; i <= n_blocks(); ++i) {
    if (i < n_blocks() && same_block(blocks[size_t(i)], blocks[size_t(run_start)])) continue;
    const std::string range = i - 1 == run_start ? fmt::format("block {}", run_start)
                                                 : fmt::format("blocks {}-{}", run_start, i - 1);
    out += fmt::format("\n  {}: {}", range, describe_block(blocks[size_t(run_start)]));
    run_start = i;
  }
  return out;
}

std::string block_tensor_name(int block, const char* suffix) {
  return fmt::format("model.layers.{}.{}", block, suffix);
}

}  // namespace parafuse

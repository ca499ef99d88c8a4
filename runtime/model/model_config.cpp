// ModelConfig <-> HF config.json, RoPE frequencies, and the invariants every loader relies on.
//
// config.json is user input: every key is looked up with its type checked, and every error is
// one parafuse::Error naming the file, the key path ("block_configs[3].ffn.ffn_mult") and what
// is wrong. No nlohmann exception escapes this file. Nemotron-NAS block_configs are parsed the
// way HF's DeciLM code reads them (ffn_mult -> intermediate size rounded up to 256), plus our
// own explicit per-block keys for fused checkpoints (intermediate_size, fused_from,
// ffn_norm_folded) so that `parafuse fuse` output round-trips exactly.
#include "runtime/model/model_config.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

using nlohmann::json;

constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
constexpr int64_t kMaxSize = int64_t(1) << 40;  // no dimension of any model comes near this

const char* json_type_name(const json& v) {
  return v.type_name();
}

// Typed access to one JSON object, naming `origin` and the key path in every error.
class JsonObject {
 public:
  JsonObject(const json& object, std::string origin, std::string path)
      : object_(object), origin_(std::move(origin)), path_(std::move(path)) {
    PF_CHECK(object_.is_object(), "{}: {} must be a JSON object, got {}", origin_,
             path_.empty() ? "the top level" : path_, json_type_name(object_));
  }

  std::string key_path(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  // Null counts as absent (HF writes null for unset optional keys).
  const json* find(const std::string& key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }

  const json& require(const std::string& key) const {
    const json* v = find(key);
    PF_CHECK(v != nullptr, "{}: required key '{}' is missing", origin_, key_path(key));
    return *v;
  }

  int64_t integer(const json& v, const std::string& key, int64_t min, int64_t max) const {
    PF_CHECK(v.is_number_integer(), "{}: {} must be an integer, got {} {}", origin_, key_path(key),
             json_type_name(v), v.dump());
    PF_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(max),
             "{}: {} = {} is too large (max {})", origin_, key_path(key), v.dump(), max);
    const int64_t value = v.get<int64_t>();
    PF_CHECK(value >= min && value <= max, "{}: {} = {} is out of range [{}, {}]", origin_,
             key_path(key), value, min, max);
    return value;
  }
  int64_t required_size(const std::string& key, int64_t max = kMaxSize) const {
    const json& v = require(key);
    const bool positive_or_not_integer =
        !v.is_number_integer() ||
        (v.is_number_unsigned() ? v.get<uint64_t>() > 0 : v.get<int64_t>() > 0);
    PF_CHECK(positive_or_not_integer, "{}: {} = {} must be positive", origin_, key_path(key),
             v.dump());
    return integer(v, key, 1, max);
  }
  int64_t optional_size(const std::string& key, int64_t fallback, int64_t max = kMaxSize) const {
    return has(key) ? required_size(key, max) : fallback;
  }
  double number(const std::string& key, double fallback, bool required = false) const {
    const json* v = required ? &require(key) : find(key);
    if (v == nullptr) return fallback;
    PF_CHECK(v->is_number(), "{}: {} must be a number, got {} {}", origin_, key_path(key),
             json_type_name(*v), v->dump());
    const double value = v->get<double>();
    PF_CHECK(std::isfinite(value), "{}: {} = {} is not finite", origin_, key_path(key), value);
    return value;
  }
  double positive_number(const std::string& key, double fallback, bool required = false) const {
    const double value = number(key, fallback, required);
    PF_CHECK(value > 0, "{}: {} = {} must be positive", origin_, key_path(key), value);
    return value;
  }
  bool boolean(const std::string& key, bool fallback) const {
    const json* v = find(key);
    if (v == nullptr) return fallback;
    PF_CHECK(v->is_boolean(), "{}: {} must be true or false, got {} {}", origin_, key_path(key),
             json_type_name(*v), v->dump());
    return v->get<bool>();
  }
  std::string string(const std::string& key) const {
    const json& v = require(key);
    PF_CHECK(v.is_string(), "{}: {} must be a string, got {} {}", origin_, key_path(key),
             json_type_name(v), v.dump());
    return v.get<std::string>();
  }
  // An int, or a list of ints (eos_token_id); empty when absent.
  std::vector<int> int_or_list(const std::string& key) const {
    const json* v = find(key);
    if (v == nullptr) return {};
    if (!v->is_array()) return {int(integer(*v, key, 0, kMaxInt))};
    std::vector<int> out;
    for (size_t i = 0; i < v->size(); ++i) {
      out.push_back(int(integer((*v)[i], fmt::format("{}[{}]", key, i), 0, kMaxInt)));
    }
    return out;
  }
  // A list of finite numbers; empty when absent.
  std::vector<double> number_list(const std::string& key) const {
    const json* v = find(key);
    if (v == nullptr) return {};
    PF_CHECK(v->is_array(), "{}: {} must be a list of numbers, got {} {}", origin_, key_path(key),
             json_type_name(*v), v->dump().substr(0, 80));
    std::vector<double> out;
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      PF_CHECK(e.is_number() && std::isfinite(e.get<double>()),
               "{}: {}[{}] must be a finite number, got {}", origin_, key_path(key), i,
               e.dump().substr(0, 80));
      out.push_back(e.get<double>());
    }
    return out;
  }
  JsonObject object(const std::string& key) const {
    return JsonObject(require(key), origin_, key_path(key));
  }
  const std::string& origin() const { return origin_; }

 private:
  const json& object_;
  std::string origin_;
  std::string path_;
};

// HF DeciLM: int(2 * ffn_mult * hidden / 3) rounded up to a multiple of 256.
int64_t ffn_mult_to_intermediate_size(double ffn_mult, int64_t hidden_size) {
  const int64_t size = int64_t(2 * ffn_mult * double(hidden_size) / 3);
  return size % 256 == 0 ? size : size + 256 - size % 256;
}

RopeScaling parse_rope_scaling(const JsonObject& top) {
  RopeScaling scaling;
  if (!top.has("rope_scaling")) return scaling;
  const JsonObject rope = top.object("rope_scaling");
  const std::string type_key = rope.has("rope_type") ? "rope_type" : "type";
  const std::string type = rope.has(type_key) ? rope.string(type_key) : "default";
  if (type == "default") return scaling;
  PF_CHECK(type == "llama3", "{}: {} = \"{}\" is not supported (supported: llama3, default)",
           top.origin(), rope.key_path(type_key), type);
  scaling.llama3 = true;
  scaling.factor = rope.positive_number("factor", 0, true);
  scaling.low_freq_factor = rope.positive_number("low_freq_factor", 0, true);
  scaling.high_freq_factor = rope.positive_number("high_freq_factor", 0, true);
  scaling.original_max_position = rope.required_size("original_max_position_embeddings");
  PF_CHECK(scaling.high_freq_factor > scaling.low_freq_factor,
           "{}: rope_scaling.high_freq_factor {} must be greater than low_freq_factor {}",
           top.origin(), scaling.high_freq_factor, scaling.low_freq_factor);
  return scaling;
}

BlockConfig parse_nas_block(const JsonObject& top, const json& block_json, size_t index,
                            int n_heads, int64_t hidden_size) {
  const std::string path = fmt::format("block_configs[{}]", index);
  const JsonObject block(block_json, top.origin(), path);
  BlockConfig config;

  const JsonObject attention = block.object("attention");
  const bool attention_no_op = attention.boolean("no_op", false);
  const bool attention_linear = attention.boolean("replace_with_linear", false);
  PF_CHECK(!(attention_no_op && attention_linear),
           "{}: {}.attention has both no_op and replace_with_linear set", top.origin(), path);
  if (attention_no_op) {
    config.attention = AttentionKind::None;
  } else if (attention_linear) {
    config.attention = AttentionKind::Linear;
  } else {
    const int64_t group = attention.required_size("n_heads_in_group", kMaxInt);
    PF_CHECK(n_heads % group == 0, "{}: {} = {} does not divide num_attention_heads {}",
             top.origin(), attention.key_path("n_heads_in_group"), group, n_heads);
    config.n_kv_heads = int(n_heads / group);
  }

  const JsonObject ffn = block.object("ffn");
  const bool ffn_no_op = ffn.boolean("no_op", false);
  const bool ffn_linear = ffn.boolean("replace_with_linear", false);
  PF_CHECK(!(ffn_no_op && ffn_linear), "{}: {}.ffn has both no_op and replace_with_linear set",
           top.origin(), path);
  if (ffn_no_op) {
    config.ffn = FfnKind::None;
  } else if (ffn_linear) {
    config.ffn = FfnKind::Linear;
  } else if (ffn.has("intermediate_size")) {  // ours, written for fused blocks: exact
    config.intermediate_size = ffn.required_size("intermediate_size");
  } else {
    const double ffn_mult = ffn.positive_number("ffn_mult", 0, true);
    PF_CHECK(ffn_mult < 1e6, "{}: {} = {} is implausibly large", top.origin(),
             ffn.key_path("ffn_mult"), ffn_mult);
    config.intermediate_size = ffn_mult_to_intermediate_size(ffn_mult, hidden_size);
  }
  if (const json* fused = ffn.find("fused_from")) {
    PF_CHECK(fused->is_array(), "{}: {} must be a list of block ids, got {}", top.origin(),
             ffn.key_path("fused_from"), json_type_name(*fused));
    for (size_t i = 0; i < fused->size(); ++i) {
      config.fused_from.push_back(
          int(ffn.integer((*fused)[i], fmt::format("fused_from[{}]", i), 0, kMaxInt)));
    }
  }
  config.ffn_norm_folded = ffn.boolean("ffn_norm_folded", false);
  return config;
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
  try {
    const json root = json::parse(json_text);
    const JsonObject top(root, origin, "");
    ModelConfig config;
    config.model_type = top.string("model_type");
    PF_CHECK(config.model_type == "llama" || config.model_type == "nemotron-nas",
             "{}: model_type \"{}\" is not supported (supported: llama, nemotron-nas)", origin,
             config.model_type);
    config.vocab_size = top.required_size("vocab_size");
    config.hidden_size = top.required_size("hidden_size");
    config.n_heads = int(top.required_size("num_attention_heads", kMaxInt));
    config.head_dim =
        int(top.optional_size("head_dim", config.hidden_size / config.n_heads, kMaxInt));
    config.rms_norm_eps = top.positive_number("rms_norm_eps", config.rms_norm_eps);
    config.rope_theta = top.positive_number("rope_theta", config.rope_theta);
    config.rope_scaling = parse_rope_scaling(top);
    config.rope_freq_factors = top.number_list("rope_freq_factors");
    config.tie_word_embeddings = top.boolean("tie_word_embeddings", false);
    config.max_position_embeddings =
        top.optional_size("max_position_embeddings", config.max_position_embeddings);
    if (top.has("bos_token_id")) {
      config.bos_token_id =
          int(top.integer(top.require("bos_token_id"), "bos_token_id", 0, kMaxInt));
    }
    config.eos_token_ids = top.int_or_list("eos_token_id");

    if (config.model_type == "llama") {
      const int64_t n_layers = top.required_size("num_hidden_layers", 1 << 20);
      BlockConfig block;
      block.n_kv_heads = int(top.optional_size("num_key_value_heads", config.n_heads, kMaxInt));
      block.intermediate_size = top.required_size("intermediate_size");
      config.blocks.assign(size_t(n_layers), block);
    } else {
      const json& blocks = top.require("block_configs");
      PF_CHECK(blocks.is_array() && !blocks.empty(),
               "{}: block_configs must be a non-empty list, got {} {}", origin,
               json_type_name(blocks), blocks.is_array() ? "(empty)" : "");
      for (size_t i = 0; i < blocks.size(); ++i) {
        config.blocks.push_back(
            parse_nas_block(top, blocks[i], i, config.n_heads, config.hidden_size));
      }
      if (top.has("num_hidden_layers")) {
        const int64_t n_layers = top.required_size("num_hidden_layers", 1 << 20);
        PF_CHECK(n_layers == int64_t(blocks.size()),
                 "{}: num_hidden_layers = {} but block_configs has {} entries", origin, n_layers,
                 blocks.size());
      }
    }
    try {
      config.validate();
    } catch (const Error& e) {
      PF_THROW("{}: {}", origin, e.what());
    }
    return config;
  } catch (const nlohmann::json::exception& e) {
    PF_THROW("{}: invalid JSON: {}", origin, e.what());
  }
}

ModelConfig load_hf_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PF_CHECK(in.good(), "{}: cannot open: {}", path, std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  PF_CHECK(!in.bad(), "{}: read error: {}", path, std::strerror(errno));
  return parse_hf_config(text.str(), path);
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

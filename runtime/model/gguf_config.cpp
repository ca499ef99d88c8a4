// ModelConfig from GGUF metadata, so a .gguf file alone (no config.json) describes its model.
//
// llama.cpp keeps hyperparameters as "{arch}.key" metadata. Arch "llama" has one value per key;
// arch "deci" (Nemotron-NAS) may give head_count, head_count_kv and feed_forward_length as
// per-block arrays, where 0 kv heads means the block has no attention and 0 FFN width means no
// FFN. Llama-3 RoPE scaling is accepted from "{arch}.rope.scaling.*" keys, and as a
// rope_freqs.weight tensor (F32, head_dim/2 divisors of inv_freq: how llama.cpp's converter
// stores Llama-3.1 scaling), which becomes ModelConfig::rope_freq_factors and takes precedence.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_config.h"

namespace parafuse {
namespace {

constexpr int64_t kMaxBlocks = 1 << 20;
constexpr int64_t kMaxCount = int64_t(1) << 40;

// A per-block integer: a scalar repeated for every block, or an array with one entry per block.
std::vector<int64_t> per_block_ints(const GgufFile& file, const std::string& key,
                                    int64_t n_blocks) {
  PF_CHECK(file.has(key), "{}: metadata key '{}' is missing", file.origin(), key);
  const GgufValue& value = file.metadata().at(key);
  std::vector<int64_t> values;
  if (std::holds_alternative<GgufArray>(value)) {
    values = file.get_ints(key);
    PF_CHECK(int64_t(values.size()) == n_blocks, "{}: metadata '{}' has {} entries, expected {}",
             file.origin(), key, values.size(), n_blocks);
  } else {
    values.assign(size_t(n_blocks), file.get_int(key));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    PF_CHECK(values[i] >= 0 && values[i] <= kMaxCount, "{}: metadata '{}' = {} for block {}",
             file.origin(), key, values[i], i);
  }
  return values;
}

int64_t positive_int(const GgufFile& file, const std::string& key, int64_t max) {
  const int64_t value = file.get_int(key);
  PF_CHECK(value > 0 && value <= max, "{}: metadata '{}' = {} (must be in 1..{})", file.origin(),
           key, value, max);
  return value;
}

// rope_freqs.weight: one F32 divisor per RoPE frequency; empty when the tensor is absent.
std::vector<double> rope_freq_factors_from_gguf(const GgufFile& file, int head_dim) {
  const GgufTensorInfo* t = file.find_tensor("rope_freqs.weight");
  if (t == nullptr) return {};
  PF_CHECK(t->type == DType::F32, "{}: tensor 'rope_freqs.weight' has type {}, expected F32",
           file.origin(), dtype_name(t->type));
  PF_CHECK(t->ne.size() == 1 && t->ne[0] == head_dim / 2,
           "{}: tensor 'rope_freqs.weight' has shape [{}], expected [{}] (head_dim {} / 2)",
           file.origin(), fmt::join(t->ne, ", "), head_dim / 2, head_dim);
  std::vector<float> raw(size_t(head_dim / 2));
  std::memcpy(raw.data(), file.tensor_data(*t), raw.size() * sizeof(float));
  std::vector<double> factors(raw.begin(), raw.end());
  for (size_t i = 0; i < factors.size(); ++i) {
    PF_CHECK(std::isfinite(factors[i]) && factors[i] > 0,
             "{}: rope_freqs.weight[{}] = {} must be positive and finite", file.origin(), i,
             factors[i]);
  }
  return factors;
}

RopeScaling rope_scaling_from_gguf(const GgufFile& file, const std::string& arch) {
  RopeScaling scaling;
  const std::string prefix = arch + ".rope.scaling.";
  if (!file.has(prefix + "type")) return scaling;
  const std::string type = file.get_string(prefix + "type");
  if (type == "none") return scaling;
  PF_CHECK(type == "llama3", "{}: {}type = '{}' is not supported (supported: none, llama3)",
           file.origin(), prefix, type);
  scaling.llama3 = true;
  scaling.factor = file.get_float(prefix + "factor");
  if (file.has(prefix + "low_freq_factor")) {
    scaling.low_freq_factor = file.get_float(prefix + "low_freq_factor");
  }
  if (file.has(prefix + "high_freq_factor")) {
    scaling.high_freq_factor = file.get_float(prefix + "high_freq_factor");
  }
  if (file.has(prefix + "original_context_length")) {
    scaling.original_max_position =
        positive_int(file, prefix + "original_context_length", kMaxCount);
  }
  return scaling;
}

}  // namespace

ModelConfig config_from_gguf(const GgufFile& file) {
  const std::string& origin = file.origin();
  PF_CHECK(file.has("general.architecture"), "{}: metadata key 'general.architecture' is missing",
           origin);
  const std::string arch = file.get_string("general.architecture");
  PF_CHECK(arch == "llama" || arch == "deci",
           "{}: general.architecture '{}' is not supported (supported: llama, deci)", origin, arch);
  const std::string prefix = arch + ".";
  ModelConfig config;
  config.model_type = arch == "llama" ? "llama" : "nemotron-nas";

  const int64_t n_blocks = positive_int(file, prefix + "block_count", kMaxBlocks);
  config.hidden_size = positive_int(file, prefix + "embedding_length", kMaxCount);

  const std::vector<int64_t> heads =
      per_block_ints(file, prefix + "attention.head_count", n_blocks);
  const int64_t max_heads = *std::max_element(heads.begin(), heads.end());
  PF_CHECK(max_heads > 0 && max_heads <= (1 << 20), "{}: metadata '{}attention.head_count' = {}",
           origin, prefix, max_heads);
  config.n_heads = int(max_heads);
  const std::string kv_key = prefix + "attention.head_count_kv";
  const std::vector<int64_t> kv_heads =
      file.has(kv_key) ? per_block_ints(file, kv_key, n_blocks) : heads;
  const std::vector<int64_t> ffn_widths =
      per_block_ints(file, prefix + "feed_forward_length", n_blocks);

  if (file.has(prefix + "attention.key_length")) {
    config.head_dim = int(positive_int(file, prefix + "attention.key_length", 1 << 20));
  } else if (file.has(prefix + "rope.dimension_count")) {
    config.head_dim = int(positive_int(file, prefix + "rope.dimension_count", 1 << 20));
  } else {
    config.head_dim = int(config.hidden_size / config.n_heads);
  }
  if (file.has(prefix + "rope.dimension_count")) {
    const int64_t rope_dims = file.get_int(prefix + "rope.dimension_count");
    PF_CHECK(rope_dims == config.head_dim,
             "{}: {}rope.dimension_count = {} differs from head_dim {} (partial RoPE is not "
             "supported)",
             origin, prefix, rope_dims, config.head_dim);
  }
  if (file.has(prefix + "attention.layer_norm_rms_epsilon")) {
    config.rms_norm_eps = file.get_float(prefix + "attention.layer_norm_rms_epsilon");
  }
  if (file.has(prefix + "rope.freq_base")) {
    config.rope_theta = file.get_float(prefix + "rope.freq_base");
  }
  config.rope_freq_factors = rope_freq_factors_from_gguf(file, config.head_dim);
  // The factors already hold any Llama-3 scaling; llama.cpp applies them alone.
  if (config.rope_freq_factors.empty()) config.rope_scaling = rope_scaling_from_gguf(file, arch);
  if (file.has(prefix + "context_length")) {
    config.max_position_embeddings = positive_int(file, prefix + "context_length", kMaxCount);
  }

  if (file.has(prefix + "vocab_size")) {
    config.vocab_size = positive_int(file, prefix + "vocab_size", kMaxCount);
  } else if (file.has("tokenizer.ggml.tokens")) {
    config.vocab_size = int64_t(file.get_strings("tokenizer.ggml.tokens").size());
  } else if (const GgufTensorInfo* embed = file.find_tensor("token_embd.weight");
             embed != nullptr && embed->ne.size() == 2) {
    config.vocab_size = embed->ne[1];
  } else {
    PF_THROW(
        "{}: no vocabulary size ({}vocab_size, tokenizer.ggml.tokens and token_embd.weight "
        "are all missing)",
        origin, prefix);
  }
  config.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  if (file.has("tokenizer.ggml.bos_token_id")) {
    config.bos_token_id = int(std::clamp<int64_t>(file.get_int("tokenizer.ggml.bos_token_id"), -1,
                                                  std::numeric_limits<int>::max()));
  }
  if (file.has("tokenizer.ggml.eos_token_id")) {
    const int64_t eos = file.get_int("tokenizer.ggml.eos_token_id");
    PF_CHECK(eos >= 0 && eos <= std::numeric_limits<int>::max(),
             "{}: metadata 'tokenizer.ggml.eos_token_id' = {}", origin, eos);
    config.eos_token_ids = {int(eos)};
  }

  for (int64_t i = 0; i < n_blocks; ++i) {
    BlockConfig block;
    const size_t b = size_t(i);
    if (arch == "llama") {
      PF_CHECK(kv_heads[b] > 0 && ffn_widths[b] > 0 && heads[b] == max_heads,
               "{}: llama block {} has {} heads, {} kv heads, FFN width {} (all must be > 0)",
               origin, i, heads[b], kv_heads[b], ffn_widths[b]);
    }
    if (kv_heads[b] == 0) {
      const std::string attn_output = fmt::format("blk.{}.attn_output.weight", i);
      PF_CHECK(file.find_tensor(attn_output) == nullptr,
               "{}: block {} has 0 kv heads but a tensor '{}' (linear attention replacement is "
               "not supported in GGUF)",
               origin, i, attn_output);
      block.attention = AttentionKind::None;
    } else {
      PF_CHECK(heads[b] == max_heads,
               "{}: block {} has {} attention heads, other blocks {} (must be equal)", origin, i,
               heads[b], max_heads);
      PF_CHECK(kv_heads[b] <= max_heads, "{}: block {} has {} kv heads > {} heads", origin, i,
               kv_heads[b], max_heads);
      block.n_kv_heads = int(kv_heads[b]);
    }
    if (ffn_widths[b] == 0) {
      block.ffn = FfnKind::None;
    } else {
      block.intermediate_size = ffn_widths[b];
    }
    config.blocks.push_back(block);
  }
  try {
    config.validate();
  } catch (const Error& e) {
    PF_THROW("{}: {}", origin, e.what());
  }
  return config;
}

}  // namespace parafuse

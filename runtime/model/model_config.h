// What a model is: the Nemotron-NAS (DeciLM `block_configs`) schema, of which plain Llama is
// the uniform special case. A block is an attention part plus an FFN part, each of which may be
// the full thing, absent (no-op) or a single hidden x hidden linear layer. A fused FFN run
// (runtime/fusion) is an ordinary wide SwiGLU block whose `fused_from` names the original
// blocks, and whose FFN norm has been folded into its gate/up weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace parafuse {

enum class AttentionKind { Full, None, Linear };
enum class FfnKind { SwiGlu, None, Linear };

struct BlockConfig {
  AttentionKind attention = AttentionKind::Full;
  int n_kv_heads = 0;  // Full only
  FfnKind ffn = FfnKind::SwiGlu;
  int64_t intermediate_size = 0;  // SwiGlu only
  // Fused blocks: the original block ids this FFN was built from (empty otherwise). A fused
  // block's FFN has no norm weight of its own (folded into gate/up).
  std::vector<int> fused_from;
  bool ffn_norm_folded = false;
};

struct RopeScaling {
  bool llama3 = false;  // rope_scaling.rope_type == "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama" or "nemotron-nas"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int n_heads = 0;
  int head_dim = 0;  // hidden_size / n_heads unless the config says otherwise
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Per-frequency divisors of inv_freq (head_dim/2 entries), llama.cpp's rope_freqs tensor:
  // how its converter stores Llama-3.1 scaling in a GGUF. Empty: none. Not with rope_scaling.
  std::vector<double> rope_freq_factors;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 2048;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  std::vector<BlockConfig> blocks;

  int n_blocks() const { return int(blocks.size()); }
  // Checks the invariants every loader relies on; throws naming the block and the value.
  void validate() const;
  // One line per run of identical blocks, for logs and --help output.
  std::string summary() const;
};

// HF config.json text -> ModelConfig. `origin` names the file in error messages.
// model_type "llama" (LlamaForCausalLM) and "nemotron-nas" (DeciLMForCausalLM).
ModelConfig parse_hf_config(const std::string& json_text, const std::string& origin);
ModelConfig load_hf_config(const std::string& path);

// The HF config.json a ModelConfig round-trips through (nemotron-nas form when any block is
// not a full Llama block, or when fused).
std::string to_hf_config_json(const ModelConfig& config);

// inv_freq (head_dim/2) of RoPE with the config's theta and any Llama-3 scaling (as
// parameters, or as per-frequency factors).
std::vector<float> rope_inv_freq(const ModelConfig& config);

// HF tensor names: the one naming scheme inside parafuse (GGUF sources translate to it).
std::string block_tensor_name(int block, const char* suffix);  // "model.layers.{block}.{suffix}"

}  // namespace parafuse

// Synthetic weights: each element is hashed from (seed, tensor name, flat index), so a slice is
// computed directly with no storage and every rank of a TP x PP job sees the same model.
//
// Scales keep a deep random model numerically tame: inputs to every norm are O(1), and each
// residual-writing layer is shrunk by 1/sqrt(2 * n_blocks) so the residual stream grows by a
// bounded amount over 30-160 blocks instead of by sqrt(n_blocks).
#include "runtime/model/synthetic.h"

#include <algorithm>
#include <cmath>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1): the top 24 bits, exact in float.
float uniform_pm1(uint64_t key, uint64_t index) {
  const uint64_t bits = splitmix64_mix(key + (index + 1) * 0x9e3779b97f4a7c15ull);
  return float(int64_t(bits >> 40) - (int64_t(1) << 23)) * (1.0f / float(1 << 23));
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

void add(std::map<std::string, TensorInfo>& out, std::string name, std::vector<int64_t> shape) {
  TensorInfo t;
  t.name = name;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  out.emplace(std::move(name), std::move(t));
}

}  // namespace

std::map<std::string, TensorInfo> expected_tensors(const ModelConfig& config) {
  const int64_t hidden = config.hidden_size;
  const int64_t vocab = config.vocab_size;
  const int64_t head_dim =
      config.head_dim > 0 ? config.head_dim : (config.n_heads > 0 ? hidden / config.n_heads : 0);
  std::map<std::string, TensorInfo> out;
  add(out, "model.embed_tokens.weight", {vocab, hidden});
  if (!config.tie_word_embeddings) add(out, "lm_head.weight", {vocab, hidden});
  add(out, "model.norm.weight", {hidden});
  for (int i = 0; i < config.n_blocks(); ++i) {
    const BlockConfig& block = config.blocks[size_t(i)];
    switch (block.attention) {
      case AttentionKind::Full: {
        const int64_t q_rows = int64_t(config.n_heads) * head_dim;
        const int64_t kv_rows = int64_t(block.n_kv_heads) * head_dim;
        add(out, block_tensor_name(i, "input_layernorm.weight"), {hidden});
        add(out, block_tensor_name(i, "self_attn.q_proj.weight"), {q_rows, hidden});
        add(out, block_tensor_name(i, "self_attn.k_proj.weight"), {kv_rows, hidden});
        add(out, block_tensor_name(i, "self_attn.v_proj.weight"), {kv_rows, hidden});
        add(out, block_tensor_name(i, "self_attn.o_proj.weight"), {hidden, q_rows});
        break;
      }
      case AttentionKind::Linear:
        add(out, block_tensor_name(i, "input_layernorm.weight"), {hidden});
        add(out, block_tensor_name(i, "self_attn.linear_attn.weight"), {hidden, hidden});
        break;
      case AttentionKind::None:
        break;
    }
    switch (block.ffn) {
      case FfnKind::SwiGlu: {
        const int64_t inter = block.intermediate_size;
        if (!block.ffn_norm_folded) {
          add(out, block_tensor_name(i, "post_attention_layernorm.weight"), {hidden});
        }
        add(out, block_tensor_name(i, "mlp.gate_proj.weight"), {inter, hidden});
        add(out, block_tensor_name(i, "mlp.up_proj.weight"), {inter, hidden});
        add(out, block_tensor_name(i, "mlp.down_proj.weight"), {hidden, inter});
        break;
      }
      case FfnKind::Linear:
        add(out, block_tensor_name(i, "post_attention_layernorm.weight"), {hidden});
        add(out, block_tensor_name(i, "mlp.linear_mlp.weight"), {hidden, hidden});
        break;
      case FfnKind::None:
        break;
    }
  }
  return out;
}

SyntheticWeightSource::SyntheticWeightSource(const ModelConfig& config, uint64_t seed)
    : seed_(seed) {
  config.validate();
  tensors_ = expected_tensors(config);
  const float residual_scale = 1.0f / std::sqrt(2.0f * float(std::max(1, config.n_blocks())));
  for (const auto& [name, t] : tensors_) {
    float scale;
    if (t.shape.size() == 1) {
      scale = 0.1f;  // norm weight: 1 + 0.1 * uniform
    } else if (name == "model.embed_tokens.weight") {
      scale = 1.0f;
    } else {
      scale = 1.0f / std::sqrt(float(std::max<int64_t>(1, t.cols())));
      if (ends_with(name, ".o_proj.weight") || ends_with(name, ".down_proj.weight") ||
          ends_with(name, ".linear_attn.weight") || ends_with(name, ".linear_mlp.weight")) {
        scale *= residual_scale;
      }
    }
    scales_[name] = scale;
  }
  int64_t params = 0;
  for (const auto& [_, t] : tensors_) params += t.rows() * t.cols();
  description_ = fmt::format("synthetic {} (seed {}, {} tensors, {} parameters)",
                             config.model_type.empty() ? "model" : config.model_type, seed_,
                             tensors_.size(), params);
}

std::string SyntheticWeightSource::description() const {
  return description_;
}

void SyntheticWeightSource::read_f32(const std::string& name, Range rows, Range cols,
                                     float* out) const {
  const TensorInfo& t = info(name);
  const Slice slice = resolve_slice(t, rows, cols, description_);
  const int64_t n_cols = t.cols();
  const int64_t r0 = slice.row_begin, r1 = slice.row_end, c0 = slice.col_begin;
  const float scale = scales_.at(name);
  const float offset = t.shape.size() == 1 ? 1.0f : 0.0f;
  const uint64_t key = splitmix64_mix(seed_ ^ fnv1a(name));
  const int64_t width = slice.cols();
  if (width == 0) return;
  for (int64_t r = r0; r < r1; ++r) {
    float* dst = out + (r - r0) * width;
    const uint64_t first = uint64_t(r * n_cols + c0);
    for (int64_t c = 0; c < width; ++c) {
      dst[c] = offset + scale * uniform_pm1(key, first + uint64_t(c));
    }
  }
}

}  // namespace parafuse

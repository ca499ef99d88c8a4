// Synthetic weights: the tensor list a config implies (HF names and shapes), values that every
// rank reproduces from the seed alone (any slice equals the same part of the whole), and
// scales that keep a deep random model's residual stream O(1).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/model/synthetic.h"

namespace parafuse {
namespace {

using ::testing::HasSubstr;

BlockConfig full_swiglu(int n_kv_heads, int64_t intermediate) {
  BlockConfig b;
  b.attention = AttentionKind::Full;
  b.n_kv_heads = n_kv_heads;
  b.ffn = FfnKind::SwiGlu;
  b.intermediate_size = intermediate;
  return b;
}

ModelConfig llama_config(int n_blocks, bool tie = false) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.n_heads = 4;
  c.head_dim = 8;
  c.tie_word_embeddings = tie;
  c.blocks.assign(size_t(n_blocks), full_swiglu(2, 48));
  return c;
}

// Nemotron-NAS style: every kind of attention and FFN part, plus a fused block.
ModelConfig nas_config() {
  ModelConfig c = llama_config(0);
  c.model_type = "nemotron-nas";
  c.blocks.push_back(full_swiglu(1, 40));  // 0: GQA 4:1
  BlockConfig b1;                          // 1: no attention, wide FFN
  b1.attention = AttentionKind::None;
  b1.intermediate_size = 96;
  BlockConfig b2;  // 2: both parts linear
  b2.attention = AttentionKind::Linear;
  b2.ffn = FfnKind::Linear;
  BlockConfig b3 = full_swiglu(4, 0);  // 3: attention only
  b3.ffn = FfnKind::None;
  BlockConfig b4;  // 4: a no-op block
  b4.attention = AttentionKind::None;
  b4.ffn = FfnKind::None;
  BlockConfig b5;  // 5: fused FFN of original blocks 1 and 2, norm folded into gate/up
  b5.attention = AttentionKind::None;
  b5.intermediate_size = 136;
  b5.fused_from = {1, 2};
  b5.ffn_norm_folded = true;
  c.blocks.insert(c.blocks.end(), {b1, b2, b3, b4, b5});
  return c;
}

std::vector<int64_t> shape_of(const std::map<std::string, TensorInfo>& t, const std::string& n) {
  const auto it = t.find(n);
  return it == t.end() ? std::vector<int64_t>{-1} : it->second.shape;
}

TEST(ExpectedTensors, LlamaNamesAndShapes) {
  const auto tensors = expected_tensors(llama_config(3));
  EXPECT_EQ(tensors.size(), 3u + 3u * 9u);
  using S = std::vector<int64_t>;
  EXPECT_EQ(shape_of(tensors, "model.embed_tokens.weight"), S({64, 32}));
  EXPECT_EQ(shape_of(tensors, "lm_head.weight"), S({64, 32}));
  EXPECT_EQ(shape_of(tensors, "model.norm.weight"), S({32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.input_layernorm.weight"), S({32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.self_attn.q_proj.weight"), S({32, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.self_attn.k_proj.weight"), S({16, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.self_attn.v_proj.weight"), S({16, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.self_attn.o_proj.weight"), S({32, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.post_attention_layernorm.weight"), S({32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.mlp.gate_proj.weight"), S({48, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.mlp.up_proj.weight"), S({48, 32}));
  EXPECT_EQ(shape_of(tensors, "model.layers.2.mlp.down_proj.weight"), S({32, 48}));
  for (const auto& [name, t] : tensors) {
    EXPECT_EQ(t.name, name);
    EXPECT_EQ(t.dtype, DType::F32);
  }
  const auto tied = expected_tensors(llama_config(3, /*tie=*/true));
  EXPECT_EQ(tied.size(), tensors.size() - 1);
  EXPECT_EQ(tied.count("lm_head.weight"), 0u);
}

TEST(ExpectedTensors, HeterogeneousNemotronNas) {
  const auto t = expected_tensors(nas_config());
  using S = std::vector<int64_t>;
  const S absent = {-1};
  // 0: GQA with one KV head.
  EXPECT_EQ(shape_of(t, "model.layers.0.self_attn.k_proj.weight"), S({8, 32}));
  EXPECT_EQ(shape_of(t, "model.layers.0.mlp.down_proj.weight"), S({32, 40}));
  // 1: attention-free; FFN keeps its norm.
  EXPECT_EQ(shape_of(t, "model.layers.1.input_layernorm.weight"), absent);
  EXPECT_EQ(shape_of(t, "model.layers.1.self_attn.q_proj.weight"), absent);
  EXPECT_EQ(shape_of(t, "model.layers.1.post_attention_layernorm.weight"), S({32}));
  EXPECT_EQ(shape_of(t, "model.layers.1.mlp.gate_proj.weight"), S({96, 32}));
  // 2: linear replacements, each with its norm.
  EXPECT_EQ(shape_of(t, "model.layers.2.input_layernorm.weight"), S({32}));
  EXPECT_EQ(shape_of(t, "model.layers.2.self_attn.linear_attn.weight"), S({32, 32}));
  EXPECT_EQ(shape_of(t, "model.layers.2.post_attention_layernorm.weight"), S({32}));
  EXPECT_EQ(shape_of(t, "model.layers.2.mlp.linear_mlp.weight"), S({32, 32}));
  EXPECT_EQ(shape_of(t, "model.layers.2.self_attn.q_proj.weight"), absent);
  EXPECT_EQ(shape_of(t, "model.layers.2.mlp.up_proj.weight"), absent);
  // 3: attention only.
  EXPECT_EQ(shape_of(t, "model.layers.3.self_attn.v_proj.weight"), S({32, 32}));
  EXPECT_EQ(shape_of(t, "model.layers.3.post_attention_layernorm.weight"), absent);
  EXPECT_EQ(shape_of(t, "model.layers.3.mlp.gate_proj.weight"), absent);
  // 5: fused, norm folded away.
  EXPECT_EQ(shape_of(t, "model.layers.5.post_attention_layernorm.weight"), absent);
  EXPECT_EQ(shape_of(t, "model.layers.5.mlp.up_proj.weight"), S({136, 32}));
  EXPECT_EQ(shape_of(t, "model.layers.5.mlp.down_proj.weight"), S({32, 136}));
  // 4 (no-op) owns nothing: count every tensor.
  for (const auto& [name, _] : t) EXPECT_THAT(name, ::testing::Not(HasSubstr("layers.4.")));
  EXPECT_EQ(t.size(), 3u + 9u + 4u + 4u + 5u + 0u + 3u);
}

TEST(SyntheticWeightSource, DeterministicInSeedAndName) {
  const ModelConfig config = nas_config();
  const SyntheticWeightSource a(config, 7), b(config, 7), other(config, 8);
  EXPECT_EQ(a.names(), b.names());
  for (const std::string& name : a.names()) {
    EXPECT_EQ(a.read_all(name), b.read_all(name)) << name;
    EXPECT_NE(a.read_all(name), other.read_all(name)) << name;
  }
  // Same shape, different names: different values.
  EXPECT_NE(a.read_all("model.layers.0.mlp.gate_proj.weight"),
            a.read_all("model.layers.0.mlp.up_proj.weight"));
  EXPECT_THAT(a.description(), HasSubstr("seed 7"));
}

TEST(SyntheticWeightSource, SlicesEqualTheSamePartOfTheWhole) {
  const SyntheticWeightSource source(nas_config(), 42);
  for (const std::string& name : source.names()) {
    SCOPED_TRACE(name);
    const TensorInfo t = source.info(name);
    const std::vector<float> all = source.read_all(name);
    ASSERT_EQ(int64_t(all.size()), t.rows() * t.cols());
    const int64_t r0 = t.rows() / 3, r1 = t.rows() - t.rows() / 4;
    const int64_t c0 = t.cols() / 5, c1 = t.cols() - 1;
    std::vector<float> part(size_t((r1 - r0) * (c1 - c0)));
    source.read_f32(name, {r0, r1}, {c0, c1}, part.data());
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t c = c0; c < c1; ++c) {
        ASSERT_EQ(part[size_t((r - r0) * (c1 - c0) + (c - c0))], all[size_t(r * t.cols() + c)]);
      }
    }
  }
  float unused[4];
  EXPECT_THROW(source.read_f32("model.norm.weight", {}, {30, 33}, unused), Error);
  try {
    source.read_f32("model.layers.4.mlp.up_proj.weight", {}, {}, unused);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("tensor 'model.layers.4.mlp.up_proj.weight' not found"));
  }
}

TEST(SyntheticWeightSource, ValueRanges) {
  const ModelConfig config = llama_config(8);
  const SyntheticWeightSource source(config, 1);
  auto max_abs = [&](const std::string& name) {
    float m = 0;
    for (float v : source.read_all(name)) m = std::max(m, std::abs(v));
    return m;
  };
  for (float v : source.read_all("model.layers.3.input_layernorm.weight")) {
    EXPECT_GE(v, 0.9f);
    EXPECT_LT(v, 1.1f);
  }
  const float in_scale = 1.0f / std::sqrt(32.0f);
  EXPECT_LE(max_abs("model.layers.0.self_attn.q_proj.weight"), in_scale);
  EXPECT_GT(max_abs("model.layers.0.self_attn.q_proj.weight"), 0.9f * in_scale);
  const float out_scale = in_scale / std::sqrt(2.0f * 8);
  EXPECT_LE(max_abs("model.layers.0.self_attn.o_proj.weight"), out_scale);
  EXPECT_GT(max_abs("model.layers.0.self_attn.o_proj.weight"), 0.9f * out_scale);
  EXPECT_LE(max_abs("model.layers.0.mlp.down_proj.weight"), out_scale * std::sqrt(32.0f / 48));
  EXPECT_LE(max_abs("model.embed_tokens.weight"), 1.0f);
  // Uniform, not all one value: the mean is near 0 and the spread near 1/sqrt(3).
  const std::vector<float> emb = source.read_all("model.embed_tokens.weight");
  double sum = 0, sum_sq = 0;
  for (float v : emb) sum += v, sum_sq += double(v) * v;
  EXPECT_NEAR(sum / double(emb.size()), 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(sum_sq / double(emb.size())), 1.0 / std::sqrt(3.0), 0.05);
}

// One token through a 160-block synthetic Llama (with one position, attention is o(v(x))):
// the residual stream must stay O(1), as the engine's deep synthetic runs rely on.
TEST(SyntheticWeightSource, DeepModelResidualStaysBounded) {
  const int n_blocks = 160;
  const ModelConfig config = llama_config(n_blocks);
  const SyntheticWeightSource source(config, 3);
  const int64_t h = config.hidden_size;
  auto rms = [](const std::vector<float>& x) {
    double s = 0;
    for (float v : x) s += double(v) * v;
    return std::sqrt(s / double(x.size()));
  };
  auto norm = [&](const std::vector<float>& x, const std::string& weight) {
    const std::vector<float> g = source.read_all(weight);
    const double r = rms(x);
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = float(x[i] / r) * g[i];
    return y;
  };
  auto matvec = [&](const std::string& weight, const std::vector<float>& x) {
    const TensorInfo t = source.info(weight);
    const std::vector<float> w = source.read_all(weight);
    std::vector<float> y(size_t(t.rows()), 0.0f);
    for (int64_t r = 0; r < t.rows(); ++r) {
      for (int64_t c = 0; c < t.cols(); ++c)
        y[size_t(r)] += w[size_t(r * t.cols() + c)] * x[size_t(c)];
    }
    return y;
  };
  std::vector<float> x(static_cast<size_t>(h));
  source.read_f32("model.embed_tokens.weight", {5, 6}, {}, x.data());
  const double start = rms(x);
  const int group = config.n_heads / config.blocks[0].n_kv_heads;
  for (int i = 0; i < n_blocks; ++i) {
    const std::vector<float> v = matvec(block_tensor_name(i, "self_attn.v_proj.weight"),
                                        norm(x, block_tensor_name(i, "input_layernorm.weight")));
    std::vector<float> heads(size_t(config.n_heads * config.head_dim));
    for (size_t j = 0; j < heads.size(); ++j) {
      const size_t head = j / size_t(config.head_dim), d = j % size_t(config.head_dim);
      heads[j] = v[(head / size_t(group)) * size_t(config.head_dim) + d];
    }
    const std::vector<float> attn = matvec(block_tensor_name(i, "self_attn.o_proj.weight"), heads);
    for (size_t j = 0; j < x.size(); ++j) x[j] += attn[j];
    const std::vector<float> hn = norm(x, block_tensor_name(i, "post_attention_layernorm.weight"));
    const std::vector<float> gate = matvec(block_tensor_name(i, "mlp.gate_proj.weight"), hn);
    std::vector<float> act = matvec(block_tensor_name(i, "mlp.up_proj.weight"), hn);
    for (size_t j = 0; j < act.size(); ++j) act[j] *= gate[j] / (1.0f + std::exp(-gate[j]));
    const std::vector<float> ffn = matvec(block_tensor_name(i, "mlp.down_proj.weight"), act);
    for (size_t j = 0; j < x.size(); ++j) x[j] += ffn[j];
  }
  EXPECT_GT(rms(x), 0.5 * start);
  EXPECT_LT(rms(x), 2.0 * start) << "residual stream grew from " << start << " to " << rms(x);
}

TEST(SyntheticWeightSource, RejectsAnInvalidConfig) {
  ModelConfig config = llama_config(2);
  config.blocks[1].n_kv_heads = 3;  // does not divide 4 heads
  EXPECT_THROW(SyntheticWeightSource(config, 1), Error);
}

}  // namespace
}  // namespace parafuse

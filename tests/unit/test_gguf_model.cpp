// The embedded model, SmolLM2-135M-Instruct (Q4_1 with a Q8_0 embedding), read through
// GgufFile / GgufWeightSource / config_from_gguf and checked against numbers printed by the
// Python `gguf` package. Skips with a reason when cluster/setup.sh has not fetched the model.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model_config.h"

namespace parafuse {
namespace {

const char* kModelPath = PF_MODEL_CACHE "/SmolLM2-135M-Instruct.Q4_1.gguf";

class EmbeddedModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kModelPath)) {
      GTEST_SKIP() << "embedded model not downloaded: run cluster/setup.sh";
    }
    file_ = std::make_shared<GgufFile>(kModelPath);
    source_ = std::make_unique<GgufWeightSource>(file_);
  }
  std::vector<float> read(const std::string& name, Range rows, Range cols) const {
    const TensorInfo info = source_->info(name);
    const int64_t n_rows = (rows.end == -1 ? info.rows() : rows.end) - rows.begin;
    const int64_t n_cols = (cols.end == -1 ? info.cols() : cols.end) - cols.begin;
    std::vector<float> out(size_t(n_rows * n_cols));
    source_->read_f32(name, rows, cols, out.data());
    return out;
  }
  std::shared_ptr<GgufFile> file_;
  std::unique_ptr<GgufWeightSource> source_;
};

TEST_F(EmbeddedModel, MetadataAndShapes) {
  EXPECT_EQ(file_->version(), 3u);
  EXPECT_EQ(file_->get_string("general.architecture"), "llama");
  EXPECT_EQ(file_->tensors().size(), 272u);
  EXPECT_EQ(file_->get_strings("tokenizer.ggml.tokens").size(), 49152u);
  EXPECT_EQ(source_->info("model.embed_tokens.weight").shape, (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(source_->info("model.embed_tokens.weight").dtype, DType::Q8_0);
  EXPECT_EQ(source_->info("model.layers.0.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{192, 576}));
  EXPECT_EQ(source_->info("model.layers.29.mlp.down_proj.weight").shape,
            (std::vector<int64_t>{576, 1536}));
  EXPECT_EQ(source_->info("model.layers.29.mlp.down_proj.weight").dtype, DType::Q4_1);
  EXPECT_EQ(source_->info("model.norm.weight").shape, (std::vector<int64_t>{576}));
  EXPECT_FALSE(source_->has("lm_head.weight"));
}

TEST_F(EmbeddedModel, Config) {
  const ModelConfig config = config_from_gguf(*file_);
  EXPECT_EQ(config.n_blocks(), 30);
  EXPECT_EQ(config.hidden_size, 576);
  EXPECT_EQ(config.n_heads, 9);
  EXPECT_EQ(config.head_dim, 64);
  EXPECT_EQ(config.blocks[0].n_kv_heads, 3);
  EXPECT_EQ(config.blocks[29].intermediate_size, 1536);
  EXPECT_EQ(config.vocab_size, 49152);
  EXPECT_TRUE(config.tie_word_embeddings);
  EXPECT_EQ(config.rope_theta, 100000.0);
  EXPECT_FLOAT_EQ(float(config.rms_norm_eps), 1e-5f);
  EXPECT_EQ(config.max_position_embeddings, 8192);
  EXPECT_EQ(config.bos_token_id, 1);
  EXPECT_EQ(config.eos_token_ids, std::vector<int>{2});
}

// Expected values from the Python `gguf` package:
//   r = gguf.GGUFReader(path); t = {x.name: x for x in r.tensors}
//   w = gguf.quants.dequantize(t[name].data, t[name].tensor_type)   # numpy, GGUF row order
// printed with '%.9g'. Both sides compute d * q (+ m) in float32, so they agree exactly.
void expect_values(const std::vector<float>& got, const std::vector<float>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], expected[i]) << i;
}

TEST_F(EmbeddedModel, DequantizedValuesMatchPythonGguf) {
  // token_embd.weight (Q8_0): w[1000, 0:4], w[1000, 40:44], w[49151, 572:576]
  expect_values(read("model.embed_tokens.weight", {1000, 1001}, {0, 4}),
                {-0.11193848f, -0.07395935f, 0.037979126f, -0.017990112f});
  expect_values(read("model.embed_tokens.weight", {1000, 1001}, {40, 44}),
                {0.091358185f, -0.062597275f, -0.101509094f, 0.035528183f});
  expect_values(read("model.embed_tokens.weight", {49151, 49152}, {572, 576}),
                {0.07819176f, 0.128582f, -0.11989403f, -0.04170227f});
  // blk.0.ffn_down.weight (Q4_1): w[5, 100:104]
  expect_values(read("model.layers.0.mlp.down_proj.weight", {5, 6}, {100, 104}),
                {-0.15640259f, -0.032806396f, 0.12168884f, 0.12168884f});
  // blk.0.attn_norm.weight (F32): w[0:3]
  expect_values(read("model.layers.0.input_layernorm.weight", {}, {0, 3}),
                {0.013977051f, 0.023803711f, -0.01977539f});
}

TEST_F(EmbeddedModel, KRowsAreUnpermuted) {
  // blk.0.attn_k.weight: 3 kv heads of 64. HF row r sits at GGUF row h*64 + 2*j + t where
  // h = r/64, t = (r%64)/32, j = r%32: HF 1 -> GGUF 2, HF 33 -> GGUF 3, HF 100 -> GGUF 73.
  // Python: w[2, 0:4], w[3, 0:4], w[73, 0:4] of the dequantized (permuted) GGUF tensor; also
  // equal to w.reshape(3, 32, 2, 576).swapaxes(1, 2).reshape(192, 576)[[1, 33, 100], 0:4].
  const std::string k = "model.layers.0.self_attn.k_proj.weight";
  expect_values(read(k, {1, 2}, {0, 4}), {0.20336914f, 0.09136963f, 0.20336914f, -0.1326294f});
  expect_values(read(k, {33, 34}, {0, 4}),
                {-0.099121094f, 0.22955322f, -0.23059082f, -0.36206055f});
  expect_values(read(k, {100, 101}, {0, 4}),
                {0.297241211f, -0.075012207f, 0.545410156f, 0.545410156f});
  // Q of the last block (9 heads): w.reshape(9, 32, 2, 576).swapaxes(1, 2)...[70, 10:14]
  expect_values(read("model.layers.29.self_attn.q_proj.weight", {70, 71}, {10, 14}),
                {0.14685059f, -0.051635742f, -0.0847168f, 0.014526367f});
}

TEST_F(EmbeddedModel, SlicedReadEqualsTheSliceOfTheWholeTensor) {
  const std::string name = "model.layers.3.self_attn.q_proj.weight";
  const std::vector<float> all = source_->read_all(name);
  const std::vector<float> part = read(name, {64, 130}, {17, 300});
  for (int r = 0; r < 66; ++r) {
    for (int c = 0; c < 283; ++c) {
      ASSERT_EQ(part[size_t(r * 283 + c)], all[size_t((64 + r) * 576 + 17 + c)]);
    }
  }
}

}  // namespace
}  // namespace parafuse

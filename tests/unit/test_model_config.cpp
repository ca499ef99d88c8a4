// ModelConfig tests: HF config.json for Llama (with Llama-3 RoPE scaling) and Nemotron-NAS
// (heterogeneous and fused blocks), the round trip through to_hf_config_json, RoPE frequencies
// against numbers computed in Python, and a corpus of bad config.json texts, each of which must
// give one Error naming the file, the key and the problem.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "kernels/core/error.h"
#include "runtime/model/model_config.h"

namespace parafuse {
namespace {

using ::testing::HasSubstr;

// Llama-3.1-8B's config.json, trimmed to the keys we read plus a few we ignore.
const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 128256,
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "num_hidden_layers": 32,
  "num_attention_heads": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "max_position_embeddings": 131072,
  "tie_word_embeddings": false,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "torch_dtype": "bfloat16",
  "hidden_act": "silu"
})";

const char* kSmolLm2 = R"({
  "model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
  "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
  "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": null,
  "tie_word_embeddings": true, "max_position_embeddings": 8192,
  "bos_token_id": 1, "eos_token_id": 2
})";

// A Nemotron-NAS (DeciLM) config: a full block, an attention-free block, a linear-attention
// block with no FFN, a linear FFN, and a fused block with our explicit keys.
const char* kNemotron = R"({
  "architectures": ["DeciLMForCausalLM"],
  "model_type": "nemotron-nas",
  "vocab_size": 128256, "hidden_size": 8192, "num_attention_heads": 64,
  "num_hidden_layers": 5, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "max_position_embeddings": 131072, "bos_token_id": 128000, "eos_token_id": 128009,
  "block_configs": [
    {"attention": {"n_heads_in_group": 8, "no_op": false, "replace_with_linear": false,
                   "sparsify": null},
     "ffn": {"ffn_mult": 2.625, "no_op": false, "replace_with_linear": false}},
    {"attention": {"n_heads_in_group": null, "no_op": true, "replace_with_linear": false},
     "ffn": {"ffn_mult": 1.3, "no_op": false, "replace_with_linear": false}},
    {"attention": {"n_heads_in_group": null, "no_op": false, "replace_with_linear": true},
     "ffn": {"ffn_mult": null, "no_op": true, "replace_with_linear": false}},
    {"attention": {"n_heads_in_group": 16},
     "ffn": {"ffn_mult": null, "replace_with_linear": true}},
    {"attention": {"no_op": true},
     "ffn": {"ffn_mult": 1.0, "intermediate_size": 20480, "fused_from": [5, 6, 7],
             "ffn_norm_folded": true}}
  ]
})";

TEST(ModelConfig, ParsesLlama31) {
  const ModelConfig c = parse_hf_config(kLlama31, "config.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  ASSERT_EQ(c.n_blocks(), 32);
  for (const BlockConfig& b : c.blocks) {
    EXPECT_EQ(b.attention, AttentionKind::Full);
    EXPECT_EQ(b.n_kv_heads, 8);
    EXPECT_EQ(b.ffn, FfnKind::SwiGlu);
    EXPECT_EQ(b.intermediate_size, 14336);
  }
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_scaling.llama3);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(c.summary(),
            "llama: 32 blocks, hidden 4096, 32 heads x 128, vocab 128256, rope theta 500000 "
            "(llama3 x8)\n  blocks 0-31: attention full (8 kv heads), ffn swiglu 14336");
}

// Expected inv_freq from a numpy port of HF transformers' _compute_default_rope_parameters
// and _compute_llama3_parameters (float32 like torch):
//   inv = 1 / 500000 ** (np.arange(0, 128, 2).astype(np.float32) / 128)
//   wavelen = 2*pi / inv; low_wl = 8192 / 1; high_wl = 8192 / 4
//   scaled = where(wavelen > low_wl, inv / 8, inv)
//   smooth = (8192 / wavelen - 1) / (4 - 1); smoothed = (1 - smooth) * scaled / 8 + smooth * scaled
//   result = where(high_wl <= wavelen <= low_wl, smoothed, scaled)
// Indices 29..34 are the smoothed band; printed with '%.9g'.
TEST(ModelConfig, Llama3RopeInvFreqMatchesHf) {
  const std::vector<float> inv_freq = rope_inv_freq(parse_hf_config(kLlama31, "config.json"));
  ASSERT_EQ(inv_freq.size(), 64u);
  const std::vector<std::pair<int, float>> expected = {{0, 1.0f},
                                                       {1, 0.814617217f},
                                                       {20, 0.0165604409f},
                                                       {29, 0.00216657063f},
                                                       {31, 0.00085675146f},
                                                       {34, 0.000178507791f},
                                                       {40, 3.42810235e-05f},
                                                       {63, 3.06892588e-07f}};
  for (const auto& [i, value] : expected) {
    EXPECT_NEAR(inv_freq[size_t(i)], value, 2e-6 * value) << "index " << i;
  }
}

TEST(ModelConfig, PlainRopeInvFreq) {
  // numpy: 1 / 100000 ** (np.arange(0, 64, 2).astype(np.float32) / 64), '%.9g'
  const std::vector<float> inv_freq = rope_inv_freq(parse_hf_config(kSmolLm2, "config.json"));
  ASSERT_EQ(inv_freq.size(), 32u);
  EXPECT_EQ(inv_freq[0], 1.0f);
  EXPECT_NEAR(inv_freq[1], 0.697830558f, 1e-6 * 0.7);
  EXPECT_NEAR(inv_freq[16], 0.00316227786f, 1e-6 * 0.00316);
  EXPECT_NEAR(inv_freq[31], 1.43301268e-05f, 1e-6 * 1.43e-5);
}

// llama.cpp's converter stores Llama-3.1 scaling in a GGUF as per-frequency divisors (F32), by
// its own formula: 1 where wavelen < high_wl, factor where wavelen > low_wl, else
// 1 / ((1 - smooth) / factor + smooth). Dividing by them gives HF's llama3 inv_freq.
TEST(ModelConfig, RopeFreqFactorsMatchLlama3Scaling) {
  const ModelConfig hf = parse_hf_config(kLlama31, "config.json");
  ASSERT_TRUE(hf.rope_scaling.llama3);
  const RopeScaling& sc = hf.rope_scaling;
  const double low_wl = double(sc.original_max_position) / sc.low_freq_factor;
  const double high_wl = double(sc.original_max_position) / sc.high_freq_factor;
  ModelConfig gguf_like = hf;
  gguf_like.rope_scaling = RopeScaling{};
  for (int i = 0; i < hf.head_dim / 2; ++i) {
    const double freq = 1.0 / std::pow(hf.rope_theta, double(2 * i) / double(hf.head_dim));
    const double wavelen = 2 * M_PI / freq;
    double f = 1.0;
    if (wavelen > low_wl) {
      f = sc.factor;
    } else if (wavelen >= high_wl) {
      const double smooth = (double(sc.original_max_position) / wavelen - sc.low_freq_factor) /
                            (sc.high_freq_factor - sc.low_freq_factor);
      f = 1.0 / ((1 - smooth) / sc.factor + smooth);
    }
    gguf_like.rope_freq_factors.push_back(double(float(f)));  // stored as F32
  }
  gguf_like.validate();
  const std::vector<float> a = rope_inv_freq(hf), b = rope_inv_freq(gguf_like);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-6 * a[i]) << "index " << i;

  // The factors travel through config.json (a parafuse key) and back.
  const ModelConfig back = parse_hf_config(to_hf_config_json(gguf_like), "round-trip.json");
  EXPECT_EQ(back.rope_freq_factors, gguf_like.rope_freq_factors);
  EXPECT_FALSE(back.rope_scaling.llama3);

  ModelConfig both = hf;
  both.rope_freq_factors = gguf_like.rope_freq_factors;
  EXPECT_THROW(
      {
        try {
          both.validate();
        } catch (const Error& e) {
          EXPECT_THAT(e.what(), HasSubstr("both llama3 rope_scaling and per-frequency factors"));
          throw;
        }
      },
      Error);
}

TEST(ModelConfig, ParsesSmolLm2) {
  const ModelConfig c = parse_hf_config(kSmolLm2, "config.json");
  EXPECT_EQ(c.n_blocks(), 30);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.blocks[7].n_kv_heads, 3);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.rope_scaling.llama3);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});
}

TEST(ModelConfig, ParsesNemotronNasBlocks) {
  const ModelConfig c = parse_hf_config(kNemotron, "config.json");
  EXPECT_EQ(c.model_type, "nemotron-nas");
  ASSERT_EQ(c.n_blocks(), 5);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{128009});
  // int(2 * ffn_mult * 8192 / 3) rounded up to 256: 2.625 -> 14336, 1.3 -> 7099 -> 7168.
  EXPECT_EQ(c.blocks[0].attention, AttentionKind::Full);
  EXPECT_EQ(c.blocks[0].n_kv_heads, 8);
  EXPECT_EQ(c.blocks[0].intermediate_size, 14336);
  EXPECT_EQ(c.blocks[1].attention, AttentionKind::None);
  EXPECT_EQ(c.blocks[1].intermediate_size, 7168);
  EXPECT_EQ(c.blocks[2].attention, AttentionKind::Linear);
  EXPECT_EQ(c.blocks[2].ffn, FfnKind::None);
  EXPECT_EQ(c.blocks[3].n_kv_heads, 4);
  EXPECT_EQ(c.blocks[3].ffn, FfnKind::Linear);
  EXPECT_EQ(c.blocks[4].intermediate_size, 20480);  // explicit size wins over ffn_mult
  EXPECT_EQ(c.blocks[4].fused_from, (std::vector<int>{5, 6, 7}));
  EXPECT_TRUE(c.blocks[4].ffn_norm_folded);
  EXPECT_THAT(c.summary(), HasSubstr("\n  block 1: attention none, ffn swiglu 7168\n"));
  EXPECT_THAT(c.summary(),
              HasSubstr("block 4: attention none, ffn swiglu 20480 (fused from blocks 5,6,7) "
                        "(norm folded)"));
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.llama3, b.rope_scaling.llama3);
  EXPECT_EQ(a.rope_scaling.factor, b.rope_scaling.factor);
  EXPECT_EQ(a.rope_scaling.low_freq_factor, b.rope_scaling.low_freq_factor);
  EXPECT_EQ(a.rope_scaling.high_freq_factor, b.rope_scaling.high_freq_factor);
  EXPECT_EQ(a.rope_scaling.original_max_position, b.rope_scaling.original_max_position);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  ASSERT_EQ(a.n_blocks(), b.n_blocks());
  for (int i = 0; i < a.n_blocks(); ++i) {
    SCOPED_TRACE(i);
    const BlockConfig& x = a.blocks[size_t(i)];
    const BlockConfig& y = b.blocks[size_t(i)];
    EXPECT_EQ(x.attention, y.attention);
    EXPECT_EQ(x.n_kv_heads, y.n_kv_heads);
    EXPECT_EQ(x.ffn, y.ffn);
    EXPECT_EQ(x.intermediate_size, y.intermediate_size);
    EXPECT_EQ(x.fused_from, y.fused_from);
    EXPECT_EQ(x.ffn_norm_folded, y.ffn_norm_folded);
  }
  EXPECT_EQ(a.summary(), b.summary());
}

TEST(ModelConfig, RoundTripsThroughHfJson) {
  for (const char* text : {kLlama31, kSmolLm2, kNemotron}) {
    const ModelConfig original = parse_hf_config(text, "config.json");
    const std::string json = to_hf_config_json(original);
    SCOPED_TRACE(json);
    expect_same(original, parse_hf_config(json, "written.json"));
    EXPECT_EQ(to_hf_config_json(parse_hf_config(json, "written.json")), json);  // stable
  }
  // A plain Llama stays in the Llama form; anything else is written as Nemotron-NAS.
  EXPECT_THAT(to_hf_config_json(parse_hf_config(kSmolLm2, "c")),
              HasSubstr("\"model_type\": \"llama\""));
  ModelConfig fused = parse_hf_config(kSmolLm2, "c");
  fused.blocks[3].attention = AttentionKind::None;
  fused.blocks[3].n_kv_heads = 0;
  fused.blocks[3].intermediate_size = 3000;  // not a multiple of 256: only the explicit key works
  fused.blocks[3].fused_from = {3, 4};
  fused.blocks[3].ffn_norm_folded = true;
  fused.blocks.erase(fused.blocks.begin() + 4);
  const std::string json = to_hf_config_json(fused);
  EXPECT_THAT(json, HasSubstr("\"model_type\": \"nemotron-nas\""));
  ModelConfig back = parse_hf_config(json, "fused.json");
  EXPECT_EQ(back.model_type, "nemotron-nas");
  back.model_type = fused.model_type;
  expect_same(fused, back);
}

TEST(ModelConfig, LoadsFromFileAndNamesAMissingOne) {
  const std::string path = ::testing::TempDir() + "/config.json";
  std::ofstream(path) << kSmolLm2;
  EXPECT_EQ(load_hf_config(path).n_blocks(), 30);
  try {
    load_hf_config("/nonexistent/config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("model config '/nonexistent/config.json' does not exist"));
  }
}

TEST(ModelConfig, ValidateNamesTheBlock) {
  ModelConfig c = parse_hf_config(kSmolLm2, "config.json");
  c.blocks[4].n_kv_heads = 2;
  try {
    c.validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("block 4: n_kv_heads = 2 must be positive and divide "
                                    "num_attention_heads 9"));
  }
  c = parse_hf_config(kSmolLm2, "config.json");
  c.blocks.clear();
  EXPECT_THROW(c.validate(), Error);
  EXPECT_EQ(block_tensor_name(7, "mlp.up_proj.weight"), "model.layers.7.mlp.up_proj.weight");
}

// kSmolLm2 with `key` set to `value` (raw JSON text); an empty value removes the key.
std::string smol_with(const std::string& key, const std::string& value) {
  std::string text = kSmolLm2;
  const std::string needle = "\"" + key + "\": ";
  const size_t at = text.find(needle);
  if (at == std::string::npos) return text.substr(0, text.rfind('}')) + ", " + needle + value + "}";
  size_t end = at + needle.size();
  int depth = 0;
  while (end < text.size() && (depth > 0 || (text[end] != ',' && text[end] != '\n'))) {
    if (text[end] == '{' || text[end] == '[') ++depth;
    if (text[end] == '}' || text[end] == ']') --depth;
    ++end;
  }
  if (value.empty()) return text.substr(0, at) + "\"ignored_key\": 0" + text.substr(end);
  return text.substr(0, at) + needle + value + text.substr(end);
}

std::string nemotron_with_block(const std::string& block, int n_layers = 1) {
  return fmt::format(
      R"({{"model_type": "nemotron-nas", "vocab_size": 100, "hidden_size": 4096,
          "num_attention_heads": 32, "num_hidden_layers": {}, "block_configs": [{}]}})",
      n_layers, block);
}

struct BadConfig {
  std::string text;
  std::string expected;
};

// Nemotron-Super-49B's config.json shape: every key HF writes, most of which parafuse does not
// read (null, false, or irrelevant to inference), plus a '_' note.
const char* kNemotronAllKeys = R"({
  "_name_or_path": "nvidia/Llama-3_3-Nemotron-Super-49B-v1",
  "_reconstructed": {"from": "gguf", "note": "any value"},
  "architectures": ["DeciLMForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_decilm.DeciLMConfig",
               "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"},
  "block_configs": [
    {"attention": {"n_heads_in_group": 8, "no_op": false, "num_sink_tokens": null,
                   "replace_with_linear": false, "sparsify": null, "unshifted_sink": false,
                   "use_prefill_window_in_sink_attention": false, "window_length": null},
     "ffn": {"ffn_mult": 2.625, "no_op": false, "replace_with_linear": false, "sparsify": null}},
    {"attention": {"n_heads_in_group": null, "no_op": true, "num_sink_tokens": null,
                   "replace_with_linear": false, "sparsify": null, "unshifted_sink": false,
                   "use_prefill_window_in_sink_attention": false, "window_length": null},
     "ffn": {"ffn_mult": 1.3125, "no_op": false, "replace_with_linear": false, "sparsify": null}}
  ],
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "pad_token_id": null,
  "cls_token_id": 7, "hidden_act": "silu", "hidden_size": 8192, "initializer_range": 0.02,
  "intermediate_size": null, "max_position_embeddings": 131072, "mlp_bias": false,
  "model_type": "nemotron-nas", "num_attention_heads": 64, "num_hidden_layers": 2,
  "num_key_value_heads": null, "pretraining_tp": 1, "quantization_config": null,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "transformers_version": "4.48.3", "use_cache": true, "vocab_size": 128256
})";

TEST(ModelConfig, AcceptsTheKeysHfWritesThatParafuseDoesNotRead) {
  const ModelConfig c = parse_hf_config(kNemotronAllKeys, "config.json");
  ASSERT_EQ(c.n_blocks(), 2);
  EXPECT_EQ(c.blocks[0].n_kv_heads, 8);
  EXPECT_EQ(c.blocks[0].intermediate_size, 14336);  // int(2 * 2.625 * 8192 / 3)
  EXPECT_EQ(c.blocks[1].intermediate_size, 7168);   // int(2 * 1.3125 * 8192 / 3)
  EXPECT_EQ(c.blocks[1].attention, AttentionKind::None);
  EXPECT_TRUE(c.rope_scaling.llama3);
  // null is absent: the defaults hold.
  const ModelConfig d = parse_hf_config(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "num_attention_heads": 4,
          "num_hidden_layers": 1, "intermediate_size": 128, "head_dim": null, "rope_theta": null,
          "rms_norm_eps": null, "bos_token_id": null, "eos_token_id": null, "rope_scaling": null,
          "num_key_value_heads": null, "tie_word_embeddings": null})",
      "config.json");
  EXPECT_EQ(d.head_dim, 16);
  EXPECT_EQ(d.rope_theta, 10000.0);
  EXPECT_EQ(d.rms_norm_eps, 1e-5);
  EXPECT_EQ(d.bos_token_id, -1);
  EXPECT_TRUE(d.eos_token_ids.empty());
  EXPECT_EQ(d.blocks[0].n_kv_heads, 4);
}

// An unknown key that is a typo of a key parafuse reads is refused; other unknown keys are not.
TEST(ModelConfig, RefusesTyposOfKeysItReads) {
  const std::vector<BadConfig> cases = {
      {smol_with("num_attention_heads", "9").insert(1, R"("num_attention_head": 9, )"),
       "config.json: unknown key 'num_attention_head' (did you mean 'num_attention_heads'?)"},
      {smol_with("rope_theta", "").insert(1, R"("rope_thetta": 500000, )"),
       "config.json: unknown key 'rope_thetta' (did you mean 'rope_theta'?)"},
      {smol_with("hidden_size", "").insert(1, R"("hiden_size": 576, )"),
       "config.json: unknown key 'hiden_size' (did you mean 'hidden_size'?)"},
      {nemotron_with_block(R"({"attention": {"n_heads_in_group": 8, "no_opp": true},
                                "ffn": {"ffn_mult": 1.0}})"),
       "config.json: unknown key 'no_opp' in block_configs[0].attention (did you mean 'no_op'?)"},
      {nemotron_with_block(R"({"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mul": 1.0}})"),
       "config.json: unknown key 'ffn_mul' in block_configs[0].ffn (did you mean 'ffn_mult'?)"},
      {smol_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
          "high_freq_factor": 4, "original_max_position_embeddings": 8192, "factr": 2})"),
       "config.json: unknown key 'factr' in rope_scaling (did you mean 'factor'?)"},
      {R"({"model_type": "llama", "model_type": "llama"})",
       "config.json: key 'model_type' is given twice"},
  };
  for (const BadConfig& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      parse_hf_config(c.text, "config.json");
      ADD_FAILURE() << "no error; expected: " << c.expected;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.expected);
    }
  }
  // Keys nobody reads and '_' notes pass, even when a '_' note looks like a key that is read.
  EXPECT_NO_THROW(parse_hf_config(smol_with("torch_dtype", "\"bfloat16\""), "config.json"));
  EXPECT_NO_THROW(parse_hf_config(smol_with("_hidden_sizes", "[1]"), "config.json"));
  EXPECT_NO_THROW(parse_hf_config(smol_with("rope_interleaved", "false"), "config.json"));
}

// HF keys parafuse ignores when unset, but that would change the math when set.
TEST(ModelConfig, RefusesHfFeaturesItDoesNotImplement) {
  const auto block = [](const std::string& attention_extra, const std::string& ffn_extra = "") {
    return nemotron_with_block(R"({"attention": {"n_heads_in_group": 8)" + attention_extra +
                               R"(}, "ffn": {"ffn_mult": 1.0)" + ffn_extra + "}}");
  };
  const std::vector<BadConfig> cases = {
      {smol_with("attention_bias", "true"),
       "config.json: attention_bias is true, but parafuse's attention projections have no bias"},
      {smol_with("mlp_bias", "true"),
       "config.json: mlp_bias is true, but parafuse's FFN projections have no bias"},
      {smol_with("hidden_act", "\"gelu\""),
       "config.json: hidden_act \"gelu\" is not supported (parafuse's FFN is SwiGLU: silu)"},
      {block(R"(, "sparsify": ["q_proj"])"),
       "config.json: block_configs[0].attention.sparsify is set (an array), but parafuse does not "
       "implement sparsified attention"},
      {block(R"(, "window_length": 4096)"),
       "config.json: block_configs[0].attention.window_length is set (number 4096), but parafuse "
       "does not implement windowed attention"},
      {block(R"(, "num_sink_tokens": 4)"),
       "config.json: block_configs[0].attention.num_sink_tokens is set (number 4), but parafuse "
       "does not implement attention sinks"},
      {block("", R"(, "sparsify": {"ratio": 0.5})"),
       "config.json: block_configs[0].ffn.sparsify is set (an object), but parafuse does not "
       "implement sparsified FFNs"},
  };
  for (const BadConfig& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      parse_hf_config(c.text, "config.json");
      ADD_FAILURE() << "no error; expected: " << c.expected;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.expected);
    }
  }
  // Set to their harmless values, they pass.
  EXPECT_NO_THROW(parse_hf_config(smol_with("attention_bias", "false"), "config.json"));
  EXPECT_NO_THROW(parse_hf_config(smol_with("hidden_act", "\"silu\""), "config.json"));
  EXPECT_NO_THROW(
      parse_hf_config(block(R"(, "sparsify": null, "window_length": null)"), "config.json"));
}

TEST(ModelConfig, BadConfigsGiveOneClearError) {
  const std::string good_attention = R"("attention": {"n_heads_in_group": 8})";
  const std::string good_ffn = R"("ffn": {"ffn_mult": 1.0})";
  const std::vector<BadConfig> cases = {
      {R"({"model_type": "llama", )",
       "config.json: invalid JSON: parse error at line 1, column 25: syntax error while parsing "
       "object key - unexpected end of input; expected string literal"},
      {"", "config.json: invalid JSON"},
      {R"({"model_type": "llama"} trailing)", "parse error at line 1, column"},
      {"[1, 2]", "config.json: the top level must be a JSON object, got an array"},
      {R"({"hidden_size": 4})", "config.json: required key 'model_type' is missing"},
      {smol_with("model_type", "\"gpt2\""),
       "config.json: model_type \"gpt2\" is not supported (supported: llama, nemotron-nas)"},
      {smol_with("model_type", "7"), "model_type must be a string, got number 7"},
      {smol_with("hidden_size", ""), "config.json: required key 'hidden_size' is missing"},
      {smol_with("hidden_size", "null"), "required key 'hidden_size' is missing"},
      {smol_with("hidden_size", "\"576\""),
       "config.json: hidden_size must be an integer (at least 1), got string \"576\""},
      {smol_with("hidden_size", "576.5"),
       "config.json: hidden_size must be an integer (at least 1), got number 576.5"},
      {smol_with("hidden_size", "-576"), "config.json: hidden_size must be at least 1, got -576"},
      {smol_with("hidden_size", "0"), "config.json: hidden_size must be at least 1, got 0"},
      {smol_with("hidden_size", "18446744073709551615"),
       "config.json: hidden_size must be at most 1099511627776, got 18446744073709551615"},
      {smol_with("num_hidden_layers", "0"),
       "config.json: num_hidden_layers must be from 1 to 1048576, got 0"},
      {smol_with("num_attention_heads", "7"),
       "config.json: hidden_size 576 is not a multiple of num_attention_heads 7"},
      {smol_with("num_key_value_heads", "4"),
       "config.json: block 0: n_kv_heads = 4 must be positive and divide num_attention_heads 9"},
      {smol_with("intermediate_size", "[1536]"),
       "config.json: intermediate_size must be an integer (at least 1), got an array"},
      {smol_with("head_dim", "63"), "head_dim = 63 must be positive and even"},
      {smol_with("rms_norm_eps", "\"1e-5\""),
       "config.json: rms_norm_eps must be a number (greater than 0), got string \"1e-5\""},
      {smol_with("rms_norm_eps", "-1e-5"),
       "config.json: rms_norm_eps must be greater than 0, got -1e-5"},
      {smol_with("tie_word_embeddings", "\"yes\""),
       "config.json: tie_word_embeddings must be true or false, got string \"yes\""},
      {smol_with("eos_token_id", "[2, \"x\"]"),
       "config.json: eos_token_id[1] must be an integer (at least 0), got string \"x\""},
      {smol_with("eos_token_id", "-3"), "config.json: eos_token_id must be at least 0, got -3"},
      {smol_with("rope_scaling", "[]"),
       "config.json: rope_scaling must be a JSON object, got an array"},
      {smol_with("rope_freq_factors", "4"),
       "config.json: rope_freq_factors must be a list of numbers, got number 4"},
      {smol_with("rope_freq_factors", "[1, \"x\"]"),
       "config.json: rope_freq_factors[1] must be a number, got string \"x\""},
      {smol_with("rope_freq_factors", "[1, 2]"),
       "RoPE frequency factors: 2 entries, but head_dim 64 has 32 frequencies"},
      {smol_with("rope_scaling", R"({"rope_type": "yarn", "factor": 4})"),
       "config.json: rope_scaling.rope_type \"yarn\" is not supported (supported: llama3, "
       "default)"},
      {smol_with("rope_scaling", R"({"type": "dynamic", "factor": 4})"),
       "config.json: rope_scaling.type \"dynamic\" is not supported"},
      {smol_with("rope_scaling", R"({"rope_type": "llama3", "low_freq_factor": 1,
          "high_freq_factor": 4, "original_max_position_embeddings": 8192})"),
       "config.json: required key 'rope_scaling.factor' is missing"},
      {smol_with("rope_scaling", R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
          "high_freq_factor": 1, "original_max_position_embeddings": 8192})"),
       "config.json: rope_scaling.high_freq_factor must be greater than low_freq_factor (4), got "
       "1"},
      {nemotron_with_block("{" + good_attention + ", " + good_ffn + "}", 1) + "x", "invalid JSON"},
      {R"({"model_type": "nemotron-nas", "vocab_size": 100, "hidden_size": 4096,
           "num_attention_heads": 32})",
       "config.json: required key 'block_configs' is missing"},
      {nemotron_with_block("", 0), "block_configs must be a non-empty list"},
      {nemotron_with_block("{" + good_attention + ", " + good_ffn + "}, 5", 2),
       "config.json: block_configs[1] must be a JSON object, got number"},
      {nemotron_with_block("{" + good_ffn + "}"),
       "required key 'block_configs[0].attention' is missing"},
      {nemotron_with_block(R"({"attention": {"n_heads_in_group": 5}, )" + good_ffn + "}"),
       "config.json: block_configs[0].attention.n_heads_in_group must divide "
       "num_attention_heads (32), got 5"},
      {nemotron_with_block(R"({"attention": {"n_heads_in_group": 0}, )" + good_ffn + "}"),
       "config.json: block_configs[0].attention.n_heads_in_group must be at least 1, got 0"},
      {nemotron_with_block(R"({"attention": {}, )" + good_ffn + "}"),
       "required key 'block_configs[0].attention.n_heads_in_group' is missing"},
      {nemotron_with_block(R"({"attention": {"no_op": true, "replace_with_linear": true}, )" +
                           good_ffn + "}"),
       "block_configs[0].attention has both no_op and replace_with_linear set"},
      {nemotron_with_block("{" + good_attention + R"(, "ffn": {"no_op": false}})"),
       "required key 'block_configs[0].ffn.ffn_mult' is missing"},
      {nemotron_with_block("{" + good_attention + R"(, "ffn": {"ffn_mult": -1.0}})"),
       "config.json: block_configs[0].ffn.ffn_mult must be in (0, 1000000), got -1.0"},
      {nemotron_with_block("{" + good_attention + R"(, "ffn": {"ffn_mult": 1e300}})"),
       "config.json: block_configs[0].ffn.ffn_mult must be in (0, 1000000), got 1e300"},
      {nemotron_with_block("{" + good_attention + R"(, "ffn": {"ffn_mult": 1, "fused_from": 3}})"),
       "config.json: block_configs[0].ffn.fused_from must be a list of block ids, got number 3"},
      {nemotron_with_block("{" + good_attention +
                           R"(, "ffn": {"ffn_mult": 1, "fused_from": [1, -2]}})"),
       "config.json: block_configs[0].ffn.fused_from[1] must be at least 0, got -2"},
      {nemotron_with_block("{" + good_attention +
                           R"(, "ffn": {"no_op": true, "ffn_norm_folded": true}})"),
       "block 0: fused_from / ffn_norm_folded are only meaningful for a SwiGLU FFN"},
      {nemotron_with_block("{" + good_attention + ", " + good_ffn + "}", 5),
       "config.json: num_hidden_layers must equal the number of block_configs (1), got 5"},
  };
  for (const BadConfig& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      parse_hf_config(c.text, "config.json");
      ADD_FAILURE() << "no error; expected: " << c.expected;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.expected));
    }
  }
}

}  // namespace
}  // namespace parafuse

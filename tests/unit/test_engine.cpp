// Engine end to end on the CPU backend: the KV cache (prefill == decode steps == chunked
// prefill), batching (two sequences in one step == each alone), and on the embedded SmolLM2
// model the perplexity of an English text.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generate.h"
#include "runtime/model/model_files.h"

using namespace parafuse;

namespace {

const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";
const std::string kTinyNas = std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-nas.json";
const std::string kSmolLM2 = std::string(PF_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";

// Max |a-b| / max |b|: logits of the same computation in a different order of float ops.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

std::vector<int32_t> test_tokens(int n, int vocab, int salt) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t((i * 37 + salt * 11 + 5) % vocab));
  return t;
}

// Logits of every position of `tokens`, one prefill of chunk `chunk` rows at a time.
std::vector<float> all_logits(Engine& e, const std::vector<int32_t>& tokens, size_t chunk) {
  e.add_sequence(7);
  std::vector<float> out;
  for (size_t b = 0; b < tokens.size(); b += chunk) {
    const size_t n = std::min(chunk, tokens.size() - b);
    SeqTokens s{7, std::span<const int32_t>(tokens).subspan(b, n), true};
    auto l = e.to_host(e.forward(std::span<const SeqTokens>(&s, 1)));
    out.insert(out.end(), l.begin(), l.end());
  }
  e.remove_sequence(7);
  return out;
}

class EngineKvCache : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineKvCache, PrefillEqualsDecodeStepsAndChunks) {
  ModelFiles m = open_model("synthetic:" + GetParam() + "@3");
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 256;
  eo.page_size = 4;  // many pages, so page tables are exercised
  Engine e(m.config, *m.weights, *backend, eo);
  const auto tokens = test_tokens(37, int(m.config.vocab_size), 1);
  const auto prefill = all_logits(e, tokens, tokens.size());
  const auto decode = all_logits(e, tokens, 1);
  const auto chunks = all_logits(e, tokens, 10);
  // Tolerance: same math, different summation order (BLAS blocking by m) -> float rounding.
  EXPECT_LT(max_rel_diff(decode, prefill), 1e-4);
  EXPECT_LT(max_rel_diff(chunks, prefill), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Synthetic, EngineKvCache, ::testing::Values(kTinyLlama, kTinyNas),
                         [](const auto& info) {
                           return info.param == kTinyLlama ? std::string("llama")
                                                           : std::string("nemotron_nas");
                         });

TEST(Engine, BatchOfTwoSequencesEqualsEachAlone) {
  ModelFiles m = open_model("synthetic:" + kTinyNas);
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 256;
  Engine e(m.config, *m.weights, *backend, eo);
  const auto a = test_tokens(13, 256, 2), b = test_tokens(5, 256, 3);
  const auto alone_a = all_logits(e, a, a.size());
  const auto alone_b = all_logits(e, b, b.size());
  e.add_sequence(1);
  e.add_sequence(2);
  SeqTokens steps[2] = {{1, a, true}, {2, b, true}};
  auto both = e.to_host(e.forward(steps));
  const size_t split = a.size() * 256;
  EXPECT_LT(max_rel_diff({both.begin(), both.begin() + long(split)}, alone_a), 1e-4);
  EXPECT_LT(max_rel_diff({both.begin() + long(split), both.end()}, alone_b), 1e-4);
  // A decode step of both after their prefills equals the next position of each alone.
  const int32_t next[2] = {9, 4};
  SeqTokens decode[2] = {{1, {&next[0], 1}, false}, {2, {&next[1], 1}, false}};
  auto step = e.to_host(e.forward(decode));
  auto a2 = a;
  a2.push_back(next[0]);
  const auto alone_a2 = all_logits(e, a2, a2.size());
  EXPECT_LT(
      max_rel_diff({step.begin(), step.begin() + 256}, {alone_a2.end() - 256, alone_a2.end()}),
      1e-4);
}

// Rows that want no logits skip the last stage's final layers (StepInputs::out_rows): a batch
// of sequences that want the last row's logits (next to one that wants every row's, so the out
// rows of two sequences touch) gives the logits an all-logits prefill gives those rows, and the
// cache behind the cut rows is whole: the next decode step matches too.
class EngineOutRows : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineOutRows, LastRowLogitsAndTheCacheMatchAnAllLogitsPrefill) {
  ModelFiles m = open_model("synthetic:" + GetParam() + "@3");
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 256;
  eo.page_size = 4;
  Engine e(m.config, *m.weights, *backend, eo);
  const int vocab = int(m.config.vocab_size);
  const std::vector<std::vector<int32_t>> prompts = {
      test_tokens(13, vocab, 4), test_tokens(5, vocab, 5), test_tokens(7, vocab, 6)};
  const bool wants_all[3] = {false, true, false};
  std::vector<std::vector<float>> alone;  // every row's logits, each sequence alone
  for (const auto& p : prompts) alone.push_back(all_logits(e, p, p.size()));
  std::vector<SeqTokens> steps;
  for (int i = 0; i < 3; ++i) {
    e.add_sequence(i);
    steps.push_back({i, prompts[size_t(i)], wants_all[i]});
  }
  const auto batch = e.to_host(e.forward(steps));
  size_t at = 0;
  for (int i = 0; i < 3; ++i) {
    const auto& a = alone[size_t(i)];
    const size_t n = wants_all[i] ? a.size() : size_t(vocab);
    ASSERT_LE(at + n, batch.size());
    EXPECT_LT(max_rel_diff({batch.begin() + long(at), batch.begin() + long(at + n)},
                           {a.end() - long(n), a.end()}),
              1e-4)
        << "sequence " << i;
    at += n;
  }
  EXPECT_EQ(at, batch.size());
  const int32_t next = 3;
  SeqTokens decode{0, {&next, 1}, false};
  const auto step = e.to_host(e.forward(std::span<const SeqTokens>(&decode, 1)));
  auto longer = prompts[0];
  longer.push_back(next);
  const auto full = all_logits(e, longer, longer.size());
  EXPECT_LT(max_rel_diff(step, {full.end() - vocab, full.end()}), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Synthetic, EngineOutRows, ::testing::Values(kTinyLlama, kTinyNas),
                         [](const auto& info) {
                           return info.param == kTinyLlama ? std::string("llama")
                                                           : std::string("nemotron_nas");
                         });

// Decode batches padded to their graph bucket (what CUDA graphs replay) give every real row
// the logits it gets unpadded, and the padding touches no real sequence's cache.
TEST(Engine, PaddedDecodeBatchEqualsUnpadded) {
  EXPECT_EQ(decode_batch_bucket(1), 1);
  EXPECT_EQ(decode_batch_bucket(3), 4);
  EXPECT_EQ(decode_batch_bucket(5), 8);
  EXPECT_EQ(decode_batch_bucket(33), 40);
  ModelFiles m = open_model("synthetic:" + kTinyNas);
  auto backend = make_cpu_backend(1);
  auto decode_logits = [&](bool pad, int n_seqs) {
    EngineOptions eo;
    eo.kv_cache_tokens = 256;
    eo.page_size = 4;
    eo.pad_decode_batches = pad;
    Engine e(m.config, *m.weights, *backend, eo);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<SeqTokens> prefill, decode;
    const std::vector<int32_t> next = {3, 1, 4, 1, 5};
    for (int i = 0; i < n_seqs; ++i) prompts.push_back(test_tokens(3 + 2 * i, 256, i));
    for (int i = 0; i < n_seqs; ++i) {
      e.add_sequence(i);
      prefill.push_back({i, prompts[size_t(i)], false});
      decode.push_back({i, {&next[size_t(i)], 1}, false});
    }
    e.forward(prefill);
    std::vector<float> out = e.to_host(e.forward(decode));
    for (int i = 0; i < n_seqs; ++i)
      EXPECT_EQ(e.sequence_length(i), int64_t(prompts[size_t(i)].size()) + 1);
    return out;
  };
  for (int n : {3, 5}) {
    const auto padded = decode_logits(true, n), plain = decode_logits(false, n);
    EXPECT_EQ(padded.size(), size_t(n) * 256) << "padding rows must not be returned";
    EXPECT_LT(max_rel_diff(padded, plain), 1e-4) << n << " sequences";
  }
}

TEST(Engine, KvCacheFullIsAClearError) {
  ModelFiles m = open_model("synthetic:" + kTinyLlama);
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 16;
  eo.page_size = 8;
  Engine e(m.config, *m.weights, *backend, eo);
  e.add_sequence(0);
  const auto tokens = test_tokens(17, 256, 0);
  SeqTokens s{0, tokens, false};
  try {
    e.forward(std::span<const SeqTokens>(&s, 1));
    FAIL() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("KV cache full"), std::string::npos) << err.what();
  }
}

class SmolLM2 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kSmolLM2))
      GTEST_SKIP() << "embedded model not downloaded: run cluster/setup.sh";
  }
};

// On the F32 reference path (--weight-dtype f32) prefill and decode are the same arithmetic in
// another order. (With the Q4_1 weights kept as they are, decode steps round activations to
// int16 per block and prefill does not: test_native_weights.cpp bounds that difference.)
TEST_F(SmolLM2, PrefillEqualsDecodeSteps) {
  ModelFiles m = open_model(kSmolLM2);
  auto backend = make_cpu_backend(CpuBackendOptions{1, false, "best"});
  Engine e(m.config, *m.weights, *backend, EngineOptions{});
  const auto tokens = m.tokenizer->encode("The quick brown fox jumps over the lazy dog.");
  const auto prefill = all_logits(e, tokens, tokens.size());
  const auto decode = all_logits(e, tokens, 1);
  EXPECT_LT(max_rel_diff(decode, prefill), 1e-4);
}

TEST_F(SmolLM2, PerplexityOfGpl3IsThatOfAWorkingModel) {
  const std::string text_path = "/usr/share/common-licenses/GPL-3";
  ASSERT_TRUE(std::filesystem::exists(text_path));
  std::ifstream in(text_path);
  std::stringstream ss;
  ss << in.rdbuf();
  ModelFiles m = open_model(kSmolLM2);
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 2048;
  Engine e(m.config, *m.weights, *backend, eo);
  auto ids = m.tokenizer->encode(ss.str(), false);
  ids.resize(2000);
  const PerplexityResult r = perplexity(e, ids);
  EXPECT_EQ(r.tokens, 1999);
  // 19.85 is what a correct implementation gets for this Q4_1 model and text: our logits match an
  // independent float64 numpy forward of the same GGUF (tests/reference/llama_reference.py) to
  // 4e-5. A broken RoPE, norm or tokenizer lands in the hundreds; the band (0.5%, issue 13's
  // bound for the quantized kernels) allows their activation rounding and float reordering.
  EXPECT_NEAR(r.perplexity, 19.85, 19.85 * 0.005) << "perplexity " << r.perplexity;
}

}  // namespace

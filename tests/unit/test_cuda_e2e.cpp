// End to end on the GPU: greedy generation with the CUDA backend (bf16) against the CPU
// backend (f32) on the same weights, under the divergence rule of greedy_compare.h. Two
// models: a synthetic Llama (tests/data/configs/tiny-llama.json, seeded weights; always
// available) and SmolLM2-135M-Instruct from .cache/models (skipped when absent, e.g. on a
// device machine the 98 MB file cannot travel to). Skips without a CUDA device.
#include <gtest/gtest.h>

#include <filesystem>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "runtime/model/model_files.h"
#include "tests/unit/greedy_compare.h"

namespace parafuse {
namespace {

const std::string kSmolLM2 = std::string(PF_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kTinyLlama =
    "synthetic:" + std::string(PF_TEST_DATA) + "/configs/tiny-llama.json@3";

void compare_on(const std::string& model, const std::vector<int32_t>& prompt, int tokens) {
  ModelFiles files = open_model(model);
  EngineOptions options;
  options.kv_cache_tokens = 1024;
  CpuBackend cpu(2);
  Engine cpu_engine(files.config, *files.weights, cpu, options);
  const test::GreedyRun reference = test::greedy(cpu_engine, prompt, tokens);
  CudaBackend cuda;
  Engine cuda_engine(files.config, *files.weights, cuda, options);
  const test::GreedyRun device = test::greedy(cuda_engine, prompt, tokens);
  ASSERT_EQ(device.ids.size(), size_t(tokens)) << "the device run stopped early";
  test::expect_greedy_agrees(reference, device, model);
}

TEST(CudaEndToEnd, SyntheticLlamaGreedyMatchesCpu) {
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  // A prompt longer than one prefill tile and 40 decode steps (the split-K decode path).
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 37 + 11) % 256);
  compare_on(kTinyLlama, prompt, 40);
}

// Decode steps replayed as CUDA graphs compute exactly what the eager steps compute (the same
// kernels on the same inputs), across the warm-up, the recording, and a KV cache that grows
// past several pages; and they do replay.
TEST(CudaEndToEnd, DecodeGraphsReplayTheEagerStep) {
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  ModelFiles files = open_model(kTinyLlama);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 19; ++i) prompt.push_back((i * 29 + 5) % 256);
  EngineOptions options;
  options.kv_cache_tokens = 1024;
  options.graphs = false;
  CudaBackend eager_backend;
  Engine eager(files.config, *files.weights, eager_backend, options);
  const test::GreedyRun a = test::greedy(eager, prompt, 48);
  EXPECT_EQ(eager.stats().graph_steps, 0);
  options.graphs = true;
  CudaBackend graph_backend;
  Engine graphed(files.config, *files.weights, graph_backend, options);
  const test::GreedyRun b = test::greedy(graphed, prompt, 48);
  EXPECT_GE(graphed.stats().graph_steps, 40) << "decode steps were not replayed as graphs";
  EXPECT_GE(graph_backend.graph_count(), size_t(1));
  ASSERT_EQ(a.ids, b.ids);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  for (size_t i = 0; i < a.logits.size(); ++i) ASSERT_EQ(a.logits[i], b.logits[i]) << "step " << i;
}

// Batched decode (three sequences of different lengths, so different block tables and
// context lengths per row) replayed as graphs equals the eager steps bit for bit. Graphs pad
// the batch to its bucket (4 rows), so the eager run pads too: the same GEMM shapes.
TEST(CudaEndToEnd, DecodeGraphsReplayBatchedSteps) {
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  ModelFiles files = open_model(kTinyLlama);
  struct Run {
    std::vector<std::vector<float>> logits;
    int64_t graph_steps = 0;
  };
  auto run = [&](bool graphs) {
    EngineOptions options;
    options.kv_cache_tokens = 1024;
    options.graphs = graphs;
    options.pad_decode_batches = true;
    CudaBackend backend;
    Engine engine(files.config, *files.weights, backend, options);
    const std::vector<int> lengths = {5, 19, 33};
    std::vector<int32_t> next(lengths.size());
    for (size_t s = 0; s < lengths.size(); ++s) {
      std::vector<int32_t> prompt;
      for (int i = 0; i < lengths[s]; ++i) prompt.push_back(int32_t((i * 31 + 7 * s + 3) % 256));
      engine.add_sequence(int(s));
      const SeqTokens step{int(s), prompt, false};
      SamplingParams greedy;
      next[s] = engine.sample(engine.forward({&step, 1}), {&greedy, 1})[0];
    }
    Run r;
    const std::vector<SamplingParams> greedy(lengths.size());
    for (int t = 0; t < 30; ++t) {
      std::vector<SeqTokens> steps;
      for (size_t s = 0; s < lengths.size(); ++s)
        steps.push_back({int(s), std::span<const int32_t>(&next[s], 1), false});
      const Tensor logits = engine.forward(steps);
      r.logits.push_back(engine.to_host(logits));
      next = engine.sample(logits, greedy);
    }
    r.graph_steps = engine.stats().graph_steps;
    return r;
  };
  const Run eager = run(false), graphed = run(true);
  EXPECT_EQ(eager.graph_steps, 0);
  EXPECT_GE(graphed.graph_steps, 25) << "batched decode steps were not replayed as graphs";
  ASSERT_EQ(eager.logits.size(), graphed.logits.size());
  for (size_t i = 0; i < eager.logits.size(); ++i)
    ASSERT_EQ(eager.logits[i], graphed.logits[i]) << "step " << i;
}

TEST(CudaEndToEnd, SmolLM2GreedyMatchesCpu) {
  std::string why;
  if (cuda_device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  if (!std::filesystem::exists(kSmolLM2))
    GTEST_SKIP() << kSmolLM2 << " is absent: run cluster/setup.sh";
  ModelFiles files = open_model(kSmolLM2);
  ASSERT_TRUE(files.tokenizer.has_value());
  const std::vector<int32_t> prompt =
      files.tokenizer->encode("The capital of France is Paris. The capital of Germany is");
  compare_on(kSmolLM2, prompt, 32);
}

}  // namespace
}  // namespace parafuse

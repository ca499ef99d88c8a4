// The run config as a user meets it: every example in configs/ loads, defaults hold, and each
// mistake in a YAML file is reported with the file, the 1-based line and the key (the flags
// that override the file are tested in test_cli_flags.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>  // getpid

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "launcher/run_config.h"
#include "parallel/transport.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/model/model_config.h"
#include "tests/unit/temp_yaml.h"

using ::testing::HasSubstr;
using ::testing::Not;

namespace parafuse {
namespace {

const std::string kConfigs = std::string(PF_TEST_DATA) + "/../../configs";

// The message of the parafuse::Error that parsing `yaml` throws ("" when it does not throw).
std::string parse_error(const std::string& yaml) {
  try {
    parse_run_config(yaml, "x.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RunConfig, EveryExampleInConfigsLoads) {
  int examples = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kConfigs)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const RunConfig c = load_run_config(entry.path().string());
    EXPECT_FALSE(c.model.empty());
    EXPECT_EQ(c.source, entry.path().string());
    ++examples;
  }
  EXPECT_GE(examples, 3);
}

TEST(RunConfig, ExamplesHoldWhatTheirNamesSay) {
  const RunConfig a = load_run_config(kConfigs + "/smollm2-tp3-pp2.yaml");
  EXPECT_EQ(a.tp, 3);
  EXPECT_EQ(a.pp, 2);
  EXPECT_EQ(a.model, ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  const RunConfig b = load_run_config(kConfigs + "/nemotron-nas-synthetic-tp2-pp3.yaml");
  EXPECT_EQ(b.tp, 2);
  EXPECT_EQ(b.pp, 3);
  EXPECT_EQ(b.model, "synthetic:tests/data/configs/tiny-nemotron-nas.json");
  EXPECT_EQ(int(b.pp_split.size()), 3);
  // The synthetic model of that example exists, relative to the repository root.
  EXPECT_TRUE(std::filesystem::exists(kConfigs + "/../tests/data/configs/tiny-nemotron-nas.json"));
  const RunConfig c = load_run_config(kConfigs + "/smollm2-tp1-pp1.yaml");
  EXPECT_EQ(c.tp * c.pp, 1);
  EXPECT_TRUE(a.transport == "ucx" || b.transport == "ucx" || c.transport == "ucx");
}

TEST(RunConfig, EveryModelConfigInConfigsLoads) {
  int models = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kConfigs + "/models")) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    const ModelConfig config = load_hf_config(entry.path().string());
    EXPECT_NO_THROW(config.validate());
    EXPECT_GT(config.n_blocks(), 0);
    ++models;
  }
  EXPECT_GE(models, 1);
}

TEST(RunConfig, EmptyTextIsAllDefaults) {
  for (const std::string text : {"", "\n\n", "# only a comment\n", "---\n"}) {
    SCOPED_TRACE(text);
    const RunConfig c = parse_run_config(text, "empty.yaml");
    EXPECT_EQ(c.model, "");
    EXPECT_EQ(c.tp, 1);
    EXPECT_EQ(c.pp, 1);
    EXPECT_EQ(c.transport, "mpi");
    EXPECT_TRUE(c.pp_split.empty());
    EXPECT_EQ(c.backend, "cpu");
    EXPECT_EQ(c.dtype, "auto");
    EXPECT_EQ(c.threads, 0);
    EXPECT_EQ(c.batch.max_batch_tokens, 512);
    EXPECT_EQ(c.batch.kv_cache_tokens, 4096);
    EXPECT_EQ(c.batch.page_size, 16);
    EXPECT_EQ(c.batch.micro_batches, 0);
    EXPECT_EQ(c.sampling.temperature, 0.0f);
    EXPECT_EQ(c.sampling.top_k, 0);
    EXPECT_EQ(c.sampling.top_p, 1.0f);
    EXPECT_EQ(c.sampling.seed, 0u);
    EXPECT_EQ(c.sampling.max_tokens, 128);
    EXPECT_EQ(c.timeouts.collective_seconds, 60.0);
    EXPECT_EQ(c.timeouts.transport_seconds, 60.0);
    EXPECT_EQ(c.source, "empty.yaml");
  }
}

TEST(RunConfig, EveryKeyIsRead) {
  // The last backend and dtype this build has (cuda and bf16 in CUDA builds).
  const std::string backend = backend_names().back(), dtype = backend_dtypes().back();
  const RunConfig c = parse_run_config(fmt::format(R"(
model: some/model.gguf
parallel:
  tp: 2
  pp: 3
  transport: ucx
  pp_split:
    - 0
    - 4
    - 9
backend: {}
dtype: {}
threads: 4
batch:
  max_batch_tokens: 1024
  kv_cache_tokens: 65536
  page_size: 32
  micro_batches: 3
sampling:
  temperature: 0.7
  top_k: 40
  top_p: 0.95
  seed: 18446744073709551
  max_tokens: 64
timeouts:
  collective_seconds: 2.5
  transport_seconds: 120
)",
                                                   backend, dtype),
                                       "all.yaml");
  EXPECT_EQ(c.model, "some/model.gguf");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.pp, 3);
  EXPECT_EQ(c.transport, "ucx");
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(c.backend, backend);
  EXPECT_EQ(c.dtype, dtype);
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.batch.max_batch_tokens, 1024);
  EXPECT_EQ(c.batch.kv_cache_tokens, 65536);
  EXPECT_EQ(c.batch.page_size, 32);
  EXPECT_EQ(c.batch.micro_batches, 3);
  EXPECT_FLOAT_EQ(c.sampling.temperature, 0.7f);
  EXPECT_EQ(c.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(c.sampling.top_p, 0.95f);
  EXPECT_EQ(c.sampling.seed, 18446744073709551u);
  EXPECT_EQ(c.sampling.max_tokens, 64);
  EXPECT_EQ(c.timeouts.collective_seconds, 2.5);
  EXPECT_EQ(c.timeouts.transport_seconds, 120.0);
}

TEST(RunConfig, EmptySectionIsDefaults) {
  const RunConfig c = parse_run_config("batch:\n  # page_size: 4\nparallel: {}\n", "s.yaml");
  EXPECT_EQ(c.batch.page_size, 16);
  EXPECT_EQ(c.tp, 1);
}

TEST(RunConfig, UnknownKeyNamesKeySectionAndLine) {
  const std::string yaml = "model: m.gguf\n\nparallel:\n  tp: 2\n  tpp: 3\n";
  EXPECT_THAT(parse_error(yaml),
              HasSubstr("x.yaml:5: unknown key 'tpp' in 'parallel' (did you mean 'tp'?) (known "
                        "keys: tp, pp, transport, pp_split)"));
  EXPECT_THAT(parse_error("model: m\nmodle_path: x\n"),
              HasSubstr("x.yaml:2: unknown key 'modle_path' at the top level (known keys: "
                        "model, parallel, backend, dtype, weight_dtype, kv_cache_dtype, threads, "
                        "fusion_plan, "
                        "batch, sampling, serve, timeouts)"));
  EXPECT_THAT(parse_error("sampling:\n  temprature: 0.5\n"),
              HasSubstr("x.yaml:2: unknown key 'temprature' in 'sampling' (did you mean "
                        "'temperature'?)"));
  // `parafuse serve`'s section is as strict as the others.
  EXPECT_THAT(parse_error("serve:\n  hostname: x\n"),
              HasSubstr("x.yaml:2: unknown key 'hostname' in 'serve' (known keys: host, port, "));
  EXPECT_THAT(parse_error("serve:\n  api_keyfile: k\n"),
              HasSubstr("(did you mean 'api_key_file'?)"));
  EXPECT_THAT(parse_error("batch:\n  max_sequences: 4\n"),
              HasSubstr("x.yaml:2: unknown key 'max_sequences' in 'batch' (known keys: "
                        "max_batch_tokens, kv_cache_tokens, page_size, micro_batches)"));
}

TEST(RunConfig, RepeatedKeyIsAnError) {
  EXPECT_THAT(parse_error("parallel:\n  tp: 2\n  pp: 1\n  tp: 4\n"),
              HasSubstr("x.yaml:4: key 'tp' in 'parallel' is given twice (first on line 2)"));
}

TEST(RunConfig, WrongTypeNamesKeyLineAndExpectedType) {
  EXPECT_THAT(parse_error("model: m\nparallel:\n  tp: two\n"),
              HasSubstr("x.yaml:3: 'parallel.tp' must be an integer (at least 1), got 'two'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 2.5\n"),
              HasSubstr("x.yaml:2: 'parallel.pp' must be an integer (at least 1), got '2.5'"));
  EXPECT_THAT(parse_error("threads: [1, 2]\n"),
              HasSubstr("x.yaml:1: 'threads' must be an integer (at least 0), got a list"));
  EXPECT_THAT(parse_error("batch:\n  kv_cache_tokens:\n"),
              HasSubstr("x.yaml:2: 'batch.kv_cache_tokens' must be an integer (at least 1), got "
                        "nothing"));
  EXPECT_THAT(parse_error("sampling:\n  temperature: hot\n"),
              HasSubstr("x.yaml:2: 'sampling.temperature' must be a number (at least 0), got "
                        "'hot'"));
  EXPECT_THAT(parse_error("model: {path: x}\n"),
              HasSubstr("x.yaml:1: 'model' must be a model path (HF folder, .gguf file or "
                        "synthetic:CONFIG.json), got a map"));
  EXPECT_THAT(parse_error("parallel: 4\n"),
              HasSubstr("x.yaml:1: 'parallel' must be a map, got '4'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 2\n  pp_split: 0\n"),
              HasSubstr("x.yaml:3: 'parallel.pp_split' must be a list of block indices like [0, "
                        "10, 22], got '0'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 3\n  pp_split:\n    - 0\n    - x\n    - 9\n"),
              HasSubstr("x.yaml:5: 'parallel.pp_split[1]' must be an integer (at least 0), got "
                        "'x'"));
  EXPECT_THAT(parse_error("sampling:\n  seed: -1\n"),
              HasSubstr("x.yaml:2: 'sampling.seed' must be at least 0, got '-1'"));
  EXPECT_THAT(parse_error("parallel:\n  tp: 99999999999\n"),
              HasSubstr("x.yaml:2: 'parallel.tp' must be at most 2147483647, got '99999999999'"));
}

TEST(RunConfig, OutOfRangeValuesNameKeyAndLine) {
  // The choices are the ones this build has (nccl and cuda only in CUDA builds).
  const std::string transports = fmt::format("{}", fmt::join(transport_kinds(), ", "));
  const std::string backends = fmt::format("{}", fmt::join(backend_names(), ", "));
  const std::string dtypes = fmt::format("{}", fmt::join(backend_dtypes(), ", "));
  EXPECT_THAT(parse_error("parallel:\n  tp: 0\n"),
              HasSubstr("x.yaml:2: 'parallel.tp' must be at least 1, got '0'"));
  EXPECT_THAT(
      parse_error("\nparallel:\n  transport: tcp\n"),
      HasSubstr("x.yaml:3: 'parallel.transport' must be one of " + transports + ", got 'tcp'"));
  EXPECT_THAT(parse_error("\nparallel:\n  transport: upx\n"),
              HasSubstr("x.yaml:3: 'parallel.transport' must be one of " + transports +
                        ", got 'upx' (did you mean 'ucx'?)"));
  EXPECT_THAT(parse_error("backend: rocm\n"),
              HasSubstr("x.yaml:1: 'backend' must be one of " + backends + ", got 'rocm'"));
  EXPECT_THAT(parse_error("model: m\ndtype: int4\n"),
              HasSubstr("x.yaml:2: 'dtype' must be one of " + dtypes + ", fp8, got 'int4'"));
  EXPECT_THAT(parse_error("sampling:\n  top_p: 0\n"),
              HasSubstr("x.yaml:2: 'sampling.top_p' must be in (0, 1], got '0'"));
  EXPECT_THAT(parse_error("sampling:\n  top_p: 1.5\n"),
              HasSubstr("x.yaml:2: 'sampling.top_p' must be in (0, 1], got '1.5'"));
  EXPECT_THAT(parse_error("sampling:\n  temperature: -0.1\n"),
              HasSubstr("x.yaml:2: 'sampling.temperature' must be at least 0, got '-0.1'"));
  EXPECT_THAT(parse_error("timeouts:\n  collective_seconds: 0\n"),
              HasSubstr("x.yaml:2: 'timeouts.collective_seconds' must be greater than 0, got "
                        "'0'"));
  EXPECT_THAT(parse_error("timeouts:\n  transport_seconds: -5\n"),
              HasSubstr("x.yaml:2: 'timeouts.transport_seconds' must be greater than 0, got "
                        "'-5'"));
  EXPECT_THAT(parse_error("timeouts:\n  transport_seconds: .inf\n"),
              HasSubstr("x.yaml:2: 'timeouts.transport_seconds' must be a number (greater than "
                        "0), got '.inf'"));
  // serve.port 0 asks for any free port; past 65535 is not a port.
  EXPECT_EQ(parse_error("serve:\n  port: 0\n"), "");
  EXPECT_THAT(parse_error("serve:\n  port: 65536\n"),
              HasSubstr("x.yaml:2: 'serve.port' must be from 0 to 65535, got '65536'"));
  EXPECT_THAT(parse_error("serve:\n  max_waiting_requests: 0\n"),
              HasSubstr("x.yaml:2: 'serve.max_waiting_requests' must be at least 1, got '0'"));
}

TEST(RunConfig, PpSplitMustFitPp) {
  EXPECT_THAT(parse_error("parallel:\n  pp: 3\n  pp_split: [0, 10]\n"),
              HasSubstr("x.yaml:3: 'parallel.pp_split' has 2 entries ([0, 10]) but pp is 3"));
  EXPECT_THAT(parse_error("parallel:\n  pp_split:\n    - 0\n    - 10\n"),
              HasSubstr("x.yaml:2: 'parallel.pp_split' has 2 entries ([0, 10]) but pp is 1"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 2\n  pp_split: [1, 10]\n"),
              HasSubstr("x.yaml:3: 'parallel.pp_split' must start at 0"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 3\n  pp_split: [0, 10, 10]\n"),
              HasSubstr("x.yaml:3: 'parallel.pp_split' must be strictly increasing"));
  // pp given after pp_split still counts.
  EXPECT_EQ(parse_run_config("parallel:\n  pp_split: [0, 5]\n  pp: 2\n", "x.yaml").pp_split,
            (std::vector<int>{0, 5}));
  EXPECT_TRUE(parse_run_config("parallel:\n  pp: 4\n  pp_split: []\n", "x.yaml").pp_split.empty());
}

TEST(RunConfig, InvalidYamlGivesTheParserMessageAndLine) {
  const std::string e = parse_error("model: m\nparallel:\n  tp: [1, 2\n");
  EXPECT_THAT(e, HasSubstr("x.yaml:"));
  EXPECT_THAT(e, HasSubstr("invalid YAML"));
  EXPECT_THAT(e, HasSubstr("end of sequence flow not found"));
  EXPECT_THAT(parse_error("model: m\n  tp: 2\n"), HasSubstr("x.yaml:2: invalid YAML (column"));
  EXPECT_THAT(parse_error("a: b\n---\nc: d\n"), HasSubstr("x.yaml: holds 2 YAML documents"));
}

TEST(RunConfig, TopLevelMustBeAMap) {
  EXPECT_THAT(parse_error("- tp: 2\n"),
              HasSubstr("x.yaml:1: the top level must be a map of keys like 'model:' and "
                        "'parallel:', got a list"));
  EXPECT_THAT(parse_error("just text\n"), HasSubstr("the top level must be a map"));
  EXPECT_THAT(parse_error("? [a, b]\n: c\n"), HasSubstr("x.yaml:1: keys at the top level must "
                                                        "be plain names"));
}

TEST(RunConfig, MissingFileNamesIt) {
  try {
    load_run_config("/nonexistent/run.yaml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config file '/nonexistent/run.yaml' does not exist"));
  }
}

TEST(RunConfig, FileErrorsNameThePath) {
  TempYaml file("model: m\nparallel:\n  tp: -2\n");
  try {
    load_run_config(file.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(),
                HasSubstr(file.path() + ":3: 'parallel.tp' must be at least 1, got '-2'"));
  }
}

TEST(RunConfig, CheckCatchesProgrammaticMistakes) {
  RunConfig c;
  c.model = "m";
  EXPECT_NO_THROW(check_run_config(c));
  c.sampling.top_p = 0;
  EXPECT_THROW(check_run_config(c), Error);
  c = RunConfig{};
  c.pp = 2;
  c.pp_split = {0, 3, 5};
  EXPECT_THROW(check_run_config(c), Error);
}

// dtype fp8 is the TensorRT-LLM / vLLM spelling of FP8 weights: weight_dtype fp8 with the
// backend's own activation dtype; asking for F32 weights at the same time is a contradiction.
TEST(RunConfig, DtypeFp8MeansFp8WeightsAndContradictsF32Weights) {
  RunConfig c = parse_run_config("model: m\ndtype: fp8\n", "x.yaml");
  EXPECT_TRUE(wants_fp8_weights(c));
  EXPECT_EQ(backend_dtype(c), "auto");
  c.weight_dtype = "f32";
  try {
    check_run_config(c);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("dtype fp8 (FP8 weights) and weight_dtype f32"));
  }
  c = parse_run_config("model: m\nweight_dtype: fp8\ndtype: bf16\n", "x.yaml");
  EXPECT_TRUE(wants_fp8_weights(c));
  EXPECT_EQ(backend_dtype(c), "bf16");
  EXPECT_FALSE(wants_fp8_weights(parse_run_config("model: m\n", "x.yaml")));
}

// kv_cache_dtype: auto (decided at load from the backend and the file), or a dtype; whether the
// backend keeps that dtype is the engine's check (test_native_weights.cpp).
TEST(RunConfig, KvCacheDtypeIsAutoOrADtype) {
  EXPECT_EQ(parse_run_config("model: m\n", "x.yaml").kv_cache_dtype, "auto");
  EXPECT_EQ(parse_run_config("model: m\nkv_cache_dtype: f16\n", "x.yaml").kv_cache_dtype, "f16");
  EXPECT_THAT(
      parse_error("model: m\nkv_cache_dtype: fp8\n"),
      HasSubstr("x.yaml:2: 'kv_cache_dtype' must be one of auto, f32, f16, bf16, got 'fp8'"));
  EXPECT_EQ(parse_kv_cache_dtype("auto"), std::nullopt);
  EXPECT_EQ(parse_kv_cache_dtype("f32"), DType::F32);
  EXPECT_EQ(parse_kv_cache_dtype("f16"), DType::F16);
  EXPECT_EQ(parse_kv_cache_dtype("bf16"), DType::BF16);
  EXPECT_THROW(parse_kv_cache_dtype("int4"), Error);
  RunConfig c;
  c.kv_cache_dtype = "half";
  EXPECT_THROW(check_run_config(c), Error);
}

}  // namespace
}  // namespace parafuse

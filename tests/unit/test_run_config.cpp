// The run config as a user meets it: every example in configs/ loads, defaults hold, each
// mistake in a YAML file is reported with the file, the 1-based line and the key, and flags
// override the file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>  // getpid

#include "kernels/core/error.h"
#include "launcher/run_config.h"
#include "runtime/model/model_config.h"

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

// Parses `args` (without the program name) as flags of a fresh app; returns the overrides.
RunConfigOverrides parse_flags(const std::vector<std::string>& args) {
  CLI::App app{"test"};
  RunConfigOverrides o;
  add_run_config_options(app, o);
  std::vector<const char*> argv = {"parafuse"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  app.parse(int(argv.size()), argv.data());
  return o;
}

// The same for a space-separated command line.
RunConfigOverrides parse_command_line(const std::string& line) {
  std::vector<std::string> args;
  std::istringstream words(line);
  for (std::string w; words >> w;) args.push_back(w);
  return parse_flags(args);
}

// The message CLI11 gives for bad flags ("" when they parse).
std::string flag_error(const std::vector<std::string>& args) {
  try {
    parse_flags(args);
  } catch (const CLI::ParseError& e) {
    return e.what();
  }
  return "";
}

// A YAML file in a fresh temporary folder, removed with the object.
class TempYaml {
 public:
  explicit TempYaml(const std::string& text) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string("pf_run_config_") + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    std::ofstream(path()) << text;
  }
  ~TempYaml() { std::filesystem::remove_all(dir_); }
  std::string path() const { return (dir_ / "run.yaml").string(); }

 private:
  std::filesystem::path dir_;
};

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
    EXPECT_EQ(c.batch.max_sequences, 16);
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
    EXPECT_EQ(c.serve.host, "127.0.0.1");
    EXPECT_EQ(c.serve.port, 8000);
    EXPECT_EQ(c.source, "empty.yaml");
  }
}

TEST(RunConfig, EveryKeyIsRead) {
  const RunConfig c = parse_run_config(R"(
model: some/model.gguf
parallel:
  tp: 2
  pp: 3
  transport: ucx
  pp_split:
    - 0
    - 4
    - 9
backend: cuda
dtype: bf16
threads: 4
batch:
  max_batch_tokens: 1024
  max_sequences: 8
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
serve:
  host: 0.0.0.0
  port: 9000
)",
                                       "all.yaml");
  EXPECT_EQ(c.model, "some/model.gguf");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.pp, 3);
  EXPECT_EQ(c.transport, "ucx");
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(c.backend, "cuda");
  EXPECT_EQ(c.dtype, "bf16");
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.batch.max_batch_tokens, 1024);
  EXPECT_EQ(c.batch.max_sequences, 8);
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
  EXPECT_EQ(c.serve.host, "0.0.0.0");
  EXPECT_EQ(c.serve.port, 9000);
}

TEST(RunConfig, EmptySectionIsDefaults) {
  const RunConfig c = parse_run_config("batch:\n  # max_sequences: 4\nparallel: {}\n", "s.yaml");
  EXPECT_EQ(c.batch.max_sequences, 16);
  EXPECT_EQ(c.tp, 1);
}

TEST(RunConfig, UnknownKeyNamesKeySectionAndLine) {
  const std::string yaml = "model: m.gguf\n\nparallel:\n  tp: 2\n  tpp: 3\n";
  EXPECT_THAT(parse_error(yaml),
              HasSubstr("x.yaml:5: unknown key 'tpp' in 'parallel' (did you mean 'tp'?) (known "
                        "keys: tp, pp, transport, pp_split)"));
  EXPECT_THAT(parse_error("model: m\nmodle_path: x\n"),
              HasSubstr("x.yaml:2: unknown key 'modle_path' at the top level (known keys: "
                        "model, parallel, backend, dtype, threads, fusion_plan, batch, sampling, "
                        "timeouts, serve)"));
  EXPECT_THAT(parse_error("sampling:\n  temprature: 0.5\n"),
              HasSubstr("x.yaml:2: unknown key 'temprature' in 'sampling' (did you mean "
                        "'temperature'?)"));
  EXPECT_THAT(parse_error("serve:\n  hostname: x\n"), Not(HasSubstr("did you mean")));
}

TEST(RunConfig, RepeatedKeyIsAnError) {
  EXPECT_THAT(parse_error("parallel:\n  tp: 2\n  pp: 1\n  tp: 4\n"),
              HasSubstr("x.yaml:4: key 'tp' in 'parallel' is given twice (first on line 2)"));
}

TEST(RunConfig, WrongTypeNamesKeyLineAndExpectedType) {
  EXPECT_THAT(parse_error("model: m\nparallel:\n  tp: two\n"),
              HasSubstr("x.yaml:3: 'parallel.tp' must be a positive integer, got 'two'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 2.5\n"),
              HasSubstr("x.yaml:2: 'parallel.pp' must be a positive integer, got '2.5'"));
  EXPECT_THAT(parse_error("threads: [1, 2]\n"),
              HasSubstr("x.yaml:1: 'threads' must be a non-negative integer, got a list"));
  EXPECT_THAT(parse_error("batch:\n  kv_cache_tokens:\n"),
              HasSubstr("x.yaml:2: 'batch.kv_cache_tokens' must be a positive integer, got "
                        "nothing"));
  EXPECT_THAT(parse_error("sampling:\n  temperature: hot\n"),
              HasSubstr("x.yaml:2: 'sampling.temperature' must be a number >= 0, got 'hot'"));
  EXPECT_THAT(parse_error("model: {path: x}\n"),
              HasSubstr("x.yaml:1: 'model' must be a model path"));
  EXPECT_THAT(parse_error("parallel: 4\n"),
              HasSubstr("x.yaml:1: 'parallel' must be a map of keys (tp, pp, transport, "
                        "pp_split), got '4'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 2\n  pp_split: 0\n"),
              HasSubstr("x.yaml:3: 'parallel.pp_split' must be a list of block indices like [0, "
                        "10, 22], got '0'"));
  EXPECT_THAT(parse_error("parallel:\n  pp: 3\n  pp_split:\n    - 0\n    - x\n    - 9\n"),
              HasSubstr("x.yaml:5: 'parallel.pp_split' must be a block index (a non-negative "
                        "integer), got 'x'"));
  EXPECT_THAT(parse_error("sampling:\n  seed: -1\n"),
              HasSubstr("x.yaml:2: 'sampling.seed' must be a non-negative integer, got '-1'"));
  EXPECT_THAT(parse_error("parallel:\n  tp: 99999999999\n"),
              HasSubstr("x.yaml:2: 'parallel.tp' must be a positive integer, got '99999999999'"));
}

TEST(RunConfig, OutOfRangeValuesNameKeyAndLine) {
  EXPECT_THAT(parse_error("parallel:\n  tp: 0\n"),
              HasSubstr("x.yaml:2: 'parallel.tp' must be a positive integer, got '0'"));
  EXPECT_THAT(parse_error("\nparallel:\n  transport: tcp\n"),
              HasSubstr("x.yaml:3: 'parallel.transport' must be one of mpi, ucx, got 'tcp'"));
  EXPECT_THAT(parse_error("backend: rocm\n"),
              HasSubstr("x.yaml:1: 'backend' must be one of cpu, cuda, got 'rocm'"));
  EXPECT_THAT(parse_error("model: m\ndtype: fp8\n"),
              HasSubstr("x.yaml:2: 'dtype' must be one of auto, f32, bf16, got 'fp8'"));
  EXPECT_THAT(parse_error("sampling:\n  top_p: 0\n"),
              HasSubstr("x.yaml:2: 'sampling.top_p' must be a number in (0, 1], got '0'"));
  EXPECT_THAT(parse_error("sampling:\n  top_p: 1.5\n"),
              HasSubstr("x.yaml:2: 'sampling.top_p' must be a number in (0, 1], got '1.5'"));
  EXPECT_THAT(parse_error("sampling:\n  temperature: -0.1\n"),
              HasSubstr("x.yaml:2: 'sampling.temperature' must be a number >= 0, got '-0.1'"));
  EXPECT_THAT(parse_error("timeouts:\n  collective_seconds: 0\n"),
              HasSubstr("x.yaml:2: 'timeouts.collective_seconds' must be a positive number of "
                        "seconds, got '0'"));
  EXPECT_THAT(parse_error("timeouts:\n  transport_seconds: -5\n"),
              HasSubstr("x.yaml:2: 'timeouts.transport_seconds' must be a positive number of "
                        "seconds, got '-5'"));
  EXPECT_THAT(parse_error("timeouts:\n  transport_seconds: .inf\n"),
              HasSubstr("x.yaml:2: 'timeouts.transport_seconds' must be a positive number"));
  EXPECT_THAT(parse_error("serve:\n  port: 0\n"),
              HasSubstr("x.yaml:2: 'serve.port' must be a port number from 1 to 65535, got '0'"));
  EXPECT_THAT(parse_error("serve:\n  port: 65536\n"),
              HasSubstr("x.yaml:2: 'serve.port' must be a port number from 1 to 65535, got "
                        "'65536'"));
  EXPECT_EQ(parse_run_config("serve:\n  port: 65535\n", "x.yaml").serve.port, 65535);
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
    EXPECT_THAT(e.what(), HasSubstr(file.path() + ":3: 'parallel.tp' must be a positive integer"));
  }
}

TEST(RunConfigFlags, NoFileNoFlagsNeedsAModel) {
  try {
    resolve_run_config(parse_flags({}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no model: pass --model or set 'model:' in the config"));
  }
}

TEST(RunConfigFlags, FlagsAloneMakeAConfig) {
  const RunConfig c = resolve_run_config(parse_command_line(
      "-m x.gguf --tp 2 --pp 3 --pp-split 0,4,9 --transport ucx --backend cuda --dtype f32 "
      "--threads 2 --kv-cache-tokens 999 --max-batch-tokens 64 --micro-batches 4 "
      "--collective-timeout 1.5 --transport-timeout 30"));
  EXPECT_EQ(c.model, "x.gguf");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.pp, 3);
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(c.transport, "ucx");
  EXPECT_EQ(c.backend, "cuda");
  EXPECT_EQ(c.dtype, "f32");
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.batch.kv_cache_tokens, 999);
  EXPECT_EQ(c.batch.max_batch_tokens, 64);
  EXPECT_EQ(c.batch.micro_batches, 4);
  EXPECT_EQ(c.timeouts.collective_seconds, 1.5);
  EXPECT_EQ(c.timeouts.transport_seconds, 30.0);
  EXPECT_EQ(c.batch.max_sequences, 16);  // no flag: the default
  EXPECT_EQ(c.source, "command line");
}

TEST(RunConfigFlags, FlagsOverrideTheFile) {
  TempYaml file(
      "model: from-file.gguf\nparallel:\n  tp: 4\n  pp: 2\n  pp_split: [0, 7]\n"
      "batch:\n  kv_cache_tokens: 8192\n  max_sequences: 3\ntimeouts:\n  collective_seconds: 5\n");
  const RunConfig kept = resolve_run_config(parse_flags({"--config", file.path()}));
  EXPECT_EQ(kept.model, "from-file.gguf");
  EXPECT_EQ(kept.tp, 4);
  EXPECT_EQ(kept.source, file.path());

  const RunConfig c =
      resolve_run_config(parse_flags({"--config", file.path(), "--model", "flag.gguf", "--tp", "1",
                                      "--kv-cache-tokens", "100", "--collective-timeout", "9"}));
  EXPECT_EQ(c.model, "flag.gguf");
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.batch.kv_cache_tokens, 100);
  EXPECT_EQ(c.timeouts.collective_seconds, 9.0);
  EXPECT_EQ(c.pp, 2);                               // from the file
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 7}));  // from the file
  EXPECT_EQ(c.batch.max_sequences, 3);              // from the file
  EXPECT_EQ(c.source, file.path() + " + command line");
}

TEST(RunConfigFlags, PpFlagMustAgreeWithTheFilesSplit) {
  TempYaml file("model: m\nparallel:\n  pp: 2\n  pp_split: [0, 7]\n");
  try {
    resolve_run_config(parse_flags({"--config", file.path(), "--pp", "3"}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("pp_split (--pp-split or parallel.pp_split) has 2 entries "
                                    "([0, 7]) but pp is 3"));
  }
  const RunConfig c = resolve_run_config(
      parse_flags({"--config", file.path(), "--pp", "3", "--pp-split", "0,2,5"}));
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 2, 5}));
}

TEST(RunConfigFlags, BadFileStopsResolve) {
  TempYaml file("parallel:\n  tp: 2\n  pp: x\n");
  try {
    resolve_run_config(parse_flags({"--config", file.path(), "--pp", "2"}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(":3: 'parallel.pp' must be a positive integer, got 'x'"));
  }
}

TEST(RunConfigFlags, PpSplitFlagParsing) {
  EXPECT_EQ(parse_pp_split_list("0,10,22"), (std::vector<int>{0, 10, 22}));
  EXPECT_EQ(parse_pp_split_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_pp_split_list(" 0, 4 ,9"), (std::vector<int>{0, 4, 9}));
  EXPECT_THAT(flag_error({"--pp-split", "0,x,22"}),
              HasSubstr("--pp-split: 'x' is not a block index (expected comma-separated first "
                        "blocks of each stage, like 0,10,22)"));
  EXPECT_THAT(flag_error({"--pp-split", "0,-3"}), HasSubstr("'-3' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", "0,,4"}), HasSubstr("'' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", "0,4,"}),
              HasSubstr("'0,4,' is not a list of block indices"));
  EXPECT_THAT(flag_error({"--pp-split", "1.5"}), HasSubstr("'1.5' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", ""}), HasSubstr("is not a list of block indices"));
  // Well-formed but out of order: caught by the final check, naming both spellings.
  try {
    resolve_run_config(parse_flags({"-m", "m", "--pp", "2", "--pp-split", "0,0"}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("pp_split (--pp-split or parallel.pp_split) must be "
                                    "strictly increasing"));
  }
}

TEST(RunConfigFlags, BadFlagValuesFailAtParse) {
  EXPECT_THAT(flag_error({"--tp", "0"}), HasSubstr("must be a positive integer, got '0'"));
  EXPECT_THAT(flag_error({"--tp", "two"}), HasSubstr("must be a positive integer, got 'two'"));
  EXPECT_THAT(flag_error({"--threads", "-1"}), HasSubstr("must be a non-negative integer"));
  EXPECT_THAT(flag_error({"--transport", "tcp"}), HasSubstr("tcp not in {mpi,ucx}"));
  EXPECT_THAT(flag_error({"--backend", "rocm"}), HasSubstr("rocm not in {cpu,cuda}"));
  EXPECT_THAT(flag_error({"--dtype", "fp16"}), HasSubstr("fp16 not in {auto,f32,bf16}"));
  EXPECT_THAT(flag_error({"--collective-timeout", "0"}),
              HasSubstr("must be a positive number of seconds, got '0'"));
  EXPECT_THAT(flag_error({"--transport-timeout", "soon"}),
              HasSubstr("must be a positive number of seconds, got 'soon'"));
  EXPECT_THAT(flag_error({"--kv-cache-tokens", "0"}), HasSubstr("must be a positive integer"));
  EXPECT_EQ(flag_error({"--micro-batches", "0", "--threads", "0"}), "");
}

TEST(RunConfigFlags, HelpShowsEachOptionWithItsDefault) {
  CLI::App app{"test"};
  RunConfigOverrides o;
  add_run_config_options(app, o);
  const std::string help = app.help();
  for (const char* flag :
       {"--config", "--model", "--tp", "--pp", "--transport", "--pp-split", "--backend", "--dtype",
        "--threads", "--kv-cache-tokens", "--max-batch-tokens", "--micro-batches",
        "--collective-timeout", "--transport-timeout"})
    EXPECT_THAT(help, HasSubstr(flag));
  EXPECT_THAT(help, HasSubstr("=4096"));  // --kv-cache-tokens default
  EXPECT_THAT(help, HasSubstr("=mpi"));   // --transport default
  EXPECT_THAT(help, HasSubstr("=60"));    // timeouts
  EXPECT_THAT(help, HasSubstr("parallel.pp_split"));
}

TEST(RunConfig, CheckCatchesProgrammaticMistakes) {
  RunConfig c;
  c.model = "m";
  EXPECT_NO_THROW(check_run_config(c));
  c.sampling.top_p = 0;
  EXPECT_THROW(check_run_config(c), Error);
  c = RunConfig{};
  c.serve.host = "";
  EXPECT_THROW(check_run_config(c), Error);
  c = RunConfig{};
  c.pp = 2;
  c.pp_split = {0, 3, 5};
  EXPECT_THROW(check_run_config(c), Error);
}

}  // namespace
}  // namespace parafuse

// The `parafuse` binary as a user meets it: help, clear one-line errors with exit code 1, and
// the embedded model answering a chat prompt.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "kernels/backend_registry.h"
#include "tests/unit/cli_runner.h"

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

namespace {

const std::string kSmolLM2 = std::string(PF_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";
const std::string kTinyNas = std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-nas.json";

TEST(Cli, HelpListsCommands) {
  const CliResult r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("generate"));
  EXPECT_THAT(r.out, HasSubstr("eval-ppl"));
}

// A command-line mistake is one line on stderr that says what is allowed, in words, and exit
// code 2; nothing runs.
void expect_usage_error(const std::string& args, const std::string& line) {
  SCOPED_TRACE(args);
  const CliResult r = run_cli(args);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "parafuse: error: " + line + "\n");
  EXPECT_EQ(r.out, "");
}

TEST(Cli, BadFlagValuesSayTheAllowedRangeInWords) {
  const std::string model = "-m synthetic:" + kTinyLlama;
  expect_usage_error("generate " + model + " -p hi -n 0",
                     "--max-tokens must be at least 1, got '0' (parafuse generate --help)");
  expect_usage_error("generate " + model + " -p hi --max-tokens -5",
                     "--max-tokens must be at least 1, got '-5' (parafuse generate --help)");
  expect_usage_error("bench " + model + " --batch 0",
                     "--batch must be at least 1, got '0' (parafuse bench --help)");
  expect_usage_error("bench " + model + " --batch 1,8,0",
                     "--batch must be at least 1, got '0' (parafuse bench --help)");
  expect_usage_error("generate " + model + " -p hi --temperature -1",
                     "--temperature must be at least 0, got '-1' (parafuse generate --help)");
  expect_usage_error("generate " + model + " -p hi --top-p 0",
                     "--top-p must be in (0, 1], got '0' (parafuse generate --help)");
  expect_usage_error("generate " + model + " -p hi -n 1e400",
                     "--max-tokens must be an integer (at least 1), got '1e400' (parafuse "
                     "generate --help)");
  expect_usage_error("eval-ppl " + model + " --text /etc/hostname --tp 0",
                     "--tp must be at least 1, got '0' (parafuse eval-ppl --help)");
  expect_usage_error("generate " + model + " -p hi --backend cpuu",
                     "--backend must be one of " +
                         fmt::format("{}", fmt::join(parafuse::backend_names(), ", ")) +
                         ", got 'cpuu' (did you mean 'cpu'?) (parafuse generate --help)");
}

TEST(Cli, UnknownCommandIsNamed) {
  expect_usage_error("genrate -p hi",
                     "unknown command 'genrate'; did you mean 'generate'? (parafuse --help lists "
                     "them)");
  expect_usage_error("--log-level debug evalppl",
                     "unknown command 'evalppl'; did you mean 'eval-ppl'? (parafuse --help lists "
                     "them)");
  expect_usage_error("train",
                     "unknown command 'train'; the commands are generate, eval-ppl, "
                     "analyze, plan, fuse, bench, serve, predict, config");
  expect_usage_error("",
                     "no command given; the commands are generate, eval-ppl, analyze, plan, "
                     "fuse, bench, serve, predict, config (parafuse --help)");
}

// `fuse --bench` loads the fused checkpoint back onto the session's backend and times both
// models there (it used to time the fused one on the CPU whatever --backend said).
TEST(Cli, FuseBenchTimesBothModelsOnTheSameBackend) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("pf_cli_fuse_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream((dir / "plan.yaml").string())
      << "model_blocks: 10\nremove_attention: [7]\nfuse:\n  - [0, 1, 2]\n  - [7, 8]\n";
  const CliResult r = run_cli("fuse -q --threads 1 -m synthetic:" + kTinyNas + " --plan " +
                              (dir / "plan.yaml").string() + " -o " + (dir / "fused").string() +
                              " --bench --bench-batch 1,2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("all-reduces per token"));
  EXPECT_THAT(r.out, HasSubstr("ms/token, batch 1, cpu"));
  EXPECT_THAT(r.out, HasSubstr("ms/token, batch 2, cpu"));
  EXPECT_THAT(r.out, HasSubstr("both models timed on backend cpu (device 0), 1 thread(s)"));
  fs::remove_all(dir);
}

// `bench` sweeps batch x input length x output length: a row per point, the overview, and CSV
// and JSON with the per-point metrics bench/plot_sweep.py and users read.
TEST(Cli, BenchSweepWritesCsvJsonAndOverview) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("pf_cli_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string csv = (dir / "s.csv").string(), json = (dir / "s.json").string();
  const CliResult r = run_cli("bench -q --threads 1 -m synthetic:" + kTinyLlama +
                              " --max-batch 2 --input-len 4,8 --output-len 3 --label tiny --csv " +
                              csv + " --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("= PERFORMANCE OVERVIEW"));
  EXPECT_THAT(r.out, HasSubstr("Per User Output Throughput (tokens/sec/user):"));
  EXPECT_THAT(r.out, HasSubstr("[TPOT] Time Per Output Token (ms): avg"));
  std::ifstream in(csv);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u);  // header + batch {1, 2} x input {4, 8}
  EXPECT_THAT(lines[0], HasSubstr("batch,input_len,output_len,output_tokens_per_s"));
  EXPECT_THAT(lines[0], HasSubstr("ttft_ms_p99"));
  EXPECT_THAT(lines[0], HasSubstr("tpot_ms_p90"));
  EXPECT_THAT(lines[4], HasSubstr("\"tiny\","));
  EXPECT_THAT(lines[4], HasSubstr(",1,1,1,2,8,3,"));  // tp, pp, ranks, batch, input, output
  const std::string text = slurp(json);
  for (const char* key : {"\"ttft_ms\"", "\"tpot_ms\"", "\"p99\"", "\"tokens_per_second_per_rank\"",
                          "\"output_tokens_per_second\"", "\"all_reduces_per_step\"",
                          "\"pipeline_seconds_per_step\""})
    EXPECT_THAT(text, HasSubstr(key));
  // Decode's weight bandwidth beside the memory's, measured in the same run (cpu backend).
  EXPECT_THAT(r.out, HasSubstr("Memory bandwidth:       copy "));
  EXPECT_THAT(r.out,
              ContainsRegex("Decode Weight Bandwidth \\(GB/s\\): +[0-9.]+ = [0-9]+% of copy, "
                            "[0-9]+% of read"));
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_GT(j.at("copy_bandwidth_bytes_per_s").get<double>(), 1e8);
  EXPECT_GT(j.at("read_bandwidth_bytes_per_s").get<double>(), 1e8);
  for (const nlohmann::json& point : j.at("results"))
    EXPECT_GT(point.at("decode_weight_bandwidth_bytes_per_s").get<double>(), 0.0) << point.dump();
  fs::remove_all(dir);
}

TEST(Cli, MissingModelIsOneLineError) {
  const CliResult r = run_cli("generate -m /nonexistent/model.gguf -p hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("model path '/nonexistent/model.gguf' does not exist"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(Cli, BadPromptIdsNamesTheItem) {
  const CliResult r =
      run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,x,3 --print-ids");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("'x' is not a token id"));
}

TEST(Cli, OutOfVocabularyIdIsAnError) {
  const CliResult r =
      run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,999 --print-ids");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("token id 999 outside the vocabulary [0, 256)"));
}

TEST(Cli, SyntheticModelPrintsIds) {
  const CliResult r =
      run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,15,27 --print-ids -n 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream ss(r.out);
  int id, n = 0;
  while (ss >> id) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 256);
    ++n;
  }
  EXPECT_GE(n, 1);
  EXPECT_LE(n, 5);
  // Greedy decoding is deterministic.
  EXPECT_EQ(
      run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,15,27 --print-ids -n 5")
          .out,
      r.out);
}

TEST(Cli, NoTokenizerSaysUsePromptIds) {
  const CliResult r = run_cli("generate -q -m synthetic:" + kTinyLlama + " -p hello");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("--prompt-ids"));
}

TEST(Cli, SmolLM2AnswersAChatPrompt) {
  if (!std::filesystem::exists(kSmolLM2))
    GTEST_SKIP() << "embedded model not downloaded: run cluster/setup.sh";
  const CliResult r = run_cli("generate -q --threads 1 -m " + kSmolLM2 +
                              " --chat -p 'What is the capital of France?' -n 24");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("Paris"));
}

}  // namespace

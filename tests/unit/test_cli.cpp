// The `parafuse` binary as a user meets it: help, clear one-line errors with exit code 1, and
// the embedded model answering a chat prompt.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <filesystem>

#include "tests/unit/cli_runner.h"

using ::testing::HasSubstr;

namespace {

const std::string kSmolLM2 = std::string(PF_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";

TEST(Cli, HelpListsCommands) {
  const CliResult r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("generate"));
  EXPECT_THAT(r.out, HasSubstr("eval-ppl"));
}

TEST(Cli, MissingModelIsOneLineError) {
  const CliResult r = run_cli("generate -m /nonexistent/model.gguf -p hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("model path '/nonexistent/model.gguf' does not exist"));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(Cli, BadPromptIdsNamesTheItem) {
  const CliResult r = run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,x,3 --print-ids");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("'x' is not a token id"));
}

TEST(Cli, OutOfVocabularyIdIsAnError) {
  const CliResult r = run_cli("generate -q -m synthetic:" + kTinyLlama + " --prompt-ids 1,999 --print-ids");
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
  EXPECT_EQ(run_cli("generate -q -m synthetic:" + kTinyLlama +
                    " --prompt-ids 1,15,27 --print-ids -n 5")
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

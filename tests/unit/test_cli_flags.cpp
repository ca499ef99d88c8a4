// The run-config flags as a user meets them (launcher/cli.h): each flag overrides its key of
// --config, bad values fail at parse with a message that says the allowed range in words, and
// --help shows every flag with its default.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>  // getpid

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "parallel/transport.h"
#include "tests/unit/temp_yaml.h"

using ::testing::HasSubstr;

namespace parafuse {
namespace {

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

// The line `parafuse` prints for bad flags ("" when they parse).
std::string flag_error(const std::vector<std::string>& args) {
  try {
    parse_flags(args);
  } catch (const CLI::ParseError& e) {
    return describe_parse_error(e);
  }
  return "";
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
  const std::string backend = backend_names().back();  // cuda in CUDA builds, else cpu
  const RunConfig c = resolve_run_config(parse_command_line(
      "-m x.gguf --tp 2 --pp 3 --pp-split 0,4,9 --transport ucx --backend " + backend +
      " --dtype f32 --threads 2 --kv-cache-tokens 999 --max-batch-tokens 64 --micro-batches 4 "
      "--collective-timeout 1.5 --transport-timeout 30"));
  EXPECT_EQ(c.model, "x.gguf");
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.pp, 3);
  EXPECT_EQ(c.pp_split, (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(c.transport, "ucx");
  EXPECT_EQ(c.backend, backend);
  EXPECT_EQ(c.dtype, "f32");
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(c.batch.kv_cache_tokens, 999);
  EXPECT_EQ(c.batch.max_batch_tokens, 64);
  EXPECT_EQ(c.batch.micro_batches, 4);
  EXPECT_EQ(c.timeouts.collective_seconds, 1.5);
  EXPECT_EQ(c.timeouts.transport_seconds, 30.0);
  EXPECT_EQ(c.batch.page_size, 16);  // no flag: the default
  EXPECT_EQ(c.source, "command line");
}

TEST(RunConfigFlags, FlagsOverrideTheFile) {
  TempYaml file(
      "model: from-file.gguf\nparallel:\n  tp: 4\n  pp: 2\n  pp_split: [0, 7]\n"
      "batch:\n  kv_cache_tokens: 8192\n  page_size: 32\ntimeouts:\n  collective_seconds: 5\n");
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
  EXPECT_EQ(c.batch.page_size, 32);                 // from the file
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
    EXPECT_THAT(e.what(), HasSubstr(":3: 'parallel.pp' must be"));
    EXPECT_THAT(e.what(), HasSubstr("got 'x'"));
  }
}

TEST(RunConfigFlags, PpSplitFlagParsing) {
  EXPECT_EQ(parse_pp_split_list("0,10,22"), (std::vector<int>{0, 10, 22}));
  EXPECT_EQ(parse_pp_split_list("0"), (std::vector<int>{0}));
  EXPECT_EQ(parse_pp_split_list(" 0, 4 ,9"), (std::vector<int>{0, 4, 9}));
  EXPECT_THAT(flag_error({"--pp-split", "0,x,22"}),
              HasSubstr("--pp-split: 'x' is not a block index (expected the comma-separated "
                        "first block of each stage, like 0,10,22)"));
  EXPECT_THAT(flag_error({"--pp-split", "0,-3"}), HasSubstr("'-3' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", "0,,4"}), HasSubstr("'' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", "0,4,"}), HasSubstr("'0,4,' is not a list (expected"));
  EXPECT_THAT(flag_error({"--pp-split", "1.5"}), HasSubstr("'1.5' is not a block index"));
  EXPECT_THAT(flag_error({"--pp-split", ""}), HasSubstr("is not a list"));
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
  EXPECT_EQ(flag_error({"--tp", "0"}), "--tp must be at least 1, got '0'");
  EXPECT_EQ(flag_error({"--tp", "two"}), "--tp must be an integer (at least 1), got 'two'");
  EXPECT_EQ(flag_error({"--tp", "4294967296"}), "--tp must be at most 2147483647, got '4294967296'");
  EXPECT_EQ(flag_error({"--tp", "99999999999999999999999"}),
            "--tp must be at most 2147483647, got '99999999999999999999999'");
  EXPECT_EQ(flag_error({"--threads", "-1"}), "--threads must be at least 0, got '-1'");
  EXPECT_EQ(flag_error({"--transport", "tcp"}),
            "--transport must be one of " + fmt::format("{}", fmt::join(transport_kinds(), ", ")) +
                ", got 'tcp'");
  EXPECT_THAT(flag_error({"--transport", "uxc"}), HasSubstr("(did you mean 'ucx'?)"));
  EXPECT_THAT(flag_error({"--backend", "rocm"}), HasSubstr("--backend must be one of cpu"));
  EXPECT_THAT(flag_error({"--backend", "cpuu"}), HasSubstr("(did you mean 'cpu'?)"));
  EXPECT_THAT(flag_error({"--dtype", "fp16"}), HasSubstr("--dtype must be one of auto, f32"));
  EXPECT_EQ(flag_error({"--collective-timeout", "0"}),
            "--collective-timeout must be greater than 0, got '0'");
  EXPECT_EQ(flag_error({"--transport-timeout", "soon"}),
            "--transport-timeout must be a number (greater than 0), got 'soon'");
  EXPECT_EQ(flag_error({"--kv-cache-tokens", "0"}), "--kv-cache-tokens must be at least 1, got '0'");
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


}  // namespace
}  // namespace parafuse

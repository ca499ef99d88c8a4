// The command line's shared parts: the run-config flags every model-running command takes (and
// how they override --config), the validators every flag uses, and the names of subcommands.
//
// A flag's allowed values come from the same rules as the YAML key it overrides
// (runtime/config/value_rules.h), and its error reads the way a person says it:
// "--max-tokens must be at least 1, got '0'"; choices come from the registries
// (backend_names(), transport_kinds()) and suggest the closest: "--backend cdua: unknown
// value (did you mean 'cuda'?)".
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "launcher/run_config.h"
#include "runtime/config/value_rules.h"

namespace parafuse {

// Validators for CLI11 options (->check(...)): an integer or number `rule` accepts, or one of
// `choices`.
CLI::Validator int_flag(const IntRule& rule);
CLI::Validator number_flag(const NumberRule& rule);
CLI::Validator choice_flag(std::vector<std::string> choices);

// The command-line flags of a run config. An empty optional means "flag not given": the
// value comes from --config, or the default.
struct RunConfigOverrides {
  std::optional<std::string> config_path;    // --config
  std::optional<std::string> model;          // -m, --model
  std::optional<int> tp;                     // --tp
  std::optional<int> pp;                     // --pp
  std::optional<std::string> transport;      // --transport
  std::optional<std::string> backend;        // --backend
  std::optional<std::string> dtype;          // --dtype
  std::optional<std::string> weight_dtype;   // --weight-dtype
  std::optional<std::string> kv_cache_dtype;  // --kv-cache-dtype
  std::optional<int> threads;                // --threads
  std::optional<std::string> fusion_plan;    // --fusion-plan
  std::optional<int64_t> kv_cache_tokens;    // --kv-cache-tokens
  std::optional<int64_t> max_batch_tokens;   // --max-batch-tokens
  std::optional<int> micro_batches;          // --micro-batches
  std::optional<std::vector<int>> pp_split;  // --pp-split 0,10,22
  std::optional<double> collective_timeout;  // --collective-timeout SECONDS
  std::optional<double> transport_timeout;   // --transport-timeout SECONDS
};

// Registers the flags above on `cmd`; bad values fail in CLI::App::parse (CLI::ParseError).
// `o` must outlive the parse.
void add_run_config_options(CLI::App& cmd, RunConfigOverrides& o);

// The file when --config was given (else the defaults), each given flag on top, then the
// final checks: a model must be set, pp_split must match pp. Throws parafuse::Error.
RunConfig resolve_run_config(const RunConfigOverrides& o);

// A comma-separated list of integers a flag takes ("0,10,22", spaces allowed around items).
struct IntList {
  std::string flag;      // "--pp-split"
  IntRule rule;          // what each item must be
  std::string item;      // "a block index"
  std::string expected;  // "the comma-separated first block of each stage"
  std::string example;   // "0,10,22"
};
// Throws parafuse::Error naming the flag and the bad item: "--pp-split: 'x' is not a block
// index (expected the comma-separated first block of each stage, like 0,10,22)".
std::vector<int64_t> parse_int_list(const std::string& text, const IntList& list);

// "--pp-split" text to block indices: "0,10,22" -> {0, 10, 22}; the order checks are
// check_run_config's.
std::vector<int> parse_pp_split_list(const std::string& text);

// A list of batch sizes (`--batch 1,8,32`), each at least 1, its default shown in --help.
void add_batch_sizes_option(CLI::App& cmd, const std::string& flag, std::vector<int>& sizes,
                            const std::string& help);

// What every model-running command takes: the run config's flags and -q/--quiet. The session
// builder (session.h) is made from these.
struct SessionFlags {
  RunConfigOverrides run;
  bool quiet = false;
};
void add_session_flags(CLI::App& cmd, SessionFlags& flags);

// One line for a command-line mistake CLI11 reports, worded for a person:
// "--max-tokens: must be at least 1, got '0'" -> "--max-tokens must be at least 1, got '0'".
std::string describe_parse_error(const CLI::ParseError& e);

// When argv names no known subcommand where one is expected, the line to print
// ("unknown command 'genrate'; did you mean 'generate'? ..."), else "".
// `options_with_values` are the top-level options that take a value (skipped with it).
std::string unknown_command_problem(int argc, const char* const* argv,
                                    const std::vector<std::string>& commands,
                                    const std::vector<std::string>& options_with_values);

}  // namespace parafuse

// The command line's shared parts (see cli.h).
#include "launcher/cli.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "kernels/core/suggest.h"
#include "parallel/transport.h"
#include "runtime/engine/kv_cache.h"  // kv_cache_dtype_choices

namespace parafuse {
namespace {

template <typename T>
std::string shown(const T& v) {
  return fmt::format("{}", v);
}

}  // namespace

CLI::Validator int_flag(const IntRule& rule) {
  return CLI::Validator([rule](std::string& text) { return int_problem(text, rule); }, "");
}

CLI::Validator number_flag(const NumberRule& rule) {
  return CLI::Validator([rule](std::string& text) { return number_problem(text, rule); }, "");
}

CLI::Validator choice_flag(std::vector<std::string> choices) {
  return CLI::Validator(
      [choices](std::string& text) -> std::string {
        if (std::find(choices.begin(), choices.end(), text) != choices.end()) return {};
        return fmt::format("must be one of {}, got '{}'{}", fmt::join(choices, ", "), text,
                           did_you_mean(text, choices));
      },
      "");
}

std::vector<int64_t> parse_int_list(const std::string& text, const IntList& list) {
  std::vector<int64_t> values;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const size_t first = item.find_first_not_of(' ');
    const size_t last = item.find_last_not_of(' ');
    const std::string trimmed =
        first == std::string::npos ? "" : item.substr(first, last - first + 1);
    const auto v = parse_int(trimmed);
    PF_CHECK(v && list.rule.accepts(*v), "{}: '{}' is not {} (expected {}, like {})", list.flag,
             trimmed, list.item, list.expected, list.example);
    values.push_back(*v);
  }
  PF_CHECK(!values.empty() && text.back() != ',', "{}: '{}' is not a list (expected {}, like {})",
           list.flag, text, list.expected, list.example);
  return values;
}

std::vector<int> parse_pp_split_list(const std::string& text) {
  const std::vector<int64_t> v =
      parse_int_list(text, {"--pp-split",
                            {0, kIntMax},
                            "a block index",
                            "the comma-separated first block of each stage",
                            "0,10,22"});
  return std::vector<int>(v.begin(), v.end());
}

namespace {

// A flag that overrides a run-config key: --help shows the key's default, `check` validates.
template <typename T, typename Default>
CLI::Option* key_flag(CLI::App& cmd, const std::string& flag, std::optional<T>& field,
                      const std::string& help, const Default& default_value, CLI::Validator check) {
  return cmd.add_option(flag, field, help)->default_str(shown(default_value))->check(check);
}

}  // namespace

void add_run_config_options(CLI::App& cmd, RunConfigOverrides& o) {
  const RunConfig d;  // the defaults, shown in --help
  cmd.add_option("--config", o.config_path,
                 "YAML run config (see configs/README.md); the flags below override its keys. "
                 "Without it, every key has its default")
      ->type_name("FILE");
  cmd.add_option("-m,--model", o.model,
                 "Model: an HF folder (config.json + safetensors), a .gguf file, or "
                 "synthetic:CONFIG.json[@SEED] for seeded random weights. Required here or as "
                 "'model:' in --config")
      ->type_name("MODEL");
  key_flag(cmd, "--tp", o.tp, "Tensor-parallel ranks per pipeline stage (parallel.tp)", d.tp,
           int_flag(kPositiveInt));
  key_flag(cmd, "--pp", o.pp, "Pipeline stages (parallel.pp); the job needs tp x pp ranks", d.pp,
           int_flag(kPositiveInt));
  key_flag(cmd, "--transport", o.transport,
           fmt::format("Stage-to-stage activation transport (parallel.transport): {}",
                       fmt::join(transport_kinds(), ", ")),
           d.transport, choice_flag(transport_kinds()));
  cmd.add_option_function<std::string>(
         "--pp-split", [&o](const std::string& text) { o.pp_split = parse_pp_split_list(text); },
         "First block of each pipeline stage, comma-separated, starting at 0, e.g. 0,10,22 for "
         "--pp 3 (parallel.pp_split). Default: stages balanced by block cost")
      ->type_name("LIST")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              parse_pp_split_list(text);
              return {};
            } catch (const Error& e) {
              return e.what();
            }
          },
          ""));
  std::string backends;
  for (const std::string& name : backend_names())
    backends +=
        fmt::format("{}{} ({})", backends.empty() ? "" : "; ", name, backend_info(name).summary);
  key_flag(cmd, "--backend", o.backend, "Compute backend (backend): " + backends, d.backend,
           choice_flag(backend_names()));
  key_flag(cmd, "--dtype", o.dtype,
           fmt::format("Compute type of weights and activations (dtype): {}; auto: the "
                       "backend's own; fp8: the backend's own for activations, linear "
                       "weights in FP8 E4M3 (as --weight-dtype fp8)",
                       fmt::join(backend_dtypes(), ", ")),
           d.dtype, choice_flag(dtype_choices()));
  key_flag(cmd, "--weight-dtype", o.weight_dtype,
           "How weights are kept (weight_dtype): auto, in the file's format where the backend "
           "multiplies by it (cpu: q8_0, q4_0, q4_1, f16, bf16); f32, all converted (reference); "
           "fp8, block linear weights quantized at load to FP8 E4M3 per output channel (the "
           "cpu computes with their values: the FP8 reference)",
           d.weight_dtype, choice_flag(weight_dtype_choices()));
  key_flag(cmd, "--kv-cache-dtype", o.kv_cache_dtype,
           "Element type of the KV cache (kv_cache_dtype): auto, f16 on the cpu backend for "
           "quantized and f16/bf16 files (half the bytes decode attention reads), else the "
           "backend's activation type; f32, f16 (cpu), bf16 (cuda --dtype bf16)",
           d.kv_cache_dtype, choice_flag(kv_cache_dtype_choices()));
  key_flag(cmd, "--threads", o.threads,
           "CPU threads per rank, for every op (threads); 0: all cores for a single process, 1 per "
           "rank under mpirun/srun",
           d.threads, int_flag(kNonNegativeInt));
  cmd.add_option(
         "--fusion-plan", o.fusion_plan,
         "Run the unfused model in parallel-FFN mode as this fusion plan says (fusion_plan): "
         "each group's FFNs read the group's input, one all-reduce per group")
      ->type_name("FILE");
  key_flag(cmd, "--kv-cache-tokens", o.kv_cache_tokens,
           "KV cache capacity per rank in tokens (batch.kv_cache_tokens)", d.batch.kv_cache_tokens,
           int_flag(kPositiveInt64));
  key_flag(cmd, "--max-batch-tokens", o.max_batch_tokens,
           "Most tokens in one forward pass; prompts are prefilled in chunks of this "
           "(batch.max_batch_tokens)",
           d.batch.max_batch_tokens, int_flag(kPositiveInt64));
  key_flag(cmd, "--micro-batches", o.micro_batches,
           "Pipeline micro-batches in flight (batch.micro_batches); 0: auto", d.batch.micro_batches,
           int_flag(kNonNegativeInt));
  key_flag(cmd, "--collective-timeout", o.collective_timeout,
           "Seconds one collective (all-reduce, all-gather, broadcast, barrier) may take before "
           "the job fails (timeouts.collective_seconds)",
           d.timeouts.collective_seconds, number_flag(kPositiveNumber))
      ->type_name("SECONDS");
  key_flag(cmd, "--transport-timeout", o.transport_timeout,
           "Seconds one stage-to-stage send or receive may take before the job fails "
           "(timeouts.transport_seconds)",
           d.timeouts.transport_seconds, number_flag(kPositiveNumber))
      ->type_name("SECONDS");
}

RunConfig resolve_run_config(const RunConfigOverrides& o) {
  RunConfig c = o.config_path ? load_run_config(*o.config_path) : RunConfig{};
  bool overridden = false;
  const auto apply = [&overridden](const auto& flag, auto& field) {
    if (flag) {
      field = *flag;
      overridden = true;
    }
  };
  apply(o.model, c.model);
  apply(o.tp, c.tp);
  apply(o.pp, c.pp);
  apply(o.transport, c.transport);
  apply(o.pp_split, c.pp_split);
  apply(o.backend, c.backend);
  apply(o.dtype, c.dtype);
  apply(o.weight_dtype, c.weight_dtype);
  apply(o.kv_cache_dtype, c.kv_cache_dtype);
  apply(o.threads, c.threads);
  apply(o.fusion_plan, c.fusion_plan);
  apply(o.kv_cache_tokens, c.batch.kv_cache_tokens);
  apply(o.max_batch_tokens, c.batch.max_batch_tokens);
  apply(o.micro_batches, c.batch.micro_batches);
  apply(o.collective_timeout, c.timeouts.collective_seconds);
  apply(o.transport_timeout, c.timeouts.transport_seconds);
  if (!o.config_path)
    c.source = "command line";
  else if (overridden)
    c.source = *o.config_path + " + command line";
  PF_CHECK(!c.model.empty(), "no model: pass --model or set 'model:' in the config");
  check_run_config(c);
  return c;
}

void add_batch_sizes_option(CLI::App& cmd, const std::string& flag, std::vector<int>& sizes,
                            const std::string& help) {
  cmd.add_option(flag, sizes, help)
      ->delimiter(',')
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
}

void add_session_flags(CLI::App& cmd, SessionFlags& flags) {
  add_run_config_options(cmd, flags.run);
  cmd.add_flag("-q,--quiet", flags.quiet,
               "No progress bars, per-rank placement or timing lines on stderr");
}

std::string describe_parse_error(const CLI::ParseError& e) {
  std::string message = e.what();
  // CLI11 writes "NAME: problem"; a validator's problem starts with "must".
  const size_t colon = message.find(": must ");
  if (colon != std::string::npos && message.rfind('-', 0) == 0 && message.find(' ') > colon)
    message.erase(colon, 1);
  return message;
}

std::string unknown_command_problem(int argc, const char* const* argv,
                                    const std::vector<std::string>& commands,
                                    const std::vector<std::string>& options_with_values) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind('-', 0) == 0) {
      // "--log-level debug" takes the next word; "--log-level=debug" does not.
      if (std::find(options_with_values.begin(), options_with_values.end(), arg) !=
          options_with_values.end())
        ++i;
      continue;
    }
    if (std::find(commands.begin(), commands.end(), arg) != commands.end()) return {};
    const std::string match = closest_match(arg, commands);
    if (!match.empty())
      return fmt::format("unknown command '{}'; did you mean '{}'? (parafuse --help lists them)",
                         arg, match);
    return fmt::format("unknown command '{}'; the commands are {}", arg, fmt::join(commands, ", "));
  }
  return {};
}

}  // namespace parafuse

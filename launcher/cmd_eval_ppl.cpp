// `parafuse eval-ppl`: perplexity of a model on a text file, on one rank or a TP x PP job.

#include <fmt/format.h>

#include "kernels/core/error.h"
#include "launcher/session.h"
#include "runtime/engine/generate.h"

namespace parafuse {
namespace {

struct EvalPplArgs {
  RunConfigOverrides run;
  std::string text_file;
  int64_t max_tokens = 0;
  bool quiet = false;
};

int run_eval_ppl(const EvalPplArgs& a, LaunchContext& launch) {
  std::vector<int32_t> ids;
  auto configure = [&](RunConfig& run) {
    // The whole text is one sequence: make sure the KV cache can hold what is scored.
    if (a.max_tokens > 0)
      run.batch.kv_cache_tokens = std::max(run.batch.kv_cache_tokens, a.max_tokens + 16);
  };
  auto check = [&](Session& s) {
    ids = tokenize_text_file(s.tokenizer(), a.text_file, a.max_tokens);
    const int64_t limit = std::min(s.run.batch.kv_cache_tokens, s.files.config.max_position_embeddings);
    PF_CHECK(int64_t(ids.size()) <= limit,
             "{} tokens do not fit (context {}, KV cache {} tokens): pass --max-tokens",
             ids.size(), s.files.config.max_position_embeddings, s.run.batch.kv_cache_tokens);
  };
  Session s = open_session(a.run, launch, a.quiet, configure, check);
  s.engine->reset_stats();
  const PerplexityResult r = perplexity(*s.engine, ids);
  if (s.is_root())
    fmt::print("perplexity {:.4f} over {} tokens (mean NLL {:.4f}) of {}\n", r.perplexity,
               r.tokens, r.mean_nll, a.text_file);
  if (!a.quiet) s.log_step_stats("eval-ppl");
  return 0;
}

}  // namespace

Command add_eval_ppl_command(CLI::App& app) {
  auto a = std::make_shared<EvalPplArgs>();
  CLI::App* cmd = app.add_subcommand("eval-ppl", "Perplexity of the model on a text file");
  add_run_config_options(*cmd, a->run);
  cmd->add_option("--text", a->text_file, "UTF-8 text file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--max-tokens", a->max_tokens,
                  "Score only the first N tokens (0: all; the text must fit the context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("-q,--quiet", a->quiet, "No progress bar or timing lines on stderr");
  return [a](LaunchContext& launch) { return run_eval_ppl(*a, launch); };
}

}  // namespace parafuse

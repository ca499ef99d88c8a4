// `parafuse eval-ppl`: perplexity of a model on a text file, on one rank or a TP x PP job.

#include <fmt/format.h>

#include "launcher/cli.h"
#include "launcher/session.h"
#include "launcher/text_input.h"
#include "runtime/engine/generate.h"

namespace parafuse {
namespace {

struct EvalPplArgs {
  SessionFlags session;
  TextInput text;
};

int run_eval_ppl(EvalPplArgs& a, LaunchContext& launch) {
  std::vector<int32_t> ids;
  Session s = SessionBuilder(launch, a.session)
                  .configure([&](RunConfig& run) { a.text.size_kv_cache(run); })
                  .check([&](Session& session) { ids = a.text.tokens(session, "eval-ppl"); })
                  .build();
  s.engine->reset_stats();
  const PerplexityResult r = perplexity(*s.engine, ids);
  if (s.is_root())
    fmt::print("perplexity {:.4f} over {} tokens (mean NLL {:.4f}) of {}\n", r.perplexity, r.tokens,
               r.mean_nll, a.text.path);
  if (!s.quiet) s.log_step_stats("eval-ppl");
  return 0;
}

}  // namespace

Command add_eval_ppl_command(CLI::App& app) {
  auto [cmd, a] =
      add_model_command<EvalPplArgs>(app, "eval-ppl", "Perplexity of the model on a text file");
  a->text.add_options(*cmd, "UTF-8 text file", true, "--max-tokens",
                      "Score only the first N tokens (0: all; the text must fit the context)",
                      true);
  return runs(a, run_eval_ppl);
}

}  // namespace parafuse

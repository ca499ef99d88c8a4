// `parafuse plan`: from an analysis (parafuse analyze) and held-out text to a fusion plan YAML
// within a quality budget (runtime/fusion/planner.h), printing every evaluated merge so the
// user sees what each fusion cost before the checkpoint is rewritten by `parafuse fuse`.
#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"
#include "launcher/text_input.h"
#include "runtime/fusion/planner.h"

namespace parafuse {
namespace {

struct PlanArgs {
  SessionFlags session;
  std::string analysis_file;
  TextInput text{256};
  PlannerOptions planner;  // --max-ppl-increase and --max-kl set its budget directly
  std::string out_file;
};

std::string describe_quality(const QualityResult& q) {
  return fmt::format("ppl {:.4f} ({:+.3f}%), KL {:.5f}", q.perplexity, q.ppl_increase_pct,
                     q.mean_kl);
}

std::string budget_text(const PlannerOptions& o) {
  std::vector<std::string> parts;
  if (o.max_ppl_increase_pct)
    parts.push_back(fmt::format("perplexity +{}% at most", *o.max_ppl_increase_pct));
  if (o.max_kl) parts.push_back(fmt::format("mean KL {} at most", *o.max_kl));
  if (parts.empty()) parts.push_back("perplexity +1% at most (the default)");
  return fmt::format("{}", fmt::join(parts, ", "));
}

int run_plan(PlanArgs& a, LaunchContext& launch) {
  std::vector<int32_t> ids;
  FusionAnalysis analysis;
  auto check = [&](Session& s) {
    analysis = load_analysis(a.analysis_file);
    PF_CHECK(analysis.model_blocks == s.files.config.n_blocks(),
             "{} was made for a model with {} blocks ({}), this model has {}", a.analysis_file,
             analysis.model_blocks, analysis.model, s.files.config.n_blocks());
    ids = a.text.tokens(s, "plan");
  };
  Session s = SessionBuilder(launch, a.session)
                  .single_rank("plan")
                  .configure([&](RunConfig& run) { a.text.size_kv_cache(run); })
                  .check(check)
                  .build();

  fmt::print("planning FFN fusion of {} on {} held-out tokens of {}; budget: {}\n", s.run.model,
             ids.size(), a.text.path, budget_text(a.planner));
  std::fflush(stdout);
  const PlanResult r = plan_fusion(*s.engine, analysis, ids, a.planner, [](const PlanStep& st) {
    const std::string dep =
        st.dependency < 0 ? std::string("not measured") : fmt::format("{:.3e}", st.dependency);
    fmt::print("step {:>3}: join {:>3} + {:<3} -> group [{}] (dependency {}): {} -> {}\n", st.step,
               st.left, st.right, fmt::join(st.group, ", "), dep, describe_quality(st.quality),
               st.accepted ? "accepted" : "rejected");
    std::fflush(stdout);
  });

  fmt::print("baseline perplexity {:.4f}\n", r.baseline_perplexity);
  if (r.removal)
    fmt::print("attention removed at [{}] (newly: [{}]): {} vs the original model\n",
               fmt::join(r.plan.remove_attention, ", "), fmt::join(r.newly_removed, ", "),
               describe_quality(*r.removal));
  if (r.runs.empty())
    fmt::print("no run of 2 or more fusable FFNs{}; nothing to fuse\n",
               a.planner.fuse_last ? "" : " (the last FFN of each run is left out: --fuse-last)");
  for (const auto& run : r.runs) fmt::print("fusable run: [{}]\n", fmt::join(run, ", "));
  if (std::any_of(r.steps.begin(), r.steps.end(),
                  [](const PlanStep& st) { return st.dependency < 0; }))
    fmt::print(
        "note: some dependencies were not measured (their blocks had attention during the "
        "analysis); they were tried last, by block id. For the paper's order, rerun "
        "`parafuse analyze --plan` with remove_attention: [{}]\n",
        fmt::join(r.plan.remove_attention, ", "));
  int fused = 0;
  for (const auto& g : r.plan.fuse) fused += int(g.size());
  fmt::print(
      "final plan: {} group(s) fusing {} FFNs into {}: {} vs the model after removals; "
      "{} vs the original\n",
      r.plan.fuse.size(), fused, r.plan.fuse.size(), describe_quality(r.final_quality),
      describe_quality(r.final_vs_original));

  const std::string comment = fmt::format(
      "parafuse fusion plan for {}\n"
      "made by `parafuse plan` from {} on {} held-out tokens of {}\n"
      "budget: {}{}\n"
      "baseline ppl {:.4f}; this plan: {} vs the original",
      s.run.model, a.analysis_file, ids.size(), a.text.path, budget_text(a.planner),
      a.planner.fuse_last ? ", last FFN of each run included" : "", r.baseline_perplexity,
      describe_quality(r.final_vs_original));
  const std::filesystem::path out(a.out_file);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  save_fusion_plan(r.plan, a.out_file, comment);
  fmt::print("{}wrote {}\n", r.plan.to_yaml(), a.out_file);
  return 0;
}

}  // namespace

Command add_plan_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<PlanArgs>(
      app, "plan", "Choose FFN groups to fuse (and attention to remove) within a quality budget");
  cmd->add_option("--analysis", a->analysis_file, "analysis.json from `parafuse analyze`")
      ->required()
      ->check(CLI::ExistingFile);
  a->text.add_options(*cmd,
                      "Held-out text (UTF-8 file) the quality budget is measured on; best not the "
                      "calibration text",
                      true, "--tokens", "Held-out tokens at most (from the text's start)");
  cmd->add_option("--remove-attention", a->planner.remove_attention,
                  "First remove the K least important attention sublayers (by the analysis)")
      ->capture_default_str()
      ->check(int_flag(kNonNegativeInt));
  auto* ppl = cmd->add_option("--max-ppl-increase", a->planner.max_ppl_increase_pct,
                              "Budget: perplexity increase in percent over the model after "
                              "removals (default 1)")
                  ->check(number_flag(kNonNegativeNumber));
  cmd->add_option("--max-kl", a->planner.max_kl,
                  "Budget: mean KL divergence (nats per token) instead")
      ->check(number_flag(kNonNegativeNumber))
      ->excludes(ppl);
  cmd->add_flag("--fuse-last", a->planner.fuse_last,
                "Also fuse the last FFN of each run (the paper leaves it out)");
  cmd->add_option("--max-steps", a->planner.max_steps, "Merges evaluated at most")
      ->capture_default_str()
      ->check(int_flag(kNonNegativeInt));
  cmd->add_option("--out", a->out_file, "The plan YAML to write")->required();
  return runs(a, run_plan);
}

}  // namespace parafuse

// `parafuse fuse`: rewrite a checkpoint by a fusion plan (runtime/fusion/fuse.h) and report
// what changed: blocks, all-reduces per token, parameters, perplexity and KL on held-out text
// (--text), and the per-token decode latency at batch 1 and 32 on this process (--bench).
// Latency at tp=2: `parafuse bench` under `mpirun -np 2` on both folders (bench/fusion_demo.sh).
#include <filesystem>

#include <fmt/format.h>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/fusion_commands.h"
#include "launcher/progress_bar.h"
#include "launcher/session.h"
#include "runtime/engine/throughput.h"
#include "runtime/fusion/fuse.h"
#include "runtime/fusion/quality.h"

namespace parafuse {
namespace {

struct FuseArgs {
  RunConfigOverrides run;
  std::string plan_path;
  std::string out_dir;
  std::string storage = "f32";
  std::string text_file;
  int tokens = 256;
  bool bench = false;
  std::vector<int> bench_batches = {1, 32};
  bool quiet = false;
};

std::string millions(int64_t n) { return fmt::format("{:.2f} M", double(n) / 1e6); }

int run_fuse(const FuseArgs& a, LaunchContext& launch) {
  FusionPlan plan;
  std::vector<int32_t> heldout;
  auto check = [&](Session& s) {
    require_single_rank(s, "fuse");
    plan = load_fusion_plan(a.plan_path);
    plan.validate(s.files.config);
    if (!a.text_file.empty()) heldout = text_tokens(s, a.text_file, a.tokens, "fuse");
  };
  Session s = open_session(a.run, launch, a.quiet, {}, check);
  QualityBaseline baseline;
  if (!heldout.empty()) baseline = quality_baseline(*s.engine, heldout);
  std::vector<ThroughputResult> before, after;
  if (a.bench)
    for (int b : a.bench_batches) before.push_back(measure_throughput(*s.engine, b, 32, 8));

  ProgressBar bar("writing " + a.out_dir, !a.quiet);
  const FuseStats stats = write_fused_checkpoint(
      s.files.config, *s.files.weights, plan, a.out_dir,
      s.files.tokenizer ? &*s.files.tokenizer : nullptr,
      a.storage == "bf16" ? DType::BF16 : DType::F32,
      [&](size_t done, size_t total) { bar.update(done, total); });
  bar.finish();

  // The fused model, loaded back the way any user would load it.
  ModelFiles fused = open_model(a.out_dir);
  auto backend = make_cpu_backend(resolve_threads(s.run.threads));
  EngineOptions eo;
  eo.kv_cache_tokens = s.engine->options().kv_cache_tokens;
  eo.max_batch_tokens = s.engine->options().max_batch_tokens;
  eo.page_size = s.engine->options().page_size;
  Engine fused_engine(fused.config, *fused.weights, *backend, eo);
  QualityResult q_after;
  if (!heldout.empty()) q_after = evaluate(fused_engine, baseline, {});
  if (a.bench)
    for (int b : a.bench_batches) after.push_back(measure_throughput(fused_engine, b, 32, 8));

  fmt::print("fused checkpoint written to {} ({} fusion groups, {} attention sublayers removed)\n",
             a.out_dir, plan.fuse.size(), plan.remove_attention.size());
  fmt::print("{:<28} {:>14} {:>14}\n", "", "before", "after");
  fmt::print("{:<28} {:>14} {:>14}\n", "blocks", stats.blocks_before, stats.blocks_after);
  fmt::print("{:<28} {:>14} {:>14}\n", "all-reduces per token", stats.all_reduces_before,
             stats.all_reduces_after);
  fmt::print("{:<28} {:>14} {:>14}\n", "parameters", millions(stats.parameters_before),
             millions(stats.parameters_after));
  if (!heldout.empty()) {
    fmt::print("{:<28} {:>14.4f} {:>14.4f}  ({:+.2f}%, {} tokens of {})\n", "perplexity",
               baseline.perplexity, q_after.perplexity, q_after.ppl_increase_pct,
               baseline.predictions(), a.text_file);
    fmt::print("{:<28} {:>14.4f} {:>14.4f}\n", "mean KL vs original (nats)", 0.0, q_after.mean_kl);
  }
  for (size_t i = 0; i < before.size(); ++i)
    fmt::print("{:<28} {:>14} {:>14}\n",
               fmt::format("ms/token, batch {}, tp=1", before[i].batch),
               fmt::format("{:.3f}", before[i].decode_step_seconds * 1e3),
               fmt::format("{:.3f}", after[i].decode_step_seconds * 1e3));
  return 0;
}

}  // namespace

Command add_fuse_command(CLI::App& app) {
  auto a = std::make_shared<FuseArgs>();
  CLI::App* cmd = app.add_subcommand(
      "fuse", "Rewrite a checkpoint by a fusion plan: each fused group becomes one wide FFN "
              "(HF nemotron-nas folder), and report blocks, all-reduces, parameters, quality");
  add_run_config_options(*cmd, a->run);
  cmd->add_option("--plan", a->plan_path, "Fusion plan (parafuse plan writes one)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", a->out_dir, "Output folder for the fused checkpoint")->required();
  cmd->add_option("--storage", a->storage, "Weight storage type of the output")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--text", a->text_file,
                  "Held-out text: report perplexity and KL before and after")
      ->check(CLI::ExistingFile);
  cmd->add_option("--tokens", a->tokens, "Held-out tokens to score")
      ->capture_default_str()
      ->check(CLI::Range(2, 4096));
  cmd->add_flag("--bench", a->bench, "Measure per-token decode latency before and after");
  cmd->add_option("--bench-batch", a->bench_batches, "Batch sizes for --bench")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("-q,--quiet", a->quiet, "No progress bars on stderr");
  return [a](LaunchContext& launch) { return run_fuse(*a, launch); };
}

}  // namespace parafuse

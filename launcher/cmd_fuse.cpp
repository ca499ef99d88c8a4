// `parafuse fuse`: rewrite a checkpoint by a fusion plan (runtime/fusion/fuse.h) and report
// what changed: blocks, all-reduces per token, parameters, perplexity and KL on held-out text
// (--text), and the per-token decode latency at batch 1 and 32 on this process (--bench). The
// fused checkpoint is loaded back on the session's own backend (Session::make_engine), so both
// models are timed on the same backend, device and batch options.
// Latency at tp=2: `parafuse bench` under `mpirun -np 2` on both folders (bench/fusion_demo.sh).
#include <filesystem>

#include <fmt/format.h>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/progress_bar.h"
#include "launcher/session.h"
#include "launcher/text_input.h"
#include "runtime/engine/throughput.h"
#include "runtime/fusion/fuse.h"
#include "runtime/fusion/quality.h"

namespace parafuse {
namespace {

struct FuseArgs {
  SessionFlags session;
  std::string plan_path;
  std::string out_dir;
  std::string storage = "f32";
  TextInput text{256};
  bool bench = false;
  std::vector<int> bench_batches = {1, 32};
};

std::string millions(int64_t n) {
  return fmt::format("{:.2f} M", double(n) / 1e6);
}

int run_fuse(FuseArgs& a, LaunchContext& launch) {
  FusionPlan plan;
  std::vector<int32_t> heldout;
  auto check = [&](Session& s) {
    plan = load_fusion_plan(a.plan_path);
    plan.validate(s.files.config);
    if (a.text.given()) heldout = a.text.tokens(s, "fuse");
  };
  Session s = SessionBuilder(launch, a.session)
                  .single_rank("fuse")
                  .configure([&](RunConfig& run) { a.text.size_kv_cache(run); })
                  .check(check)
                  .build();
  QualityBaseline baseline;
  if (!heldout.empty()) baseline = quality_baseline(*s.engine, heldout);
  std::vector<ThroughputResult> before, after;
  if (a.bench)
    for (int b : a.bench_batches) before.push_back(measure_throughput(*s.engine, b, 32, 8));

  ProgressBar bar("writing " + a.out_dir, !s.quiet);
  const FuseStats stats =
      write_fused_checkpoint(s.files.config, *s.files.weights, plan, a.out_dir,
                             s.files.tokenizer ? &*s.files.tokenizer : nullptr,
                             a.storage == "bf16" ? DType::BF16 : DType::F32,
                             [&](size_t done, size_t total) { bar.update(done, total); });
  bar.finish();

  // The fused model, loaded back the way any user would load it, onto the same backend.
  const ModelFiles fused = open_model(a.out_dir);
  const std::unique_ptr<Engine> fused_engine = s.make_engine(fused);
  QualityResult q_after;
  if (!heldout.empty()) q_after = evaluate(*fused_engine, baseline, {});
  if (a.bench)
    for (int b : a.bench_batches) after.push_back(measure_throughput(*fused_engine, b, 32, 8));

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
               baseline.predictions(), a.text.path);
    fmt::print("{:<28} {:>14.4f} {:>14.4f}\n", "mean KL vs original (nats)", 0.0, q_after.mean_kl);
  }
  for (size_t i = 0; i < before.size(); ++i)
    fmt::print("{:<28} {:>14} {:>14}\n",
               fmt::format("ms/token, batch {}, {}", before[i].batch, s.backend->name()),
               fmt::format("{:.3f}", before[i].decode_step_seconds * 1e3),
               fmt::format("{:.3f}", after[i].decode_step_seconds * 1e3));
  if (a.bench)
    fmt::print("both models timed on backend {} (device {}), {} thread(s)\n",
               fused_engine->backend().name(), s.device, s.threads);
  return 0;
}

}  // namespace

Command add_fuse_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<FuseArgs>(
      app, "fuse",
      "Rewrite a checkpoint by a fusion plan: each fused group becomes one wide FFN "
      "(HF nemotron-nas folder), and report blocks, all-reduces, parameters, quality");
  cmd->add_option("--plan", a->plan_path, "Fusion plan (parafuse plan writes one)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", a->out_dir, "Output folder for the fused checkpoint")->required();
  cmd->add_option("--storage", a->storage, "Weight storage type of the output")
      ->capture_default_str()
      ->check(choice_flag({"f32", "bf16"}));
  a->text.add_options(*cmd, "Held-out text: report perplexity and KL before and after", false,
                      "--tokens", "Held-out tokens to score");
  cmd->add_flag("--bench", a->bench,
                "Measure per-token decode latency before and after, on the session's backend");
  add_batch_sizes_option(*cmd, "--bench-batch", a->bench_batches, "Batch sizes for --bench");
  return runs(a, run_fuse);
}

}  // namespace parafuse

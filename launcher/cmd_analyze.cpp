// `parafuse analyze`: the FFN Fusion measurements on calibration text (runtime/fusion/analysis.h)
// written to DIR/analysis.json, plotted to DIR/dependency.png and DIR/blocks.png, and summarised
// on stdout. One rank: the measurements observe every sublayer's full hidden state.
//
// The plots come from runtime/fusion/plot_analysis.py (matplotlib), run as a child process so
// the binary needs no plotting library; when python3 or matplotlib is missing the JSON is kept
// and a warning says how to get the plots.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"
#include "launcher/text_input.h"
#include "runtime/fusion/analysis.h"

extern char** environ;

namespace parafuse {
namespace {

struct AnalyzeArgs {
  SessionFlags session;
  TextInput text{512};
  std::string plan_file;
  std::string out_dir;
  bool plot = true;
};

// Runs `argv` without a shell, its output to /dev/null when `silent`; its exit status, or -1
// when it could not be started or did not exit normally.
int run_process(const std::vector<std::string>& argv, bool silent) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (silent) {
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The plots, by the first interpreter that has matplotlib: `python3` from PATH, then the
// system one (Debian's python3-matplotlib is installed for /usr/bin/python3, which a pyenv or
// virtualenv python3 earlier in PATH does not see). Returns whether the plots were written.
bool write_plots(const std::string& json_path, const std::string& out_dir) {
  const std::string script = std::string(PF_SOURCE_DIR) + "/runtime/fusion/plot_analysis.py";
  if (!std::filesystem::exists(script)) {
    spdlog::warn("no plots: {} is missing (the source tree this binary was built from)", script);
    return false;
  }
  for (const char* python : {"python3", "/usr/bin/python3"}) {
    if (run_process({python, "-c", "import matplotlib"}, true) != 0) continue;
    std::fflush(stdout);  // our lines before the script's
    const int status = run_process({python, script, json_path, out_dir}, false);
    if (status == 0) return true;
    spdlog::warn("no plots: {} {} failed with exit status {}; {} is kept", python, script, status,
                 json_path);
    return false;
  }
  spdlog::warn(
      "no plots: no python3 with matplotlib found (install python3-matplotlib, as "
      "cluster/setup.sh does, then run python3 {} {} {}); {} is kept",
      script, json_path, out_dir, json_path);
  return false;
}

void print_summary(const FusionAnalysis& a) {
  fmt::print("FFN Fusion analysis of {}: {} tokens, {} blocks, {:.1f} s\n", a.model, a.tokens,
             a.model_blocks, a.seconds);
  if (!a.removed_attention.empty())
    fmt::print("attention removed by the plan: [{}]\n", fmt::join(a.removed_attention, ", "));
  fmt::print("{:>5}  {:>12} {:>12}  {:>12} {:>12}  {}\n", "block", "attn cosdist", "attn ratio",
             "ffn cosdist", "ffn ratio", "");
  for (int b = 0; b < a.model_blocks; ++b) {
    const SublayerStats* at = a.find(b, false);
    const SublayerStats* ff = a.find(b, true);
    const auto cell = [](const SublayerStats* s, bool ratio) {
      if (!s) return fmt::format("{:>12}", "-");
      return fmt::format("{:>12.5f}", ratio ? s->norm_ratio : s->cosine_distance);
    };
    const bool candidate =
        std::find(a.candidates.begin(), a.candidates.end(), b) != a.candidates.end();
    fmt::print("{:>5}  {} {}  {} {}  {}\n", b, cell(at, false), cell(at, true), cell(ff, false),
               cell(ff, true), candidate ? "FFN candidate" : "");
  }
  const std::vector<int> ranking = a.attention_ranking();
  const size_t shown = std::min<size_t>(ranking.size(), 10);
  fmt::print("least important attention (lowest cosine distance first): [{}]{}\n",
             fmt::join(ranking.begin(), ranking.begin() + long(shown), ", "),
             ranking.size() > shown ? ", ..." : "");
  if (a.candidates.size() >= 2) {
    fmt::print("dependency of fusable neighbours (FFN j without FFN i):\n");
    for (size_t c = 0; c + 1 < a.candidates.size(); ++c)
      if (a.candidates[c + 1] == a.candidates[c] + 1 && !a.candidate_has_attention[c + 1])
        fmt::print("  {:>4} -> {:<4} {:.3e}\n", a.candidates[c], a.candidates[c + 1],
                   a.dependency[c][c + 1]);
  } else {
    fmt::print(
        "fewer than 2 FFN candidates: no dependency matrix (the model has no "
        "attention-free FFN blocks; pass --plan with remove_attention)\n");
  }
}

int run_analyze(AnalyzeArgs& a, LaunchContext& launch) {
  std::vector<int32_t> ids;
  FusionPlan plan;
  auto check = [&](Session& s) {
    if (!a.plan_file.empty()) {
      plan = load_fusion_plan(a.plan_file);
      plan.validate(s.files.config);
    }
    ids = a.text.tokens(s, "analyze");
    std::filesystem::create_directories(a.out_dir);
  };
  Session s = SessionBuilder(launch, a.session)
                  .single_rank("analyze")
                  .configure([&](RunConfig& run) { a.text.size_kv_cache(run); })
                  .check(check)
                  .build();

  AnalysisOptions options;
  options.plan = a.plan_file.empty() ? nullptr : &plan;
  options.model_name = s.run.model;
  options.on_forward = [&](const AnalysisProgress& p) {
    if (!s.quiet) spdlog::info("analyze: forward {}/{} ({})", p.forward, p.forwards, p.what);
  };
  const FusionAnalysis analysis = analyze_fusion(*s.engine, ids, options);
  const std::string json_path = (std::filesystem::path(a.out_dir) / "analysis.json").string();
  save_analysis(analysis, json_path);
  print_summary(analysis);
  fmt::print("wrote {}\n", json_path);
  if (a.plot) write_plots(json_path, a.out_dir);  // the script says what it wrote
  return 0;
}

}  // namespace

Command add_analyze_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<AnalyzeArgs>(
      app, "analyze",
      "FFN Fusion analysis on calibration text: per-sublayer importance and the block-wise FFN "
      "dependency matrix (JSON + plots)");
  a->text.add_options(*cmd, "Calibration text (UTF-8 file)", true, "--tokens",
                      "Calibration tokens at most (from the text's start)");
  cmd->add_option("--plan", a->plan_file,
                  "Fusion plan whose remove_attention list applies during the analysis (makes "
                  "attention-free candidates on models without any)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", a->out_dir, "Output folder: analysis.json, dependency.png, blocks.png")
      ->required();
  cmd->add_flag("--plot,!--no-plot", a->plot, "Write the PNG plots (python3 + matplotlib)")
      ->capture_default_str();
  return runs(a, run_analyze);
}

}  // namespace parafuse

// `parafuse predict`: what a model will do on a cluster before anyone books it. Reads a model
// config (HF config.json, Nemotron-NAS block_configs; optionally rewritten by a fusion plan) and
// a cluster YAML, and prints per TP x PP layout the memory per device and the decode step split
// into its costs (runtime/predict/perf_model.h), then recommends a layout for a goal. It prints
// every constant it used with its source, so a reader can check each one.
// `--calibrate` measures this machine instead (launcher/calibrate.h) and writes a cluster YAML.
// No model is loaded and no rank runs a forward: it needs no GPU and no weights.
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "launcher/calibrate.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"  // SetupError
#include "parallel/mpi_comm.h"
#include "runtime/fusion/fuse.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/model/gguf.h"  // config_from_gguf
#include "runtime/model/model_config.h"
#include "runtime/predict/perf_model.h"

namespace parafuse {
namespace {

struct PredictArgs {
  std::string model_path;
  std::string cluster_path;
  int tp = 0, pp = 0;  // 0: every layout
  std::string dtype = "bf16";
  std::vector<int> batches = {1};
  int input_len = 1024;
  int output_len = 256;
  std::string fusion_plan;
  std::string json_path;
  std::string goal = "latency";
  double min_tokens_per_user = 0;
  bool calibrate = false;
  std::string out_path;
  std::string backend = "cpu";
  bool quiet = false;
};

// A config.json, an HF folder (its config.json) or a .gguf (its metadata): no weights are read.
ModelConfig load_model_config(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.size() > 5 && path.ends_with(".gguf")) return config_from_gguf(GgufFile(path));
  if (fs::is_directory(path)) return load_hf_config((fs::path(path) / "config.json").string());
  return load_hf_config(path);
}

void print_constants(const ClusterSpec& cluster) {
  fmt::print("constants ({}):\n", cluster.origin);
  std::string last_source = "\x01";
  for (const ClusterConstant& c : cluster.constants) {
    if (c.source != last_source) {
      fmt::print("  [source: {}]\n", c.source.empty() ? "not given" : c.source);
      last_source = c.source;
    }
    fmt::print("    {:<44} {:g}\n", c.key, c.value);
  }
  fmt::print(
      "  model assumptions: kernels per block as parafuse's engine runs them (attention 6, "
      "SwiGLU FFN 5, linear 3; embedding 1, head 3); one all-reduce per row-parallel GEMM and "
      "one for the vocab-parallel embedding; KV heads replicated when fewer than tp; embedding "
      "and LM head in bf16 for fp8 runs; fp8 runs keep an fp8 KV cache; decode context = input "
      "+ output/2; micro-batches = min(pp, batch)\n");
}

int run_predict(PredictArgs& a, LaunchContext& launch) {
  if (a.calibrate) {
    calibrate_cluster(launch, {a.backend, a.out_path, a.quiet});
    return 0;
  }
  if (launch.mpi && launch.mpi->rank() != 0) return 0;  // one answer per job
  ModelConfig model;
  ClusterSpec cluster;
  PredictDType dtype;
  try {
    PF_CHECK(!a.model_path.empty(), "--model CONFIG.json is required (or --calibrate)");
    PF_CHECK(!a.cluster_path.empty(), "--cluster CLUSTER.yaml is required (or --calibrate)");
    model = load_model_config(a.model_path);
    if (!a.fusion_plan.empty()) model = fused_config(model, load_fusion_plan(a.fusion_plan));
    cluster = load_cluster(a.cluster_path);
    dtype = parse_predict_dtype(a.dtype);
    (void)cluster.gemm_tflops(a.dtype);  // the cluster must know this dtype's rate
  } catch (const Error& e) {
    throw SetupError(e.what(), 0);
  }
  const Workload work{a.input_len, a.output_len, dtype};

  std::vector<Layout> layouts;
  if (a.tp || a.pp) {
    const Layout l{a.tp ? a.tp : std::max(1, cluster.total_devices() / std::max(a.pp, 1)),
                   a.pp ? a.pp : std::max(1, cluster.total_devices() / std::max(a.tp, 1))};
    const std::string problem = layout_problem(model, cluster, l);
    if (!problem.empty())
      throw SetupError(fmt::format("tp {} x pp {} cannot run {} on {}: {}", l.tp, l.pp,
                                   a.model_path, cluster.name, problem),
                       0);
    layouts.push_back(l);
  } else {
    layouts = candidate_layouts(model, cluster);
    if (layouts.empty())
      throw SetupError(fmt::format("no tp x pp layout of {}'s {} devices can run {}", cluster.name,
                                   cluster.total_devices(), a.model_path),
                       0);
  }

  int ffn_blocks = 0, attention_blocks = 0;
  for (const BlockConfig& b : model.blocks) {
    ffn_blocks += b.ffn != FfnKind::None;
    attention_blocks += b.attention != AttentionKind::None;
  }
  fmt::print(
      "model: {} ({} blocks: {} with attention, {} with an FFN; {:.1f}B parameters; "
      "{:.1f} GiB of weights at {})\n",
      a.model_path, model.n_blocks(), attention_blocks, ffn_blocks,
      double(count_parameters(model)) / 1e9,
      model_weight_bytes(model, dtype) / (1024.0 * 1024 * 1024), a.dtype);
  fmt::print("cluster: {} ({} x {} devices, {})\n", cluster.name, cluster.nodes,
             cluster.devices_per_node, cluster.device_name);
  fmt::print("workload: {} weights, input {} tokens, output {} tokens, batch {}\n", a.dtype,
             a.input_len, a.output_len, fmt::join(a.batches, ","));
  print_constants(cluster);
  fmt::print(
      "\n{:>3} {:>3} {:>5} {:>9} {:>4} | {:>8} {:>6} {:>6} {:>11} {:>6} {:>11} | {:>8} "
      "{:>10} {:>9} {:>9}  {}\n",
      "tp", "pp", "batch", "GiB/dev", "fits", "weights", "kv", "gemm", "allred (n)", "pipe",
      "launch (n)", "step ms", "tok/s/user", "tok/s", "TTFT ms", "placement");
  std::vector<PointPrediction> points;
  for (const Layout& l : layouts) {
    for (int batch : a.batches) {
      const PointPrediction p = predict_point(model, cluster, l, work, batch);
      points.push_back(p);
      fmt::print(
          "{:>3} {:>3} {:>5} {:>9.1f} {:>4} | {:>8.2f} {:>6.2f} {:>6.2f} {:>6.2f} ({:>3}) "
          "{:>6.2f} {:>5.2f} ({:>4}) | {:>8.2f} {:>10.2f} {:>9.1f} {:>9.1f}  {}\n",
          l.tp, l.pp, batch, p.memory.total(), p.fits ? "yes" : "NO", p.step.weights, p.step.kv,
          p.step.compute, p.step.all_reduce, p.step.all_reduces, p.step.pipeline, p.step.launch,
          p.step.kernels, p.step_ms, p.tokens_per_s_per_user, p.tokens_per_s, p.ttft_ms,
          p.placement);
    }
  }
  const Recommendation rec = recommend(points, a.goal, a.min_tokens_per_user);
  fmt::print("\nrecommendation ({}{}): {}\n",
             a.goal == "latency" ? "lowest latency" : "most tokens/s",
             a.goal == "throughput"
                 ? fmt::format(" with at least {:g} tokens/s per user", a.min_tokens_per_user)
                 : "",
             rec.why);

  if (!a.json_path.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    for (const PointPrediction& p : points)
      rows.push_back({{"tp", p.layout.tp},
                      {"pp", p.layout.pp},
                      {"dtype", a.dtype},
                      {"batch", p.batch},
                      {"memory_gib_per_gpu", p.memory.total()},
                      {"memory_gib",
                       {{"weights", p.memory.weights},
                        {"kv_cache", p.memory.kv_cache},
                        {"activations", p.memory.activations}}},
                      {"step_ms", p.step_ms},
                      {"step_ms_split",
                       {{"weights", p.step.weights},
                        {"kv", p.step.kv},
                        {"gemm_compute", p.step.compute},
                        {"all_reduce", p.step.all_reduce},
                        {"pipeline", p.step.pipeline},
                        {"launch", p.step.launch}}},
                      {"all_reduces_per_token", p.step.all_reduces},
                      {"kernels_per_token", p.step.kernels},
                      {"tokens_per_s_per_user", p.tokens_per_s_per_user},
                      {"tokens_per_s", p.tokens_per_s},
                      {"ttft_ms", p.ttft_ms},
                      {"fits", p.fits},
                      {"placement", p.placement}});
    nlohmann::json constants = nlohmann::json::array();
    for (const ClusterConstant& c : cluster.constants)
      constants.push_back({{"key", c.key}, {"value", c.value}, {"source", c.source}});
    nlohmann::json j = {{"benchmark", "parafuse predict"},
                        {"model", a.model_path},
                        {"fusion_plan", a.fusion_plan},
                        {"cluster", a.cluster_path},
                        {"cluster_name", cluster.name},
                        {"input_len", a.input_len},
                        {"output_len", a.output_len},
                        {"constants", constants},
                        {"layouts", rows},
                        {"recommendation",
                         {{"goal", a.goal},
                          {"found", rec.found},
                          {"tp", rec.best.layout.tp},
                          {"pp", rec.best.layout.pp},
                          {"batch", rec.best.batch},
                          {"why", rec.why}}}};
    std::ofstream out(a.json_path);
    out << j.dump(2) << "\n";
    PF_CHECK(out.good(), "cannot write --json file '{}'", a.json_path);
    fmt::print("wrote {}\n", a.json_path);
  }
  return 0;
}

}  // namespace

Command add_predict_command(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  CLI::App* cmd = app.add_subcommand(
      "predict",
      "Predict memory, step time and tokens/s of a model on a cluster for every TP x PP layout "
      "(analytic; no GPU, no weights), or --calibrate this machine into a cluster file");
  cmd->add_option("-m,--model", a->model_path,
                  "Model config: an HF config.json (block_configs too), an HF folder or a .gguf "
                  "(metadata only; no weights are read)");
  cmd->add_option("--cluster", a->cluster_path, "Cluster YAML (configs/clusters/)");
  cmd->add_option("--tp", a->tp, "Tensor-parallel size (default: every layout that fits)")
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--pp", a->pp, "Pipeline stages (default: every layout that fits)")
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--dtype", a->dtype, "Weight dtype")
      ->capture_default_str()
      ->check(choice_flag({"bf16", "fp8", "f32"}));
  add_batch_sizes_option(*cmd, "--batch", a->batches, "Batch sizes (users decoding together)");
  cmd->add_option("--input-len", a->input_len, "Prompt tokens per user")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--output-len", a->output_len, "Generated tokens per user")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--fusion-plan", a->fusion_plan, "Predict the model rewritten by this plan");
  cmd->add_option("--goal", a->goal, "What the recommendation optimizes")
      ->capture_default_str()
      ->check(choice_flag({"latency", "throughput"}));
  cmd->add_option("--min-tokens-per-user", a->min_tokens_per_user,
                  "With --goal throughput: the per-user floor (tokens/s)")
      ->capture_default_str()
      ->check(number_flag(kNonNegativeNumber));
  cmd->add_option("--json", a->json_path, "Write the predictions as JSON here");
  cmd->add_flag("--calibrate", a->calibrate,
                "Measure this machine (memory bandwidth, GEMM rate, per-op cost, all-reduce per "
                "rank count under mpirun) and write a cluster YAML to --out");
  cmd->add_option("--out", a->out_path, "With --calibrate: the cluster YAML to write");
  cmd->add_option("--backend", a->backend, "With --calibrate: the backend whose GEMM is timed")
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", a->quiet, "No progress lines on stderr");
  return runs(a, run_predict);
}

}  // namespace parafuse

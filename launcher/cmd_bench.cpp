// `parafuse bench`: a throughput sweep over batch sizes on one rank or a TP x PP job, like
// trtllm-bench / vllm bench: B sequences prefilled, then decode steps advancing all of them;
// per batch: prefill tok/s, decode step time (= per-token latency of each user), decode tok/s,
// all-reduces per step, and the step time split into compute and communication (averaged over
// ranks). Prints a table on rank 0 and writes JSON.
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"
#include "parallel/mpi_comm.h"
#include "runtime/engine/throughput.h"

namespace parafuse {
namespace {

struct BenchArgs {
  SessionFlags session;
  std::vector<int> batches = {1, 8, 32};
  int prompt_tokens = 64;
  int decode_steps = 16;
  std::string json_path;
  std::string label;
};

int run_bench(BenchArgs& a, LaunchContext& launch) {
  auto configure = [&](RunConfig& run) {
    // Room for the largest batch, unless the user sized the cache.
    const int max_batch = *std::max_element(a.batches.begin(), a.batches.end());
    const int64_t need =
        int64_t(max_batch) * (a.prompt_tokens + a.decode_steps + 2 * run.batch.page_size);
    if (!a.session.run.kv_cache_tokens)
      run.batch.kv_cache_tokens = std::max(run.batch.kv_cache_tokens, need);
  };
  Session s = SessionBuilder(launch, a.session).configure(configure).build();
  const int ranks = s.grid->world_size();
  nlohmann::json results = nlohmann::json::array();
  if (s.is_root())
    fmt::print("{:>6} {:>12} {:>14} {:>12} {:>12} {:>11} {:>11} {:>11}\n", "batch", "prefill t/s",
               "step (ms)", "decode t/s", "allred/step", "compute ms", "collect ms", "pipe ms");
  for (int batch : a.batches) {
    // Warm-up once (allocations, page faults), then measure.
    measure_throughput(*s.engine, batch, a.prompt_tokens, 2);
    ThroughputResult r = measure_throughput(*s.engine, batch, a.prompt_tokens, a.decode_steps);
    // Communication shares averaged over ranks; all-reduces summed over TP groups (counted on
    // each group's tp rank 0).
    std::vector<float> v = {float(r.compute_seconds_per_step), float(r.collective_seconds_per_step),
                            float(r.transport_seconds_per_step),
                            float(s.grid->tp_rank() == 0 ? r.all_reduces_per_step : 0)};
    if (s.world) s.world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, 4, 4});
    const double compute = v[0] / ranks, collective = v[1] / ranks, pipe = v[2] / ranks;
    if (!s.is_root()) continue;
    fmt::print("{:>6} {:>12.1f} {:>14.3f} {:>12.1f} {:>12.1f} {:>11.3f} {:>11.3f} {:>11.3f}\n",
               batch, r.prefill_tokens_per_second, r.decode_step_seconds * 1e3,
               r.decode_tokens_per_second, double(v[3]), compute * 1e3, collective * 1e3,
               pipe * 1e3);
    results.push_back({{"batch", batch},
                       {"prompt_tokens", r.prompt_tokens},
                       {"decode_steps", r.decode_steps},
                       {"prefill_seconds", r.prefill_seconds},
                       {"prefill_tokens_per_second", r.prefill_tokens_per_second},
                       {"decode_step_seconds", r.decode_step_seconds},
                       {"decode_tokens_per_second", r.decode_tokens_per_second},
                       {"tokens_per_second_per_user", 1.0 / r.decode_step_seconds},
                       {"all_reduces_per_step", v[3]},
                       {"compute_seconds_per_step", compute},
                       {"collective_seconds_per_step", collective},
                       {"pipeline_seconds_per_step", pipe}});
  }
  if (s.is_root() && !a.json_path.empty()) {
    nlohmann::json j = {{"benchmark", "parafuse bench"},
                        {"label", a.label},
                        {"model", s.run.model},
                        {"backend", s.run.backend},
                        {"tp", s.run.tp},
                        {"pp", s.run.pp},
                        {"transport", s.run.pp > 1 ? s.run.transport : "none"},
                        {"threads_per_rank", s.threads},
                        {"ranks", ranks},
                        {"results", results}};
    std::ofstream out(a.json_path);
    out << j.dump(2) << "\n";
    PF_CHECK(out.good(), "cannot write --json file '{}'", a.json_path);
    fmt::print("wrote {}\n", a.json_path);
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<BenchArgs>(
      app, "bench",
      "Throughput sweep over batch sizes: prefill and decode tokens/s, per-token "
      "latency, all-reduces and communication time per step");
  add_batch_sizes_option(*cmd, "--batch", a->batches, "Batch sizes (sequences decoded together)");
  cmd->add_option("--prompt-tokens", a->prompt_tokens, "Prompt length of each sequence")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--decode-steps", a->decode_steps, "Timed decode steps per batch size")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--json", a->json_path, "Write the results as JSON here (rank 0)");
  cmd->add_option("--label", a->label, "A label stored in the JSON");
  // `parafuse bench serve` (cmd_bench_serve.cpp) load-tests a server instead of a model.
  const Command serve = add_bench_serve_command(*cmd);
  const CLI::App* serve_cmd = cmd->get_subcommand("serve");
  const Command sweep = runs(a, run_bench);
  return [serve, serve_cmd, sweep](LaunchContext& launch) {
    return serve_cmd->parsed() ? serve(launch) : sweep(launch);
  };
}

}  // namespace parafuse

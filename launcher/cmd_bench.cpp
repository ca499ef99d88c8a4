// `parafuse bench`: a throughput sweep on one rank or a TP x PP job, the tool users compare with
// trtllm-bench: for every batch size x input length x output length, B sequences prefilled
// together, then decode steps advancing all of them (runtime/engine/throughput.h). Per point:
// output tokens/s (whole requests and decode alone), tokens/s per user (1 / TPOT) and per rank,
// TTFT and TPOT (mean, p50, p90, p99), prefill tokens/s, all-reduces per step and their time,
// pipeline waits (communication shares averaged over ranks), and the weight bandwidth decode
// reaches (every rank's weight bytes per step over its step time, summed), on the cpu backend
// beside the copy and read bandwidth all ranks measure together after the sweep. Rank 0 prints a
// row per point as it finishes, a progress bar on stderr, a trtllm-bench-style performance overview
// at the end, and writes --json and --csv (bench/plot_sweep.py draws the JSON).
#include <algorithm>
#include <fstream>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "launcher/cli.h"
#include "launcher/progress_bar.h"
#include "launcher/session.h"
#include "parallel/mpi_comm.h"
#include "runtime/engine/throughput.h"

namespace parafuse {
namespace {

struct BenchArgs {
  SessionFlags session;
  std::vector<int> batches = {1, 8, 32};
  int max_batch = 0;  // > 0: powers of two up to it, instead of --batch
  std::vector<int> input_lens = {64};
  std::vector<int> output_lens = {16};
  std::string json_path;
  std::string csv_path;
  std::string label;
};

// Mean and numpy-style (linear) percentiles, in milliseconds.
struct Stats {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};
Stats stats_ms(std::vector<double> seconds) {
  Stats s;
  if (seconds.empty()) return s;
  std::sort(seconds.begin(), seconds.end());
  auto pct = [&](double q) {
    const double pos = q * double(seconds.size() - 1);
    const size_t lo = size_t(pos);
    const size_t hi = std::min(lo + 1, seconds.size() - 1);
    return (seconds[lo] + (pos - double(lo)) * (seconds[hi] - seconds[lo])) * 1e3;
  };
  s.mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / double(seconds.size()) * 1e3;
  s.p50 = pct(0.5);
  s.p90 = pct(0.9);
  s.p99 = pct(0.99);
  return s;
}

nlohmann::json stats_json(const Stats& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}};
}

struct Point {
  int batch = 0, input_len = 0, output_len = 0;
  ThroughputResult r;
  Stats ttft, tpot;
  double output_tokens_per_s = 0;  // whole requests: B * output / (prefill + decode)
  double tokens_per_s_per_user = 0;
  double tokens_per_s_per_rank = 0;
  double all_reduces_per_step = 0;
  double compute_ms = 0, collective_ms = 0, pipeline_ms = 0;
  double weight_bandwidth = 0;  // bytes/s: each rank's weight bytes per decode step / its step
                                // time (median), summed over ranks
};

const char* kCsvHeader =
    "label,model,backend,tp,pp,ranks,batch,input_len,output_len,output_tokens_per_s,"
    "decode_tokens_per_s,tokens_per_s_per_user,tokens_per_s_per_rank,ttft_ms_mean,ttft_ms_p50,"
    "ttft_ms_p90,ttft_ms_p99,tpot_ms_mean,tpot_ms_p50,tpot_ms_p90,tpot_ms_p99,"
    "prefill_tokens_per_s,all_reduces_per_step,allreduce_ms_per_step,pipeline_ms_per_step,"
    "compute_ms_per_step\n";

// Decode's weight bandwidth as a share of what the ranks' memory can do (cpu backend only).
std::string bandwidth_note(double weight_bandwidth, const MemoryBandwidth& memory) {
  if (memory.copy <= 0) return "";
  return fmt::format(" = {:.0f}% of copy, {:.0f}% of read", 100.0 * weight_bandwidth / memory.copy,
                     100.0 * weight_bandwidth / memory.read);
}

void print_overview(const Session& s, const std::vector<Point>& points, int ranks,
                    const MemoryBandwidth& memory) {
  auto best = [&](auto key) {
    return *std::max_element(points.begin(), points.end(),
                             [&](const Point& a, const Point& b) { return key(a) < key(b); });
  };
  const Point& fastest = best([](const Point& p) { return p.output_tokens_per_s; });
  const Point& snappiest = best([](const Point& p) { return p.tokens_per_s_per_user; });
  fmt::print(
      "\n===========================================================\n"
      "= PERFORMANCE OVERVIEW\n"
      "===========================================================\n");
  fmt::print("Model:                  {}\n", s.run.model);
  fmt::print("Backend:                {} ({} BLAS thread(s) per rank)\n", s.run.backend, s.threads);
  fmt::print("TP Size / PP Size:      {} / {} ({} ranks)\n", s.run.tp, s.run.pp, ranks);
  fmt::print("Points:                 {}\n", points.size());
  if (memory.copy > 0)
    fmt::print(
        "Memory bandwidth:       copy {:.2f} GB/s (read + write), read {:.2f} GB/s (all ranks "
        "at once, {} thread(s) each)\n",
        memory.copy / 1e9, memory.read / 1e9, s.threads);
  for (const auto& [title, p] :
       {std::pair<const char*, const Point&>{"Highest throughput", fastest},
        {"Lowest latency", snappiest}}) {
    const double request_seconds = p.ttft.mean / 1e3 + p.tpot.mean / 1e3 * p.output_len;
    fmt::print("\n-- {} (batch {}, input {}, output {}) --\n", title, p.batch, p.input_len,
               p.output_len);
    fmt::print("Request Throughput (req/sec):                  {:.4f}\n",
               p.batch / request_seconds);
    fmt::print("Total Output Throughput (tokens/sec):          {:.4f}\n", p.output_tokens_per_s);
    fmt::print("Per User Output Throughput (tokens/sec/user):  {:.4f}\n", p.tokens_per_s_per_user);
    fmt::print("Per Rank Output Throughput (tokens/sec/rank):  {:.4f}\n", p.tokens_per_s_per_rank);
    fmt::print("Prefill Throughput (tokens/sec):               {:.4f}\n",
               p.r.prefill_tokens_per_second);
    fmt::print("Average request latency (ms):                  {:.4f}\n", request_seconds * 1e3);
    fmt::print("Decode Weight Bandwidth (GB/s):                {:.4f}{}\n",
               p.weight_bandwidth / 1e9, bandwidth_note(p.weight_bandwidth, memory));
    fmt::print(
        "[TTFT] Time To First Token (ms):   avg {:.3f}  p50 {:.3f}  p90 {:.3f}  p99 {:.3f}\n",
        p.ttft.mean, p.ttft.p50, p.ttft.p90, p.ttft.p99);
    fmt::print(
        "[TPOT] Time Per Output Token (ms): avg {:.3f}  p50 {:.3f}  p90 {:.3f}  p99 {:.3f}\n",
        p.tpot.mean, p.tpot.p50, p.tpot.p90, p.tpot.p99);
    fmt::print("All-reduces per step: {:.1f} ({:.3f} ms); pipeline waits {:.3f} ms per step\n",
               p.all_reduces_per_step, p.collective_ms, p.pipeline_ms);
  }
  fmt::print("===========================================================\n");
}

int run_bench(BenchArgs& a, LaunchContext& launch) {
  if (a.max_batch > 0) {
    a.batches.clear();
    for (int b = 1; b <= a.max_batch; b *= 2) a.batches.push_back(b);
  }
  const int max_batch = *std::max_element(a.batches.begin(), a.batches.end());
  const int max_input = *std::max_element(a.input_lens.begin(), a.input_lens.end());
  const int max_output = *std::max_element(a.output_lens.begin(), a.output_lens.end());
  auto configure = [&](RunConfig& run) {
    // Room for the largest point, unless the user sized the cache.
    const int64_t need = int64_t(max_batch) * (max_input + max_output + 2 * run.batch.page_size);
    if (!a.session.run.kv_cache_tokens)
      run.batch.kv_cache_tokens = std::max(run.batch.kv_cache_tokens, need);
  };
  Session s = SessionBuilder(launch, a.session).configure(configure).build();
  const int ranks = s.grid->world_size();
  const size_t total = a.batches.size() * a.input_lens.size() * a.output_lens.size();
  ProgressBar progress("bench", s.is_root() && !a.session.quiet, ProgressUnit{"points"});
  progress.update(0, total);
  std::vector<Point> points;
  if (s.is_root())
    fmt::print(
        "{:>5} {:>6} {:>6} | {:>10} {:>10} {:>9} | {:>9} {:>9} {:>9} {:>9} | {:>10} {:>8} "
        "{:>9} {:>8}\n",
        "batch", "in", "out", "out tok/s", "tok/s/user", "tok/s/rk", "TTFT ms", "TTFT p99",
        "TPOT ms", "TPOT p99", "prefill/s", "allred", "allred ms", "pipe ms");
  for (int batch : a.batches) {
    // Warm-up once per batch size (allocations, page faults), then measure every length.
    measure_throughput(*s.engine, batch, a.input_lens.front(), 2);
    for (int input_len : a.input_lens) {
      for (int output_len : a.output_lens) {
        Point p;
        p.batch = batch;
        p.input_len = input_len;
        p.output_len = output_len;
        p.r = measure_throughput(*s.engine, batch, input_len, output_len);
        // Communication shares averaged over ranks; all-reduces summed over TP groups (counted
        // on each group's tp rank 0).
        std::vector<float> v = {
            float(p.r.compute_seconds_per_step), float(p.r.collective_seconds_per_step),
            float(p.r.transport_seconds_per_step),
            float(s.grid->tp_rank() == 0 ? p.r.all_reduces_per_step : 0),
            float(double(s.engine->weight_bytes_per_token()) / p.r.decode_step_seconds / 1e9)};
        if (s.world) s.world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, 5, 5});
        p.compute_ms = v[0] / ranks * 1e3;
        p.collective_ms = v[1] / ranks * 1e3;
        p.pipeline_ms = v[2] / ranks * 1e3;
        p.all_reduces_per_step = v[3];
        p.weight_bandwidth = double(v[4]) * 1e9;
        p.ttft = stats_ms(p.r.first_token_seconds);
        p.tpot = stats_ms(p.r.step_seconds);
        const double decode_seconds =
            std::accumulate(p.r.step_seconds.begin(), p.r.step_seconds.end(), 0.0);
        p.output_tokens_per_s = double(batch) * output_len / (p.r.prefill_seconds + decode_seconds);
        p.tokens_per_s_per_user = 1e3 / p.tpot.mean;
        p.tokens_per_s_per_rank = p.r.decode_tokens_per_second / ranks;
        points.push_back(p);
        if (s.is_root()) {
          progress.clear();
          fmt::print(
              "{:>5} {:>6} {:>6} | {:>10.1f} {:>10.2f} {:>9.1f} | {:>9.2f} {:>9.2f} {:>9.2f} "
              "{:>9.2f} | {:>10.1f} {:>8.1f} {:>9.3f} {:>8.3f}\n",
              batch, input_len, output_len, p.output_tokens_per_s, p.tokens_per_s_per_user,
              p.tokens_per_s_per_rank, p.ttft.mean, p.ttft.p99, p.tpot.mean, p.tpot.p99,
              p.r.prefill_tokens_per_second, p.all_reduces_per_step, p.collective_ms,
              p.pipeline_ms);
          std::fflush(stdout);
        }
        progress.update(points.size(), total);
      }
    }
  }
  progress.finish();
  // The memory's bandwidth, on every rank at once (they share the machine's memory where they
  // share a machine) and summed: the ceiling decode's weight bandwidth is set beside.
  MemoryBandwidth memory;
  if (s.run.backend == "cpu") {
    std::vector<float> v = {0.0f, 0.0f};
    if (s.world) s.world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, 2, 2});  // start together
    const size_t bytes = std::max((size_t(256) << 20) / size_t(ranks), size_t(64) << 20);
    memory = measure_memory_bandwidth(s.threads, bytes);
    v = {float(memory.copy / 1e9), float(memory.read / 1e9)};
    if (s.world) s.world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, 2, 2});
    memory = {double(v[0]) * 1e9, double(v[1]) * 1e9};
  }
  if (!s.is_root()) return 0;
  print_overview(s, points, ranks, memory);

  const std::string transport = s.run.pp > 1 ? s.run.transport : "none";
  if (!a.json_path.empty()) {
    nlohmann::json results = nlohmann::json::array();
    for (const Point& p : points) {
      const ThroughputResult& r = p.r;
      results.push_back({{"batch", p.batch},
                         {"input_len", p.input_len},
                         {"output_len", p.output_len},
                         {"prompt_tokens", r.prompt_tokens},
                         {"decode_steps", r.decode_steps},
                         {"output_tokens_per_second", p.output_tokens_per_s},
                         {"tokens_per_second_per_user", p.tokens_per_s_per_user},
                         {"tokens_per_second_per_rank", p.tokens_per_s_per_rank},
                         {"ttft_ms", stats_json(p.ttft)},
                         {"tpot_ms", stats_json(p.tpot)},
                         {"prefill_seconds", r.prefill_seconds},
                         {"prefill_tokens_per_second", r.prefill_tokens_per_second},
                         {"decode_step_seconds", r.decode_step_seconds},
                         {"decode_tokens_per_second", r.decode_tokens_per_second},
                         {"all_reduces_per_step", p.all_reduces_per_step},
                         {"compute_seconds_per_step", p.compute_ms / 1e3},
                         {"collective_seconds_per_step", p.collective_ms / 1e3},
                         {"pipeline_seconds_per_step", p.pipeline_ms / 1e3},
                         {"decode_weight_bandwidth_bytes_per_s", p.weight_bandwidth}});
    }
    nlohmann::json j = {{"benchmark", "parafuse bench"},
                        {"label", a.label},
                        {"model", s.run.model},
                        {"backend", s.run.backend},
                        {"tp", s.run.tp},
                        {"pp", s.run.pp},
                        {"transport", transport},
                        {"threads_per_rank", s.threads},
                        {"ranks", ranks},
                        {"results", results}};
    if (memory.copy > 0) {
      j["copy_bandwidth_bytes_per_s"] = memory.copy;
      j["read_bandwidth_bytes_per_s"] = memory.read;
    }
    std::ofstream out(a.json_path);
    out << j.dump(2) << "\n";
    PF_CHECK(out.good(), "cannot write --json file '{}'", a.json_path);
    fmt::print("wrote {}\n", a.json_path);
  }
  if (!a.csv_path.empty()) {
    std::ofstream out(a.csv_path);
    out << kCsvHeader;
    for (const Point& p : points) {
      // Labels and paths are quoted (they may hold commas).
      out << fmt::format(
          "\"{}\",\"{}\",{},{},{},{},{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},"
          "{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},{:.4f},{:.2f},{:.4f},{:.4f},{:.4f}\n",
          a.label, s.run.model, s.run.backend, s.run.tp, s.run.pp, ranks, p.batch, p.input_len,
          p.output_len, p.output_tokens_per_s, p.r.decode_tokens_per_second,
          p.tokens_per_s_per_user, p.tokens_per_s_per_rank, p.ttft.mean, p.ttft.p50, p.ttft.p90,
          p.ttft.p99, p.tpot.mean, p.tpot.p50, p.tpot.p90, p.tpot.p99,
          p.r.prefill_tokens_per_second, p.all_reduces_per_step, p.collective_ms, p.pipeline_ms,
          p.compute_ms);
    }
    PF_CHECK(out.good(), "cannot write --csv file '{}'", a.csv_path);
    fmt::print("wrote {}\n", a.csv_path);
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<BenchArgs>(
      app, "bench",
      "Throughput sweep over batch sizes and input/output lengths: output tokens/s, tokens/s "
      "per user and per rank, TTFT and TPOT percentiles, all-reduces and pipeline waits; table, "
      "JSON and CSV");
  add_batch_sizes_option(*cmd, "--batch", a->batches, "Batch sizes (sequences decoded together)");
  cmd->add_option("--max-batch", a->max_batch,
                  "Sweep the powers of two 1, 2, 4, ... up to this batch (instead of --batch)")
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--input-len,--prompt-tokens", a->input_lens,
                  "Prompt lengths (tokens per sequence), comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--output-len,--decode-steps", a->output_lens,
                  "Output lengths: timed decode steps per sequence after the first token "
                  "(which prefill gives), comma-separated")
      ->delimiter(',')
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--json", a->json_path, "Write the results as JSON here (rank 0)");
  cmd->add_option("--csv", a->csv_path, "Write the results as CSV here, a row per point (rank 0)");
  cmd->add_option("--label", a->label, "A label stored in the JSON and CSV (plot legends)");
  // `parafuse bench serve` (cmd_bench_serve.cpp) load-tests a server instead of a model.
  const Command serve = add_bench_serve_command(*cmd);
  const CLI::App* serve_cmd = cmd->get_subcommand("serve");
  const Command sweep = runs(a, run_bench);
  return [serve, serve_cmd, sweep](LaunchContext& launch) {
    return serve_cmd->parsed() ? serve(launch) : sweep(launch);
  };
}

}  // namespace parafuse

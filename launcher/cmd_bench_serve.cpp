// `parafuse bench serve`: load-tests a running OpenAI-compatible server (`parafuse serve`, vLLM,
// ...) the way `vllm bench serve` does, so the numbers and JSON keys compare one to one. It is a
// subcommand of `bench` (the model throughput sweep) but shares nothing with it: no model, no
// session, no MPI; only sockets (bench_serve.h does the work).
//
// A sweep is a list of runs, one table row and one JSON object each:
//   - closed loop (no --request-rate): for each --concurrency C, C workers send requests back to
//     back until --num-prompts are done;
//   - open loop (--request-rate R,...): requests arrive with gamma-distributed gaps (mean 1/R,
//     shape --burstiness); with --concurrency too, every rate runs under every cap C (at most C
//     in flight, later arrivals wait), like vllm's --max-concurrency.
#include <cmath>
#include <fstream>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "launcher/bench_serve.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/progress_bar.h"
#include "launcher/session.h"  // SetupError: one line, exit 1, for a server that is not there

namespace parafuse {
namespace {

constexpr double kUnboundedRate = std::numeric_limits<double>::infinity();

struct BenchServeArgs {
  std::string url = "http://127.0.0.1:8000";
  std::string model;  // default: the first model the server lists
  std::string endpoint = "/v1/completions";
  std::vector<int> concurrency = {1, 8, 32};
  std::vector<std::string> request_rates;  // numbers or "inf"; none: closed loop
  double burstiness = 1.0;
  int num_prompts = 100;
  int input_len = 256;
  int output_len = 128;
  int64_t seed = 0;
  std::string api_key;
  double timeout_s = 600;
  std::string json_path;
  std::string label;
  bool quiet = false;
  const CLI::Option* concurrency_flag = nullptr;  // count() > 0: --concurrency was given
};

// --request-rate items: a number greater than 0, or "inf" (every request at once).
std::string rate_problem(const std::string& text) {
  if (text == "inf") return {};
  const auto v = parse_number(text);
  if (v && kPositiveNumber.accepts(*v)) return {};
  return fmt::format("must be a number greater than 0 or 'inf', got '{}'", text);
}

double rate_of(const std::string& text) {
  return text == "inf" ? kUnboundedRate : parse_number(text).value();
}

std::string rate_text(double rate) {
  return std::isinf(rate) ? "inf" : fmt::format("{:g}", rate);
}

struct RunSetting {
  std::optional<int> concurrency;  // workers (closed loop) or in-flight cap (open loop)
  double request_rate = kUnboundedRate;
};

std::vector<RunSetting> run_settings(const BenchServeArgs& a) {
  std::vector<RunSetting> settings;
  if (a.request_rates.empty()) {
    for (int c : a.concurrency) settings.push_back({c, kUnboundedRate});
    return settings;
  }
  std::vector<std::optional<int>> caps = {std::nullopt};
  if (a.concurrency_flag->count() > 0) caps.assign(a.concurrency.begin(), a.concurrency.end());
  for (const auto& cap : caps)
    for (const std::string& rate : a.request_rates) settings.push_back({cap, rate_of(rate)});
  return settings;
}

void print_row(const RunSetting& setting, const ServeRunMetrics& m) {
  constexpr double kMs = 1e3;
  fmt::print(
      "{:>5} {:>6} {:>6} {:>5} {:>8.2f} {:>8.2f} {:>10.1f} {:>10.2f} {:>9.2f} {:>10.2f} "
      "{:>9.2f} {:>9.2f} {:>10.2f}\n",
      setting.concurrency ? fmt::format("{}", *setting.concurrency) : "-",
      rate_text(setting.request_rate), m.completed, m.failed, m.duration_s, m.request_throughput,
      m.output_throughput, m.ttft.mean * kMs, m.ttft.p99 * kMs, m.tpot.mean * kMs, m.itl.mean * kMs,
      m.itl.p99 * kMs, m.e2el.mean * kMs);
  for (const std::string& error : m.errors) fmt::print("      failed: {}\n", error);
  std::fflush(stdout);
}

void write_json(const std::string& path, const nlohmann::json& runs) {
  std::ofstream out(path);
  out << nlohmann::json{{"runs", runs}}.dump(2) << "\n";
  PF_CHECK(out.good(), "cannot write --json file '{}'", path);
}

int run_bench_serve(BenchServeArgs& a, LaunchContext&) {
  const ServerUrl url = parse_server_url(a.url);
  ServerProbe probe;
  try {
    probe = probe_server(url, a.api_key, a.timeout_s);
  } catch (const Error& e) {
    throw SetupError(e.what(), 0);
  }
  const std::string model = a.model.empty() ? probe.first_model : a.model;
  if (model.empty()) {
    const std::string problem = probe.problem.empty()
                                    ? fmt::format("{}/v1/models names no model", url.text())
                                    : probe.problem;
    const bool key_refused = probe.status == 401 || probe.status == 403;
    throw SetupError(
        fmt::format("{}; pass {}", problem, key_refused ? "the server's --api-key" : "--model"), 0);
  }

  fmt::print("parafuse bench serve: {}{}, model {}, {} requests per run, {} -> {} tokens{}\n",
             url.text(), a.endpoint, model, a.num_prompts, a.input_len, a.output_len,
             a.request_rates.empty() ? "" : fmt::format(", burstiness {:g}", a.burstiness));
  fmt::print("{:>5} {:>6} {:>6} {:>5} {:>8} {:>8} {:>10} {:>10} {:>9} {:>10} {:>9} {:>9} {:>10}\n",
             "conc", "rate", "done", "fail", "dur s", "req/s", "out tok/s", "TTFT ms", "TTFT p99",
             "TPOT ms", "ITL ms", "ITL p99", "E2EL ms");
  std::fflush(stdout);

  nlohmann::json runs = nlohmann::json::array();
  for (const RunSetting& setting : run_settings(a)) {
    LoadPlan plan;
    plan.url = url;
    plan.endpoint = a.endpoint;
    plan.model = model;
    plan.api_key = a.api_key;
    plan.num_prompts = a.num_prompts;
    plan.input_len = a.input_len;
    plan.output_len = a.output_len;
    plan.seed = uint64_t(a.seed);
    plan.request_rate = setting.request_rate;
    plan.burstiness = a.burstiness;
    plan.max_in_flight = setting.concurrency;
    plan.timeout_s = a.timeout_s;

    ProgressBar bar(
        fmt::format("requests (concurrency {}, rate {})",
                    setting.concurrency ? fmt::format("{}", *setting.concurrency) : "unbounded",
                    rate_text(setting.request_rate)),
        !a.quiet, ProgressUnit{"requests"});
    const LoadResult result =
        run_load(plan, [&](size_t done) { bar.update(done, size_t(a.num_prompts)); });
    bar.finish();
    const ServeRunMetrics metrics = compute_serve_metrics(result.records, result.duration_s);
    print_row(setting, metrics);

    ServeRunSpec spec;
    spec.concurrency = setting.concurrency;
    spec.request_rate = setting.request_rate;
    spec.burstiness = a.burstiness;
    spec.num_prompts = a.num_prompts;
    spec.input_len = a.input_len;
    spec.output_len = a.output_len;
    spec.label = a.label;
    spec.url = url.text();
    spec.endpoint = a.endpoint;
    spec.model = model;
    runs.push_back(serve_run_json(spec, metrics));
    if (!a.json_path.empty())
      write_json(a.json_path, runs);  // after each run: a long sweep
                                      // stopped early keeps its runs
    if (metrics.completed == 0) {
      fmt::print(stderr, "parafuse: error: no request completed (concurrency {}, rate {}): {}\n",
                 setting.concurrency ? fmt::format("{}", *setting.concurrency) : "unbounded",
                 rate_text(setting.request_rate),
                 metrics.errors.empty() ? "no error recorded" : metrics.errors.front());
      return 1;
    }
  }
  if (!a.json_path.empty()) fmt::print("wrote {}\n", a.json_path);
  return 0;
}

// A validator from a function that throws parafuse::Error with the problem.
template <typename Parse>
CLI::Validator throws_problem(Parse parse) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        try {
          parse(text);
          return {};
        } catch (const Error& e) {
          return e.what();
        }
      },
      "");
}

}  // namespace

Command add_bench_serve_command(CLI::App& bench) {
  auto a = std::make_shared<BenchServeArgs>();
  CLI::App* cmd = bench.add_subcommand(
      "serve",
      "Load-test a running OpenAI-compatible server (parafuse serve, vLLM, ...) like `vllm "
      "bench serve`: streamed requests of random prompts; per run TTFT, TPOT, ITL and E2EL "
      "(mean, median, std, p90, p99) and throughput. Closed loop by default: for each "
      "--concurrency C, C clients send requests back to back. With --request-rate: open loop, "
      "requests arrive at that rate (gamma gaps, --burstiness); a --concurrency given with it "
      "caps requests in flight, and every rate runs under every cap. Needs no model and no MPI");
  cmd->add_option("--url", a->url,
                  "The server: http://HOST[:PORT][/PATH] (plain HTTP; PATH prefixes --endpoint)")
      ->capture_default_str()
      ->type_name("URL")
      ->check(throws_problem([](const std::string& text) { parse_server_url(text); }));
  cmd->add_option("--model", a->model,
                  "Model name sent in each request. Default: the first one GET /v1/models lists")
      ->type_name("NAME");
  cmd->add_option("--endpoint", a->endpoint,
                  "API path: /v1/completions sends token-id prompts; a path ending in "
                  "/chat/completions sends a user message of --input-len words")
      ->capture_default_str()
      ->type_name("PATH")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            if (!text.empty() && text.front() == '/') return {};
            return fmt::format("must be a path starting with '/', got '{}'", text);
          },
          ""));
  add_batch_sizes_option(*cmd, "--concurrency", a->concurrency,
                         "Closed loop: clients sending back to back, one run each. With "
                         "--request-rate: the most requests in flight (default then: no cap)");
  a->concurrency_flag = cmd->get_option("--concurrency");
  cmd->add_option("--request-rate", a->request_rates,
                  "Open loop: requests per second, one run each; inf sends all at once")
      ->delimiter(',')
      ->type_name("RATE")
      ->check(CLI::Validator([](std::string& text) { return rate_problem(text); }, ""));
  cmd->add_option("--burstiness", a->burstiness,
                  "Shape of the gamma distribution of arrival gaps (open loop): 1 is Poisson, "
                  "below 1 burstier, above 1 more regular; the mean gap stays 1/rate")
      ->capture_default_str()
      ->check(number_flag(kPositiveNumber));
  cmd->add_option("--num-prompts", a->num_prompts, "Requests per run")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--input-len", a->input_len,
                  "Prompt length: random token ids in [100, 10000) (chat: words)")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--output-len", a->output_len,
                  "Tokens generated per request (max_tokens with ignore_eos, greedy)")
      ->capture_default_str()
      ->check(int_flag(kPositiveInt));
  cmd->add_option("--seed", a->seed,
                  "Seed of the prompts and arrival gaps (the same seed sends the same requests)")
      ->capture_default_str()
      ->check(int_flag(kNonNegativeInt64));
  cmd->add_option("--api-key", a->api_key, "Sent as 'Authorization: Bearer KEY'")->type_name("KEY");
  cmd->add_option("--timeout", a->timeout_s,
                  "Seconds one connect, send or read may wait before the request fails")
      ->capture_default_str()
      ->type_name("SECONDS")
      ->check(number_flag(kPositiveNumber));
  cmd->add_option("--json", a->json_path,
                  "Write {\"runs\": [...]} here, one object per run with vllm bench serve's keys "
                  "(rewritten after each run)")
      ->type_name("FILE");
  cmd->add_option("--label", a->label, "A label stored in each run's JSON");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress bar on stderr");
  return runs(a, run_bench_serve);
}

}  // namespace parafuse

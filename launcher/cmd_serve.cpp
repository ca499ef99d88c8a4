// `parafuse serve`: an OpenAI-compatible HTTP server over every rank of a TP x PP job.
//
// The session builder makes the run as for any command; then world rank 0 listens
// (runtime/serve/http_server.h) and runs the step loop (serve_loop.h), and every other rank runs
// the worker loop until rank 0 sends the shutdown plan. The port is bound while setup errors
// are still agreed, so a taken port ends every rank with one line.
#include <csignal>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"
#include "parallel/mpi_comm.h"
#include "runtime/serve/http_server.h"
#include "runtime/serve/metrics.h"
#include "runtime/serve/serve_loop.h"

namespace parafuse {
namespace {

struct ServeArgs {
  SessionFlags session;
  std::optional<std::string> host;
  std::optional<int> port;
  std::optional<std::string> api_key;
  std::optional<std::string> api_key_file;
  std::optional<std::string> served_model_name;
};

// The name clients use when none is configured: the model file's or folder's name without
// its extension (".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct.Q4_1").
std::string default_model_name(std::string model) {
  if (model.rfind("synthetic:", 0) == 0) {
    model = model.substr(10);
    if (const size_t at = model.rfind('@'); at != std::string::npos) model.resize(at);
  }
  while (model.size() > 1 && model.back() == '/') model.pop_back();
  std::filesystem::path path(model);
  const std::string ext = path.extension().string();
  if (ext == ".gguf" || ext == ".json") return path.stem().string();
  return path.filename().string();
}

std::string read_api_key(const std::string& path) {
  std::ifstream in(path);
  PF_CHECK(in.good(), "cannot read the API key file '{}'", path);
  std::string key;
  std::getline(in, key);
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  PF_CHECK(!key.empty(), "the API key file '{}' has an empty first line", path);
  return key;
}

int run_serve(ServeArgs& a, LaunchContext& launch) {
  auto configure = [&](RunConfig& run) {
    RunConfig::Serve& s = run.serve;
    if (a.host) s.host = *a.host;
    if (a.port) s.port = *a.port;
    if (a.api_key) s.api_key = *a.api_key, s.api_key_file.clear();
    if (a.api_key_file) s.api_key_file = *a.api_key_file, s.api_key.clear();
    if (a.served_model_name) s.served_model_name = *a.served_model_name;
  };
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<HttpServer> http;
  std::string model_name;
  auto check = [&](Session& s) {
    PF_CHECK(s.files.tokenizer.has_value(),
             "parafuse serve needs the model's tokenizer, and '{}' has none (no tokenizer.json "
             "beside config.json, no tokenizer in the GGUF file)",
             s.files.path);
    const RunConfig::Serve& c = s.run.serve;
    model_name = c.served_model_name.empty() ? default_model_name(s.run.model) : c.served_model_name;
    if (!s.is_root()) return;
    HttpServerOptions o;
    o.host = c.host;
    o.port = c.port;
    o.api_key = c.api_key_file.empty() ? c.api_key : read_api_key(c.api_key_file);
    o.model_name = model_name;
    o.body_limit = size_t(c.max_body_bytes);
    o.header_limit = size_t(c.max_header_bytes);
    o.json_depth_limit = c.max_json_depth;
    o.threads = c.http_threads;
    o.default_max_tokens = s.run.sampling.max_tokens;
    o.default_temperature = s.run.sampling.temperature;
    o.default_top_p = s.run.sampling.top_p;
    o.default_top_k = s.run.sampling.top_k;
    // Listening from now on: a taken port is an agreed error, and /health and /ready (503)
    // answer while the model loads.
    metrics = std::make_unique<Metrics>(model_name);
    http = std::make_unique<HttpServer>(o, *metrics, s.files.config);
    fmt::print(stderr, "parafuse: listening on {} (loading the model)\n", http->url());
    std::fflush(stderr);
  };
  Session s = SessionBuilder(launch, a.session).configure(configure).check(check).build();

  if (!s.is_root()) {
    // mpirun passes Ctrl-C (and SIGUSR1) to every rank, scancel SIGTERM: the workers stop
    // when rank 0 says so.
    std::signal(SIGINT, SIG_IGN);
    std::signal(SIGTERM, SIG_IGN);
    std::signal(SIGUSR1, SIG_IGN);
    run_serve_worker(*s.engine, *s.world);
    return 0;
  }
  ServeLoopOptions lo;
  lo.max_waiting = s.run.serve.max_waiting_requests;
  lo.max_running = s.run.serve.max_running_requests;
  lo.drain = std::chrono::milliseconds(int64_t(s.run.serve.drain_seconds * 1000));
  ServeLoop loop(*s.engine, s.world.get(), s.tokenizer(), *metrics, lo);
  http->serve(loop, s.tokenizer());
  loop.run([&] {  // until SIGINT / SIGTERM / SIGUSR1
    fmt::print(stderr, "parafuse: serving {} on {}\n", model_name, http->url());
    std::fflush(stderr);
  });
  http->stop();
  spdlog::info("serve: stopped");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto [cmd, a] = add_model_command<ServeArgs>(
      app, "serve",
      "Serve the model over an OpenAI-compatible HTTP API (/v1/completions, "
      "/v1/chat/completions, /v1/models, /health, /ready, /metrics, a chat page at /). "
      "Under mpirun/srun every rank joins and rank 0 listens. Ctrl-C stops it.");
  cmd->add_option("--host", a->host,
                  "Address to listen on (default: serve.host, 127.0.0.1; 0.0.0.0 for every "
                  "interface)");
  cmd->add_option("--port", a->port, "Port to listen on; 0 picks a free one (default: 8000)")
      ->check(int_flag(kListenPort));
  auto* key = cmd->add_option("--api-key", a->api_key,
                              "Clients must send 'Authorization: Bearer KEY' (default: no key)");
  cmd->add_option("--api-key-file", a->api_key_file,
                  "Read the API key from the first line of this file (keeps it out of `ps`)")
      ->excludes(key);
  cmd->add_option("--served-model-name", a->served_model_name,
                  "The model name clients send and /v1/models lists (default: the model file's "
                  "name without extension)");
  return runs(a, run_serve);
}

}  // namespace parafuse

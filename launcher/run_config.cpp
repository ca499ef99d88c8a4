// Reading the run config from YAML, and the checks every finished config passes.
//
// The YAML goes through the one config reader (runtime/config/config_reader.h): each key is asked
// for with its rule from value_rules.h, the same rules the flags use (launcher/cli.cpp), and
// whatever nobody asked for is an unknown key with a did-you-mean. The choice lists come from
// where the choices live: backend_names() and backend_dtypes() from the backend registry,
// transport_kinds() from the transports.
#include "launcher/run_config.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/backend_registry.h"  // backend_names, backend_dtypes
#include "kernels/core/error.h"
#include "parallel/transport.h"  // transport_kinds
#include "runtime/config/config_reader.h"
#include "runtime/config/read_file.h"
#include "runtime/config/value_rules.h"
#include "runtime/engine/kv_cache.h"  // kv_cache_dtype_choices

namespace parafuse {
namespace {

const IntRule kBlockIndex{0, kIntMax};

bool is_one_of(const std::string& v, const std::vector<std::string>& choices) {
  return std::find(choices.begin(), choices.end(), v) != choices.end();
}

// Empty when `pp_split` fits `pp`, else what is wrong with it (no key name: callers add it).
std::string pp_split_problem(const std::vector<int>& split, int pp) {
  if (split.empty()) return {};  // balanced by cost
  if (split.front() != 0)
    return fmt::format("must start at 0 (the first stage owns block 0), got [{}]",
                       fmt::join(split, ", "));
  for (size_t i = 1; i < split.size(); ++i)
    if (split[i] <= split[i - 1])
      return fmt::format("must be strictly increasing (a stage owns at least one block), got [{}]",
                         fmt::join(split, ", "));
  if (int(split.size()) != pp)
    return fmt::format("has {} entries ([{}]) but pp is {}: give the first block of each stage",
                       split.size(), fmt::join(split, ", "), pp);
  return {};
}

// ---- YAML ----------------------------------------------------------------------------------

void read_parallel(const ConfigMap& parallel, RunConfig& c,
                   std::optional<ConfigValue>& pp_split_value) {
  if (auto v = parallel.get("tp")) c.tp = int(v->integer(kPositiveInt));
  if (auto v = parallel.get("pp")) c.pp = int(v->integer(kPositiveInt));
  if (auto v = parallel.get("transport")) c.transport = v->choice(transport_kinds());
  if ((pp_split_value = parallel.get("pp_split"))) {
    c.pp_split.clear();
    for (const ConfigValue& block :
         pp_split_value->list("a list of block indices like [0, 10, 22]"))
      c.pp_split.push_back(int(block.integer(kBlockIndex)));
  }
}

void read_batch(const ConfigMap& batch, RunConfig::Batch& b) {
  if (auto v = batch.get("max_batch_tokens")) b.max_batch_tokens = v->integer(kPositiveInt64);
  if (auto v = batch.get("kv_cache_tokens")) b.kv_cache_tokens = v->integer(kPositiveInt64);
  if (auto v = batch.get("page_size")) b.page_size = v->integer(kPositiveInt64);
  if (auto v = batch.get("micro_batches")) b.micro_batches = int(v->integer(kNonNegativeInt));
}

void read_sampling(const ConfigMap& sampling, RunConfig::Sampling& s) {
  if (auto v = sampling.get("temperature")) s.temperature = float(v->number(kNonNegativeNumber));
  if (auto v = sampling.get("top_k")) s.top_k = int(v->integer(kNonNegativeInt));
  if (auto v = sampling.get("top_p")) s.top_p = float(v->number(kProbability));
  if (auto v = sampling.get("seed")) s.seed = uint64_t(v->integer(kNonNegativeInt64));
  if (auto v = sampling.get("max_tokens")) s.max_tokens = int(v->integer(kPositiveInt));
}

void read_serve(const ConfigMap& serve, RunConfig::Serve& s) {
  if (auto v = serve.get("host")) s.host = v->text("an IP address such as 127.0.0.1 or 0.0.0.0");
  if (auto v = serve.get("port")) s.port = int(v->integer(kListenPort));
  if (auto v = serve.get("api_key")) s.api_key = v->text("the key clients send as Bearer");
  if (auto v = serve.get("api_key_file"))
    s.api_key_file = v->text("a file whose first line is the API key");
  if (auto v = serve.get("served_model_name"))
    s.served_model_name = v->text("the model name clients use");
  if (auto v = serve.get("max_waiting_requests"))
    s.max_waiting_requests = int(v->integer(kPositiveInt));
  if (auto v = serve.get("max_running_requests"))
    s.max_running_requests = int(v->integer(kPositiveInt));
  if (auto v = serve.get("max_body_bytes")) s.max_body_bytes = v->integer(kPositiveInt64);
  if (auto v = serve.get("max_header_bytes")) s.max_header_bytes = v->integer(kPositiveInt64);
  if (auto v = serve.get("max_json_depth")) s.max_json_depth = int(v->integer(kPositiveInt));
  if (auto v = serve.get("http_threads")) s.http_threads = int(v->integer(kPositiveInt));
  if (auto v = serve.get("drain_seconds")) s.drain_seconds = v->number(kNonNegativeNumber);
}

void read_timeouts(const ConfigMap& timeouts, RunConfig::Timeouts& t) {
  if (auto v = timeouts.get("collective_seconds"))
    t.collective_seconds = v->number(kPositiveNumber);
  if (auto v = timeouts.get("transport_seconds")) t.transport_seconds = v->number(kPositiveNumber);
}

}  // namespace

std::vector<std::string> weight_dtype_choices() {
  return {"auto", "f32", "fp8"};
}

std::vector<std::string> dtype_choices() {
  std::vector<std::string> choices = backend_dtypes();
  choices.push_back("fp8");
  return choices;
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& origin) {
  const ConfigDocument document = ConfigDocument::from_yaml(yaml_text, origin, UnknownKeys::Refuse);
  RunConfig c;
  c.source = origin;
  // Keys are asked for in the order configs/README.md lists them: the "known keys" of messages.
  const ConfigMap top = document.root().map("a map of keys like 'model:' and 'parallel:'");
  if (auto v = top.get("model"))
    c.model = v->text("a model path (HF folder, .gguf file or synthetic:CONFIG.json)");
  std::optional<ConfigValue> pp_split_value;
  if (auto v = top.get("parallel")) read_parallel(v->map(), c, pp_split_value);
  if (auto v = top.get("backend")) c.backend = v->choice(backend_names());
  if (auto v = top.get("dtype")) c.dtype = v->choice(dtype_choices());
  if (auto v = top.get("weight_dtype")) c.weight_dtype = v->choice(weight_dtype_choices());
  if (auto v = top.get("kv_cache_dtype")) c.kv_cache_dtype = v->choice(kv_cache_dtype_choices());
  if (auto v = top.get("threads")) c.threads = int(v->integer(kNonNegativeInt));
  if (auto v = top.get("fusion_plan"))
    c.fusion_plan = v->text("a fusion plan file (parafuse plan)");
  if (auto v = top.get("batch")) read_batch(v->map(), c.batch);
  if (auto v = top.get("sampling")) read_sampling(v->map(), c.sampling);
  if (auto v = top.get("serve")) read_serve(v->map(), c.serve);
  if (auto v = top.get("timeouts")) read_timeouts(v->map(), c.timeouts);
  document.finish();

  // pp_split against pp is a whole-file check; point at pp_split.
  if (const std::string problem = pp_split_problem(c.pp_split, c.pp); !problem.empty())
    pp_split_value->fail(problem);
  check_run_config(c);
  return c;
}

RunConfig load_run_config(const std::string& path) {
  return parse_run_config(read_file(path, "config file"), path);
}

void check_run_config(const RunConfig& c) {
  const auto check_int = [](int64_t v, const char* key, const IntRule& rule) {
    PF_CHECK(rule.accepts(v), "'{}' must be {}, got {}", key, rule.describe(), v);
  };
  const auto check_number = [](double v, const char* key, const NumberRule& rule) {
    PF_CHECK(std::isfinite(v) && rule.accepts(v), "'{}' must be {}, got {}", key, rule.describe(),
             v);
  };
  const auto check_choice = [](const std::string& v, const char* key,
                               const std::vector<std::string>& choices) {
    PF_CHECK(is_one_of(v, choices), "'{}' must be one of {}, got '{}'", key,
             fmt::join(choices, ", "), v);
  };
  check_int(c.tp, "parallel.tp", kPositiveInt);
  check_int(c.pp, "parallel.pp", kPositiveInt);
  check_choice(c.transport, "parallel.transport", transport_kinds());
  for (int block : c.pp_split) check_int(block, "parallel.pp_split", kBlockIndex);
  const std::string problem = pp_split_problem(c.pp_split, c.pp);
  PF_CHECK(problem.empty(), "pp_split (--pp-split or parallel.pp_split) {}", problem);
  check_choice(c.backend, "backend", backend_names());
  check_choice(c.dtype, "dtype", dtype_choices());
  check_choice(c.weight_dtype, "weight_dtype", weight_dtype_choices());
  check_choice(c.kv_cache_dtype, "kv_cache_dtype", kv_cache_dtype_choices());
  PF_CHECK(c.dtype != "fp8" || c.weight_dtype != "f32",
           "dtype fp8 (FP8 weights) and weight_dtype f32 (every weight in F32) contradict each "
           "other; give one of them");
  check_int(c.threads, "threads", kNonNegativeInt);
  check_int(c.batch.max_batch_tokens, "batch.max_batch_tokens", kPositiveInt64);
  check_int(c.batch.kv_cache_tokens, "batch.kv_cache_tokens", kPositiveInt64);
  check_int(c.batch.page_size, "batch.page_size", kPositiveInt64);
  check_int(c.batch.micro_batches, "batch.micro_batches", kNonNegativeInt);
  check_number(c.sampling.temperature, "sampling.temperature", kNonNegativeNumber);
  check_int(c.sampling.top_k, "sampling.top_k", kNonNegativeInt);
  check_number(c.sampling.top_p, "sampling.top_p", kProbability);
  check_int(c.sampling.max_tokens, "sampling.max_tokens", kPositiveInt);
  check_int(c.serve.port, "serve.port", kListenPort);
  PF_CHECK(c.serve.api_key.empty() || c.serve.api_key_file.empty(),
           "give serve.api_key or serve.api_key_file (--api-key or --api-key-file), not both");
  check_int(c.serve.max_waiting_requests, "serve.max_waiting_requests", kPositiveInt);
  check_int(c.serve.max_running_requests, "serve.max_running_requests", kPositiveInt);
  check_int(c.serve.max_body_bytes, "serve.max_body_bytes", kPositiveInt64);
  check_int(c.serve.max_header_bytes, "serve.max_header_bytes", kPositiveInt64);
  check_int(c.serve.max_json_depth, "serve.max_json_depth", kPositiveInt);
  check_int(c.serve.http_threads, "serve.http_threads", kPositiveInt);
  check_number(c.serve.drain_seconds, "serve.drain_seconds", kNonNegativeNumber);
  check_number(c.timeouts.collective_seconds, "timeouts.collective_seconds", kPositiveNumber);
  check_number(c.timeouts.transport_seconds, "timeouts.transport_seconds", kPositiveNumber);
}

}  // namespace parafuse

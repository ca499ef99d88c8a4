#include "runtime/serve/metrics.h"

#include <algorithm>

#include <fmt/format.h>

namespace parafuse {
namespace {

// vLLM's bucket bounds for the same histograms (seconds).
const std::vector<double> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                         0.5,   0.75,  1.0,  2.5,  5.0,  7.5,  10.0, 20.0, 40.0,
                                         80.0,  160.0, 640.0, 2560.0};
const std::vector<double> kItlBounds = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4,
                                        0.5,  0.75,  1.0,  2.5,   5.0, 7.5,  10.0, 20.0, 40.0, 80.0};
const std::vector<double> kRequestBounds = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,  5.0,
                                            10.0, 15.0, 20.0, 30.0, 40.0,  50.0,  60.0, 120.0,
                                            240.0, 480.0, 960.0, 1920.0, 7680.0};

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), buckets_(bounds_.size(), 0) {}

void Histogram::observe(double value) {
  ++count_;
  sum_ += value;
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  if (it != bounds_.end()) ++buckets_[size_t(it - bounds_.begin())];
}

void Histogram::render(std::string& out, const std::string& name,
                       const std::string& labels) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += buckets_[i];
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, count_);
  out += fmt::format("{}_sum{{{}}} {}\n", name, labels, sum_);
  out += fmt::format("{}_count{{{}}} {}\n", name, labels, count_);
}

Metrics::Metrics(std::string model_name)
    : labels_(fmt::format("model_name=\"{}\"", escape_label(model_name))),
      ttft_(kTtftBounds),
      itl_(kItlBounds),
      e2e_(kRequestBounds),
      queue_(kRequestBounds) {
  for (const char* reason : {"stop", "length", "abort"}) success_[reason] = 0;
}

void Metrics::set_queue(int running, int waiting) {
  std::lock_guard lock(mutex_);
  running_ = running;
  waiting_ = waiting;
}

void Metrics::set_kv_usage(std::vector<double> per_rank) {
  std::lock_guard lock(mutex_);
  kv_usage_ = std::move(per_rank);
}

std::vector<double> Metrics::kv_usage() const {
  std::lock_guard lock(mutex_);
  return kv_usage_;
}

void Metrics::add_tokens(int64_t prompt, int64_t generation) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prompt;
  generation_tokens_ += generation;
}

void Metrics::add_preemptions(int64_t n) {
  std::lock_guard lock(mutex_);
  preemptions_ += n;
}

void Metrics::set_engine(const EngineCounters& totals) {
  std::lock_guard lock(mutex_);
  engine_ = totals;
}

void Metrics::request_finished(const std::string& reason, double e2e_seconds,
                               double queue_seconds) {
  std::lock_guard lock(mutex_);
  ++success_[reason];
  e2e_.observe(e2e_seconds);
  queue_.observe(queue_seconds);
}

void Metrics::first_token(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::inter_token(double seconds) {
  std::lock_guard lock(mutex_);
  itl_.observe(seconds);
}

std::string Metrics::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  auto gauge = [&](const char* name, const char* help, double v) {
    const std::string n = std::string("parafuse:") + name;
    header(out, n, "gauge", help);
    out += fmt::format("{}{{{}}} {}\n", n, labels_, v);
  };
  auto counter = [&](const char* name, const char* help, double v) {
    const std::string n = std::string("parafuse:") + name;
    header(out, n, "counter", help);
    out += fmt::format("{}{{{}}} {}\n", n, labels_, v);
  };
  gauge("num_requests_running", "Requests in the running batch.", running_);
  gauge("num_requests_waiting", "Requests waiting to be admitted.", waiting_);
  header(out, "parafuse:kv_cache_usage_perc", "gauge",
         "Fraction of KV-cache pages in use (1 = full), per rank.");
  for (size_t r = 0; r < kv_usage_.size(); ++r)
    out += fmt::format("parafuse:kv_cache_usage_perc{{{},rank=\"{}\"}} {}\n", labels_, r,
                       kv_usage_[r]);
  counter("prompt_tokens_total", "Prompt tokens prefilled (recomputed ones not counted).",
          double(prompt_tokens_));
  counter("generation_tokens_total", "Tokens generated.", double(generation_tokens_));
  header(out, "parafuse:request_success_total", "counter",
         "Requests finished, by finish reason.");
  for (const auto& [reason, n] : success_)
    out += fmt::format("parafuse:request_success_total{{{},finished_reason=\"{}\"}} {}\n",
                       labels_, reason, n);
  counter("num_preemptions_total", "Running requests preempted for KV-cache pages.",
          double(preemptions_));
  const std::pair<const char*, const Histogram*> histograms[] = {
      {"time_to_first_token_seconds", &ttft_},
      {"inter_token_latency_seconds", &itl_},
      {"e2e_request_latency_seconds", &e2e_},
      {"request_queue_time_seconds", &queue_}};
  const char* helps[] = {"Time from arrival to the first token.",
                         "Time between two tokens of one request.",
                         "Time from arrival to the last token.",
                         "Time from arrival to the first step that ran the request."};
  for (size_t i = 0; i < 4; ++i) {
    const std::string n = std::string("parafuse:") + histograms[i].first;
    header(out, n, "histogram", helps[i]);
    histograms[i].second->render(out, n, labels_);
  }
  counter("all_reduces_total", "Tensor-parallel all-reduces run by rank 0's group.",
          double(engine_.all_reduces));
  counter("collective_seconds_total", "Seconds rank 0 spent in tensor-parallel collectives.",
          engine_.collective_seconds);
  counter("pipeline_wait_seconds_total", "Seconds rank 0 waited on pipeline sends/receives.",
          engine_.pipeline_wait_seconds);
  return out;
}

}  // namespace parafuse

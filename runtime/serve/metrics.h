// The server's Prometheus metrics: what vLLM users already chart, under `parafuse:` (the same
// names and meanings: kv_cache_usage_perc is a fraction in [0, 1], latencies in seconds), plus
// the figures FFN Fusion changes (all-reduces, time in collectives and pipeline waits). Labelled
// by model_name; the KV cache gauge also by rank, since every rank holds its own cache.
//
// Written by the step loop and the HTTP threads, read by GET /metrics: one mutex.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace parafuse {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Prometheus text lines for `name` with `labels` ("model_name=\"x\"").
  void render(std::string& out, const std::string& name, const std::string& labels) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> buckets_;  // per bound, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct EngineCounters {
  int64_t all_reduces = 0;
  double collective_seconds = 0;
  double pipeline_wait_seconds = 0;
};

class Metrics {
 public:
  explicit Metrics(std::string model_name);

  void set_queue(int running, int waiting);
  void set_kv_usage(std::vector<double> per_rank);  // fraction of pages used, per world rank
  void add_tokens(int64_t prompt, int64_t generation);
  void add_preemptions(int64_t n);
  void set_engine(const EngineCounters& totals);  // since the server started, this rank
  void request_finished(const std::string& reason, double e2e_seconds, double queue_seconds);
  void first_token(double seconds);
  void inter_token(double seconds);

  std::vector<double> kv_usage() const;
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::string labels_;
  int running_ = 0, waiting_ = 0;
  std::vector<double> kv_usage_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0, preemptions_ = 0;
  std::map<std::string, int64_t> success_;
  EngineCounters engine_;
  Histogram ttft_, itl_, e2e_, queue_;
};

}  // namespace parafuse

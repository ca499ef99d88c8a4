// The step loop of `parafuse serve`: the Scheduler's plans run on every rank in lockstep.
//
// World rank 0 runs ServeLoop::run() on its main thread: it takes the requests the HTTP
// threads submitted, asks the Scheduler for a plan, broadcasts the plan to every rank, runs it
// on its own engine, and turns the sampled ids into text for the requests (detokenized as a
// stream, stop strings held back until they cannot match). Every other rank runs
// run_serve_worker(): receive a plan, run it, repeat until the shutdown plan. When there is
// nothing to do rank 0 still sends an empty plan every heartbeat, so a worker's bounded wait
// never expires on an idle server and a dead rank 0 takes the job down. After every plan the
// ranks share their KV-cache usage (one small all-reduce), which /metrics reports per rank.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine/scheduler.h"
#include "runtime/serve/metrics.h"
#include "runtime/serve/openai_api.h"

namespace parafuse {

class Engine;
class Collectives;
class Tokenizer;

struct ServeLoopOptions {
  int max_waiting = 256;            // queued requests beyond this get 429
  int max_running = 256;            // sequences in one batch
  std::chrono::milliseconds heartbeat{250};
  // After stop(), accepted requests may finish for this long; then they end with "abort".
  std::chrono::milliseconds drain{30000};
};

// What one request gets back, on the loop thread, in order: pieces of text (with the tokens
// they came from), the last one with `finish` set.
struct ServeDelta {
  std::string text;
  std::vector<OutputToken> tokens;
  FinishReason finish = FinishReason::None;
  Usage usage;
};

struct ServeRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;        // end-of-sequence ids and stop_token_ids
  std::vector<std::string> stop_strings;
  int top_logprobs = -1;
  // Called on the loop thread; must not block (the HTTP side posts to its own thread).
  std::function<void(const ServeDelta&)> on_delta;
};

class ServeLoop {
 public:
  // `world` is null for a single rank. The engine, tokenizer and metrics outlive the loop.
  ServeLoop(Engine& engine, Collectives* world, const Tokenizer& tokenizer, Metrics& metrics,
            const ServeLoopOptions& options);
  ~ServeLoop();

  // --- any thread ---
  // Empty when a request of this size can be served, else the reason (a 400 for the client).
  std::string admission_problem(int64_t prompt_tokens, int64_t max_tokens) const;
  // Queues a request and returns its id. Throws ApiError 429 when the queue is full, 503
  // when stopping.
  int64_t submit(ServeRequest request);
  // Ends a request (client gone): its pages are freed on every rank in the next step.
  void cancel(int64_t id);
  // Stops taking requests (503) and drains: queued and running requests finish, for at most
  // ServeLoopOptions::drain, then end with finish "abort"; a second stop() aborts them now.
  void stop();
  bool ready() const { return ready_; }
  bool stopping() const { return stopping_; }

  // --- world rank 0's main thread ---
  // Runs until stop(); sends the shutdown plan to every rank before it returns. `on_ready` is
  // called once every rank is in its loop and requests are taken.
  void run(const std::function<void()>& on_ready = {});

 private:
  struct Active {
    ServeRequest request;
    std::optional<StreamDecoder> decoder;
    std::string held;                 // decoded text not sent yet (may start a stop string)
    std::vector<OutputToken> tokens;  // the tokens behind `held`
    std::chrono::steady_clock::time_point arrival, last_token;
    std::optional<std::chrono::steady_clock::time_point> admitted;
    int64_t emitted = 0;
    bool prompt_counted = false;  // in prompt_tokens_total
  };
  void take_submissions();
  void run_plan(StepPlan& plan);
  void handle(const TokenEvent& e);
  // Sends what of `a.held` can no longer become a stop string; true when a stop string
  // matched (the request is then finished).
  bool release_text(Active& a, bool final);
  void finish(int64_t id, Active& a, FinishReason reason, int64_t completion_tokens);
  void share_kv_usage();

  Engine& engine_;
  Collectives* world_;
  const Tokenizer& tokenizer_;
  Metrics& metrics_;
  ServeLoopOptions options_;
  Scheduler scheduler_;

  std::mutex mutex_;  // guards what the HTTP threads hand over
  std::condition_variable wake_;
  std::vector<std::pair<int64_t, ServeRequest>> submitted_;
  std::vector<int64_t> cancelled_;
  std::atomic<int> waiting_{0};  // the scheduler's queue after the last step
  int64_t next_id_ = 1;
  std::atomic<bool> ready_{false}, stopping_{false}, abort_{false};
  std::chrono::steady_clock::time_point drain_deadline_;  // set by stop(), under mutex_

  std::map<int64_t, Active> active_;  // loop thread only
  int64_t preemptions_seen_ = 0;
};

// Every rank but world rank 0: runs the plans rank 0 broadcasts until the shutdown plan.
void run_serve_worker(Engine& engine, Collectives& world);

}  // namespace parafuse

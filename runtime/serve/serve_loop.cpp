#include "runtime/serve/serve_loop.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "runtime/engine/engine.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

SchedulerOptions scheduler_options(Engine& engine, const ServeLoopOptions& options) {
  SchedulerOptions s;
  s.kv_pages = engine.kv_cache().pages();
  s.page_size = engine.kv_cache().page_size();
  s.max_batch_tokens = engine.options().max_batch_tokens;
  s.max_running = options.max_running;
  return s;
}

// Every rank's share of used KV pages, in world-rank order (one all-reduce of a small vector).
std::vector<double> gather_kv_usage(Engine& engine, Collectives* world) {
  const PagedKvCache& cache = engine.kv_cache();
  const float mine = float(double(cache.used_pages()) / double(cache.pages()));
  if (!world) return {mine};
  std::vector<float> usage(size_t(world->size()), 0.0f);
  usage[size_t(world->rank())] = mine;
  Tensor t{usage.data(), DType::F32, 1, int64_t(usage.size()), int64_t(usage.size())};
  world->all_reduce_sum(t);
  return {usage.begin(), usage.end()};
}

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t stop_prefix_at_end(const std::string& text, const std::vector<std::string>& stops) {
  size_t longest = 0;
  for (const std::string& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size()); n > longest; --n)
      if (text.compare(text.size() - n, n, stop, 0, n) == 0) {
        longest = n;
        break;
      }
  return longest;
}

}  // namespace

ServeLoop::ServeLoop(Engine& engine, Collectives* world, const Tokenizer& tokenizer,
                     Metrics& metrics, const ServeLoopOptions& options)
    : engine_(engine),
      world_(world),
      tokenizer_(tokenizer),
      metrics_(metrics),
      options_(options),
      scheduler_(scheduler_options(engine, options)) {}

ServeLoop::~ServeLoop() = default;

std::string ServeLoop::admission_problem(int64_t prompt_tokens, int64_t max_tokens) const {
  const int64_t context = engine_.config().max_position_embeddings;
  if (prompt_tokens + max_tokens > context)
    return fmt::format(
        "this model's context is {} tokens, but the prompt ({} tokens) plus max_tokens ({}) "
        "asks for {}",
        context, prompt_tokens, max_tokens, prompt_tokens + max_tokens);
  return scheduler_.admission_problem(prompt_tokens, max_tokens);
}

int64_t ServeLoop::submit(ServeRequest request) {
  std::lock_guard lock(mutex_);
  if (stopping_) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  if (int(submitted_.size()) + waiting_ >= options_.max_waiting)
    throw ApiError(429,
                   fmt::format("too many requests waiting ({}); try again later",
                               options_.max_waiting),
                   "", "queue_full");
  const int64_t id = next_id_++;
  submitted_.emplace_back(id, std::move(request));
  wake_.notify_one();
  return id;
}

void ServeLoop::cancel(int64_t id) {
  std::lock_guard lock(mutex_);
  cancelled_.push_back(id);
  wake_.notify_one();
}

void ServeLoop::stop() {
  std::lock_guard lock(mutex_);
  if (stopping_) {
    abort_ = true;  // a second stop: do not wait for the drain
  } else {
    stopping_ = true;
    drain_deadline_ = Clock::now() + options_.drain;
  }
  ready_ = false;
  wake_.notify_one();
}

void ServeLoop::take_submissions() {
  std::vector<std::pair<int64_t, ServeRequest>> submitted;
  std::vector<int64_t> cancelled;
  {
    std::lock_guard lock(mutex_);
    submitted.swap(submitted_);
    cancelled.swap(cancelled_);
  }
  const auto now = Clock::now();
  for (auto& [id, request] : submitted) {
    ScheduledRequest s;
    s.id = id;
    s.prompt = request.prompt;
    s.max_tokens = request.max_tokens;
    s.sampling = request.sampling;
    s.stop_ids = request.stop_ids;
    s.top_logprobs = request.top_logprobs;
    scheduler_.add(std::move(s));
    Active a;
    a.request = std::move(request);
    a.decoder.emplace(tokenizer_);
    a.arrival = a.last_token = now;
    active_.emplace(id, std::move(a));
  }
  for (int64_t id : cancelled)
    if (active_.count(id)) scheduler_.cancel(id);
  // Draining: what was accepted runs on until the drain time is up (or a second stop).
  if (stopping_ && (abort_ || now >= drain_deadline_))
    for (auto& [id, a] : active_) scheduler_.cancel(id);
}

void ServeLoop::run(const std::function<void()>& on_ready) {
  engine_.reset_stats();
  share_kv_usage();  // every rank is in its loop: ready
  ready_ = !stopping_;
  if (ready_ && on_ready) on_ready();
  spdlog::debug("serve: step loop running");
  while (true) {
    take_submissions();
    if (!scheduler_.has_work()) {
      if (stopping_) break;
      std::unique_lock lock(mutex_);
      const bool woken = wake_.wait_for(lock, options_.heartbeat, [&] {
        return !submitted_.empty() || !cancelled_.empty() || stopping_;
      });
      lock.unlock();
      if (!woken) {  // a heartbeat: workers see rank 0 alive
        StepPlan heartbeat;
        run_plan(heartbeat);
      }
      continue;
    }
    StepPlan plan = scheduler_.schedule();
    run_plan(plan);
  }
  StepPlan shutdown;
  shutdown.shutdown = true;
  if (world_) broadcast_step_plan(*world_, shutdown);
  ready_ = false;
}

void ServeLoop::run_plan(StepPlan& plan) {
  const auto now = Clock::now();
  for (int64_t id : scheduler_.last_admitted())
    if (auto it = active_.find(id); it != active_.end()) it->second.admitted = now;
  if (world_) broadcast_step_plan(*world_, plan);
  const StepOutput output = run_step(engine_, plan);
  const std::vector<TokenEvent> events = scheduler_.complete(plan, output);
  int64_t prompt_tokens = 0, generated = 0;
  for (const TokenEvent& e : events) {
    auto it = active_.find(e.request);
    // Its prefill is done (a request cancelled while it waited was never prefilled).
    if (it != active_.end() && !it->second.prompt_counted &&
        e.finished != FinishReason::Cancelled) {
      prompt_tokens += e.prompt_tokens;
      it->second.prompt_counted = true;
    }
    if (e.token >= 0) ++generated;
    handle(e);
  }
  const SchedulerCounts counts = scheduler_.counts();
  waiting_ = counts.waiting;
  metrics_.set_queue(counts.running, counts.waiting);
  metrics_.add_tokens(prompt_tokens, generated);
  metrics_.add_preemptions(counts.preemptions - preemptions_seen_);
  preemptions_seen_ = counts.preemptions;
  const EngineStats& stats = engine_.stats();
  metrics_.set_engine({stats.tp_all_reduces, stats.collective_seconds, stats.transport_seconds});
  share_kv_usage();
}

void ServeLoop::share_kv_usage() { metrics_.set_kv_usage(gather_kv_usage(engine_, world_)); }

void ServeLoop::handle(const TokenEvent& e) {
  auto it = active_.find(e.request);
  if (it == active_.end()) return;  // already finished by a stop string
  Active& a = it->second;
  const auto now = Clock::now();
  if (e.token >= 0) {
    if (a.emitted == 0) {
      metrics_.first_token(seconds_between(a.arrival, now));
    } else {
      metrics_.inter_token(seconds_between(a.last_token, now));
    }
    a.last_token = now;
    ++a.emitted;
    OutputToken t;
    t.id = e.token;
    t.text = tokenizer_.token_bytes(e.token);
    t.logprob = e.logprob.logprob;
    for (const TokenLogprob& alt : e.top) t.top.emplace_back(tokenizer_.token_bytes(alt.id), alt.logprob);
    // Control tokens (a chat turn's end under ignore_eos) are not text, as in vLLM's default
    // skip_special_tokens; their token (and logprob) is still reported.
    if (!tokenizer_.is_control(e.token)) a.held += a.decoder->push(e.token);
    a.tokens.push_back(std::move(t));
    if (release_text(a, false)) {
      scheduler_.cancel(e.request, FinishReason::Stop);
      finish(e.request, a, FinishReason::Stop, e.completion_tokens);
      return;
    }
  }
  if (e.finished != FinishReason::None) {
    a.held += a.decoder->flush();
    if (release_text(a, true) && e.finished != FinishReason::Cancelled) {
      finish(e.request, a, FinishReason::Stop, e.completion_tokens);
      return;
    }
    finish(e.request, a, e.finished, e.completion_tokens);
  }
}

bool ServeLoop::release_text(Active& a, bool final) {
  const std::vector<std::string>& stops = a.request.stop_strings;
  size_t stop_at = std::string::npos;
  for (const std::string& stop : stops) stop_at = std::min(stop_at, a.held.find(stop));
  if (stop_at != std::string::npos) {
    a.held.resize(stop_at);  // the stop string and what follows are not sent
    ServeDelta d;
    d.text = std::move(a.held);
    d.tokens = std::move(a.tokens);
    a.held.clear();
    a.tokens.clear();
    if (!d.text.empty() || !d.tokens.empty()) a.request.on_delta(d);
    return true;
  }
  const size_t keep = final ? 0 : stop_prefix_at_end(a.held, stops);
  if (keep > 0 && keep == a.held.size()) return false;  // all of it may start a stop string
  ServeDelta d;
  d.text = a.held.substr(0, a.held.size() - keep);
  a.held.erase(0, a.held.size() - keep);
  d.tokens = std::move(a.tokens);
  a.tokens.clear();
  if (!d.text.empty() || !d.tokens.empty()) a.request.on_delta(d);
  return false;
}

void ServeLoop::finish(int64_t id, Active& a, FinishReason reason, int64_t completion_tokens) {
  ServeDelta d;
  d.finish = reason;
  d.usage = {int64_t(a.request.prompt.size()), completion_tokens};
  a.request.on_delta(d);
  const auto now = Clock::now();
  metrics_.request_finished(finish_reason_name(reason), seconds_between(a.arrival, now),
                            seconds_between(a.arrival, a.admitted.value_or(now)));
  active_.erase(id);
}

void run_serve_worker(Engine& engine, Collectives& world) {
  gather_kv_usage(engine, &world);  // the first exchange: every rank is in its loop
  while (true) {
    StepPlan plan;
    broadcast_step_plan(world, plan);
    if (plan.shutdown) break;
    run_step(engine, plan);
    gather_kv_usage(engine, &world);
  }
}

}  // namespace parafuse

#include "runtime/engine/scheduler.h"

#include <algorithm>

#include <fmt/format.h>

#include "kernels/core/error.h"

namespace parafuse {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "abort";
    case FinishReason::None: break;
  }
  return "";
}

Scheduler::Scheduler(const SchedulerOptions& options) : options_(options) {
  PF_CHECK(options.kv_pages > 0 && options.page_size > 0 && options.max_batch_tokens > 0 &&
               options.max_running > 0,
           "scheduler: pages {}, page size {}, batch tokens {} and running {} must be positive",
           options.kv_pages, options.page_size, options.max_batch_tokens, options.max_running);
  // Every running sequence decodes one row per step, so the batch can never hold more.
  options_.max_running = int(std::min<int64_t>(options.max_running, options.max_batch_tokens));
}

int64_t Scheduler::total_tokens(const Sequence& s) {
  return int64_t(s.request.prompt.size() + s.generated.size());
}

int32_t Scheduler::token_at(const Sequence& s, int64_t i) {
  const int64_t n_prompt = int64_t(s.request.prompt.size());
  return i < n_prompt ? s.request.prompt[size_t(i)] : s.generated[size_t(i - n_prompt)];
}

int64_t Scheduler::pages_for(int64_t tokens) const {
  return (tokens + options_.page_size - 1) / options_.page_size;
}

std::string Scheduler::admission_problem(int64_t prompt_tokens, int64_t max_tokens) const {
  if (prompt_tokens < 1) return "the prompt is empty";
  if (max_tokens < 1) return fmt::format("max_tokens must be at least 1, got {}", max_tokens);
  const int64_t capacity = options_.kv_pages * options_.page_size;
  if (pages_for(prompt_tokens + max_tokens) > options_.kv_pages)
    return fmt::format(
        "the prompt ({} tokens) plus max_tokens ({}) needs {} tokens of KV cache, but the cache "
        "holds {} (batch.kv_cache_tokens)",
        prompt_tokens, max_tokens, prompt_tokens + max_tokens, capacity);
  return {};
}

void Scheduler::add(ScheduledRequest request) {
  const std::string problem =
      admission_problem(int64_t(request.prompt.size()), int64_t(request.max_tokens));
  PF_CHECK(problem.empty(), "request {}: {}", request.id, problem);
  Sequence s;
  s.request = std::move(request);
  waiting_.push_back(std::move(s));
}

void Scheduler::finish(std::map<int64_t, Sequence>::iterator it) {
  release_.push_back(it->second.seq);
  request_of_seq_.erase(it->second.seq);
  used_pages_ -= it->second.pages;
  running_.erase(it);
}

void Scheduler::cancel(int64_t id, FinishReason reason) {
  auto event = [&](const Sequence& s) {
    TokenEvent e;
    e.request = id;
    e.finished = reason;
    e.prompt_tokens = int64_t(s.request.prompt.size());
    e.completion_tokens = int64_t(s.generated.size());
    cancelled_.push_back(std::move(e));
  };
  if (auto it = running_.find(id); it != running_.end()) {
    event(it->second);
    finish(it);
    return;
  }
  auto w = std::find_if(waiting_.begin(), waiting_.end(),
                        [&](const Sequence& s) { return s.request.id == id; });
  if (w == waiting_.end()) return;  // already finished
  event(*w);
  waiting_.erase(w);
}

void Scheduler::requeue(std::map<int64_t, Sequence>::iterator it) {
  Sequence s = std::move(it->second);
  finish(it);
  s.computed = 0;
  s.pages = 0;
  s.in_plan = false;
  waiting_.push_front(std::move(s));  // older preempted ones end up first
  ++preemptions_;
  preempted_this_step_ = true;
}

bool Scheduler::preempt_newest() {
  auto newest = running_.end();
  for (auto it = running_.begin(); it != running_.end(); ++it)
    if (!it->second.in_plan &&
        (newest == running_.end() || it->second.admitted_order > newest->second.admitted_order))
      newest = it;
  if (newest == running_.end()) return false;
  requeue(newest);
  return true;
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  plan.step = ++step_;
  preempted_this_step_ = false;
  last_admitted_.clear();
  int64_t budget = options_.max_batch_tokens;

  // Running sequences, oldest first: decodes, then the rest of partly prefilled prompts.
  std::vector<int64_t> order;
  for (auto& [id, s] : running_) {
    s.in_plan = false;
    order.push_back(id);
  }
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return running_.at(a).admitted_order < running_.at(b).admitted_order;
  });
  auto plan_chunk = [&](Sequence& s, int64_t n) {
    PlannedSeq p;
    p.seq = s.seq;
    for (int64_t i = s.computed; i < s.computed + n; ++i) p.tokens.push_back(token_at(s, i));
    p.sample = s.computed + n == total_tokens(s);
    p.sampling = s.request.sampling;
    p.sampling.counter = uint64_t(s.computed + n);
    p.top_logprobs = s.request.top_logprobs;
    plan.seqs.push_back(std::move(p));
    s.in_plan = true;
    budget -= n;
  };
  for (const bool decodes : {true, false}) {
    for (int64_t id : order) {
      auto it = running_.find(id);
      if (it == running_.end() || it->second.in_plan) continue;  // preempted, or planned
      Sequence& s = it->second;
      const int64_t left = total_tokens(s) - s.computed;
      if ((left == 1) != decodes || budget == 0) continue;
      const int64_t n = std::min(left, budget);
      // Pages for what this step adds; take them from the newest others when none are free.
      const int64_t need = std::max<int64_t>(pages_for(s.computed + n) - s.pages, 0);
      s.in_plan = true;  // not a candidate for its own preemption
      while (need > free_pages() && preempt_newest()) {
      }
      if (need > free_pages()) {  // it is the newest left: it waits for the older ones
        requeue(it);
        continue;
      }
      s.pages += need;
      used_pages_ += need;
      plan_chunk(s, n);
    }
  }

  // Admission, first come first served: the whole prompt's pages (and the first output's)
  // must be free, keeping a 1% watermark for the decodes of those already running.
  const int64_t watermark = running_.empty() ? 0 : std::max<int64_t>(1, options_.kv_pages / 100);
  // Nothing joins in a step that had to preempt: the cache is full.
  while (!preempted_this_step_ && !waiting_.empty() && budget > 0 &&
         int(running_.size()) < options_.max_running) {
    Sequence& head = waiting_.front();
    const int64_t total = total_tokens(head);
    const int64_t pages = pages_for(total + 1);
    if (pages + watermark > free_pages()) break;
    Sequence s = std::move(head);
    waiting_.pop_front();
    s.seq = next_seq_++;
    if (next_seq_ == 0x7fffffff) next_seq_ = 1;
    s.admitted_order = ++admissions_;
    if (!s.ever_admitted) last_admitted_.push_back(s.request.id);
    s.ever_admitted = true;
    s.pages = pages;
    used_pages_ += pages;
    plan.start.push_back(s.seq);
    request_of_seq_[s.seq] = s.request.id;
    auto [it, inserted] = running_.emplace(s.request.id, std::move(s));
    PF_CHECK(inserted, "scheduler: request id {} is already running", it->first);
    plan_chunk(it->second, std::min(total, budget));
  }
  plan.release = std::move(release_);
  release_.clear();
  return plan;
}

std::vector<TokenEvent> Scheduler::complete(const StepPlan& plan, const StepOutput& output) {
  std::vector<TokenEvent> events;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    const PlannedSeq& p = plan.seqs[i];
    auto owner = request_of_seq_.find(p.seq);
    if (owner == request_of_seq_.end()) continue;  // cancelled after the plan was made
    auto it = running_.find(owner->second);
    Sequence& s = it->second;
    s.computed += int64_t(p.tokens.size());
    if (!p.sample) continue;
    const int32_t id = output.ids.at(i);
    TokenEvent e;
    e.request = s.request.id;
    e.prompt_tokens = int64_t(s.request.prompt.size());
    const auto& stops = s.request.stop_ids;
    if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
      e.finished = FinishReason::Stop;
    } else {
      e.token = id;
      if (i < output.sampled_logprob.size()) e.logprob = output.sampled_logprob[i];
      if (i < output.top.size()) e.top = output.top[i];
      s.generated.push_back(id);
      if (int64_t(s.generated.size()) >= s.request.max_tokens) e.finished = FinishReason::Length;
    }
    // A stop id is not emitted but was generated: counted, as vLLM counts it.
    e.completion_tokens = int64_t(s.generated.size()) + (e.token < 0 ? 1 : 0);
    if (e.finished != FinishReason::None) finish(it);
    events.push_back(std::move(e));
  }
  for (TokenEvent& e : cancelled_) events.push_back(std::move(e));
  cancelled_.clear();
  return events;
}

SchedulerCounts Scheduler::counts() const {
  return {int(running_.size()), int(waiting_.size()), used_pages_, preemptions_};
}

}  // namespace parafuse

// Continuous batching: which sequences run in each step, decided on world rank 0.
//
// The Scheduler owns the KV-page budget (the same on every rank: each rank's PagedKvCache has
// the same number of pages, attention-free blocks simply own no pool) and every step builds a
// StepPlan (step_plan.h) under two budgets, as vLLM's does:
//   - tokens: at most max_batch_tokens rows per forward. Running decodes go first (one row
//     each), then prompts are prefilled in chunks with what is left, so a long prompt never
//     stalls the streams that are decoding;
//   - pages: a request is admitted (FIFO) when the pages of its whole prompt plus its first
//     generated token are free; a decode that needs a new page takes it, and when none is
//     free the newest running request is preempted: its pages are freed and it goes back to
//     the front of the queue to be recomputed (prompt + what it generated) later. A step
//     never fails for lack of pages.
// It knows nothing of HTTP or text: requests are token ids, events are token ids.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine/step_plan.h"

namespace parafuse {

struct SchedulerOptions {
  int64_t kv_pages = 256;          // pages of the KV cache (on every rank)
  int64_t page_size = 16;          // tokens per page
  int64_t max_batch_tokens = 512;  // rows per forward step
  int max_running = 256;           // sequences in one batch at most
};

struct ScheduledRequest {
  int64_t id = 0;
  std::vector<int32_t> prompt;
  int max_tokens = 16;                // generated tokens at most (> 0)
  SamplingParams sampling;            // counter is set per token
  std::vector<int32_t> stop_ids;      // end the request without emitting the id
  int top_logprobs = -1;              // -1: none
};

enum class FinishReason { None, Stop, Length, Cancelled };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "abort"

// One generated token (or the end) of one request.
struct TokenEvent {
  int64_t request = 0;
  int32_t token = -1;  // -1 when the event only finishes (a stop id is not emitted)
  TokenLogprob logprob;
  std::vector<TokenLogprob> top;
  FinishReason finished = FinishReason::None;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // generated so far, this token (or the stop id) included
};

struct SchedulerCounts {
  int running = 0;
  int waiting = 0;
  int64_t used_pages = 0;
  int64_t preemptions = 0;  // since construction
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options);

  // Empty when the request can be served once alone (prompt and max_tokens fit the cache),
  // else why not. add() throws parafuse::Error for such a request.
  std::string admission_problem(int64_t prompt_tokens, int64_t max_tokens) const;
  void add(ScheduledRequest request);
  // Ends a request (waiting or running): its pages are freed in the next plan and a final
  // event with FinishReason::Cancelled (or `reason`) is returned from the next complete().
  void cancel(int64_t id, FinishReason reason = FinishReason::Cancelled);
  bool has_work() const { return !running_.empty() || !waiting_.empty() || !release_.empty(); }

  StepPlan schedule();
  // Applies the step's output to the running requests and returns their events in plan
  // order, then the events of cancelled requests.
  std::vector<TokenEvent> complete(const StepPlan& plan, const StepOutput& output);

  SchedulerCounts counts() const;
  // The requests the last schedule() admitted for the first time (not re-admissions).
  const std::vector<int64_t>& last_admitted() const { return last_admitted_; }
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Sequence {
    ScheduledRequest request;
    int seq = 0;                     // engine sequence id while running
    std::vector<int32_t> generated;  // emitted tokens (survive a preemption)
    int64_t computed = 0;            // tokens in the KV cache
    int64_t pages = 0;               // pages held
    bool in_plan = false;
    int64_t admitted_order = 0;  // oldest first in each step
    bool ever_admitted = false;
  };
  // prompt + generated: what the cache holds once the sequence has caught up. A running
  // sequence feeds tokens [computed, total) and samples when it reaches total; after a
  // preemption computed is 0 again, so its prompt and output are recomputed.
  static int64_t total_tokens(const Sequence& s);
  static int32_t token_at(const Sequence& s, int64_t i);
  int64_t pages_for(int64_t tokens) const;
  int64_t free_pages() const { return options_.kv_pages - used_pages_; }
  // Frees the newest running sequence that is not yet in this step's plan (its pages go in
  // the next release); false when there is none.
  bool preempt_newest();
  // Frees a running sequence and puts it at the front of the queue, to be recomputed.
  void requeue(std::map<int64_t, Sequence>::iterator it);
  void finish(std::map<int64_t, Sequence>::iterator it);

  SchedulerOptions options_;
  std::deque<Sequence> waiting_;
  std::map<int64_t, Sequence> running_;  // by request id
  std::map<int, int64_t> request_of_seq_;
  std::vector<int> release_;             // engine sequences to free in the next plan
  std::vector<TokenEvent> cancelled_;
  int64_t used_pages_ = 0;
  int64_t preemptions_ = 0;
  bool preempted_this_step_ = false;
  std::vector<int64_t> last_admitted_;
  int next_seq_ = 1;
  int64_t admissions_ = 0;
  uint64_t step_ = 0;
};

}  // namespace parafuse

// `parafuse bench serve`: a load generator for an OpenAI-compatible server (ours, `parafuse
// serve`, or any other), the equivalent of `vllm bench serve`, so numbers compare across servers.
//
// Built as three layers, each testable alone:
//   - the stream: SseParser (text/event-stream bytes, split anywhere, to events) and
//     StreamRecorder (events plus the time each piece arrived to one request's TTFT, inter-token
//     latencies, token counts, error); no sockets, so tests feed bytes with made-up clocks;
//   - the statistics: summarize() (mean, median, std, p90, p99 with numpy's definitions, as vllm
//     reports them), time_per_output_token(), compute_serve_metrics(), gamma arrival times;
//   - the load: run_load() drives one run (closed loop: C workers back to back; open loop:
//     gamma arrivals, optionally capped in flight) over keep-alive HTTP/1.1 connections
//     (Boost.Beast, one blocking connection per worker thread; Beast stays inside the .cpp).
// The command line and the table live in cmd_bench_serve.cpp. JSON keys are vllm's.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace parafuse {

// --url: http://HOST[:PORT][/PATH]. No TLS (plain TCP only).
struct ServerUrl {
  std::string host;          // "127.0.0.1", "localhost", "::1" (written [::1] in the URL)
  uint16_t port = 80;        // 80 when the URL names none
  std::string base_path;     // "" or "/prefix" (no trailing '/'); endpoints go after it
  std::string text() const;  // "http://127.0.0.1:8000" (+ base_path)
};
// Throws parafuse::Error whose message reads after the flag's name: "must be an http URL
// (http://HOST[:PORT][/PATH]), got 'ftp://x'" plus, where it helps, why.
ServerUrl parse_server_url(const std::string& text);

// Which request and stream-chunk shape an endpoint speaks: /v1/completions sends token ids and
// reads choices[0].text; a path ending in /chat/completions sends a user message of words and
// reads choices[0].delta.content.
enum class ApiKind { kCompletions, kChat };
ApiKind api_kind_of(std::string_view endpoint);

// One server-sent event: its `event:` type ("" when none) and its `data:` lines joined by '\n'.
struct SseEvent {
  std::string type;
  std::string data;
  bool operator==(const SseEvent&) const = default;
};

// An incremental text/event-stream parser (the WHATWG rules): lines end in LF, CRLF or CR (a CR
// at the end of one piece and an LF at the start of the next are one line end), a blank line
// ends an event, "data:" lines accumulate (one leading space dropped), ":" lines are comments,
// events without data are dropped. "data: [DONE]" (OpenAI's end of stream) is not returned: it
// sets done(), and everything after it is ignored. A line or event larger than kMaxEventBytes
// throws parafuse::Error (a server that never ends a line must not take all memory).
class SseParser {
 public:
  static constexpr size_t kMaxEventBytes = size_t(16) << 20;
  // The events completed by `bytes` (any split of the stream gives the same events overall).
  std::vector<SseEvent> feed(std::string_view bytes);
  bool done() const { return done_; }

 private:
  void end_line(std::vector<SseEvent>& out);
  std::string line_;
  bool line_ended_by_cr_ = false;  // the last byte was a CR: a following LF is part of it
  bool at_stream_start_ = true;    // a UTF-8 BOM may open the stream
  SseEvent pending_;
  bool pending_has_data_ = false;
  bool done_ = false;
};

// What one stream chunk (an event's JSON data) says.
struct StreamChunk {
  bool carries_token = false;  // a generated token's chunk (its text may be empty mid-UTF-8)
  std::optional<int64_t> completion_tokens, prompt_tokens;  // from "usage"
  std::optional<std::string> error;                         // {"error": {"message": ...}}
};
// Never throws: data that is not the expected JSON gives an error ("malformed stream chunk").
// A chunk carries a token when it has choices[0].text (completions) or
// choices[0].delta.content (chat), unless that text is empty and the chunk only closes the
// stream (finish_reason set) or only opens it (chat's role chunk).
StreamChunk read_stream_chunk(std::string_view data, ApiKind kind);

// One request's measurements. Times in seconds; start_s from the beginning of the run.
struct RequestRecord {
  bool success = false;
  std::string error;  // why it failed: "HTTP 401: invalid API key", "connection reset ..."
  double start_s = 0;
  double ttft_s = 0;          // request sent -> first token chunk
  std::vector<double> itl_s;  // gaps between consecutive token chunks after the first
  double e2el_s = 0;          // request sent -> "data: [DONE]"
  int64_t prompt_tokens = 0;  // usage.prompt_tokens, else the ids sent
  int64_t output_tokens = 0;  // usage.completion_tokens, else the token chunks counted
};

// Turns a streamed response body into a RequestRecord: on_bytes() with each piece of the body
// as it arrives and the time it arrived (seconds on the run's clock); finish() when the
// response ended. Success needs "data: [DONE]" and no error event.
class StreamRecorder {
 public:
  StreamRecorder(ApiKind kind, double start_s, int64_t prompt_tokens_sent);
  void on_bytes(std::string_view bytes, double now_s);
  // The stream said [DONE] or reported an error: nothing more matters for the timings.
  bool finished() const { return parser_.done() || !record_.error.empty(); }
  RequestRecord finish(double now_s);

 private:
  ApiKind kind_;
  SseParser parser_;
  RequestRecord record_;
  int64_t token_chunks_ = 0;
  double last_token_s_ = 0;
  std::optional<double> done_s_;  // when [DONE] arrived
  std::optional<int64_t> usage_completion_tokens_;
};

// The error text of a non-200 response: the JSON error's message when the body is one
// ({"error": {"message": ...}} or {"message": ...}), else the body itself (clipped).
// "HTTP 401: invalid API key".
std::string http_error_text(int status, std::string_view body);

// TPOT of one request: (e2el - ttft) / (output_tokens - 1); none for one output token or fewer.
std::optional<double> time_per_output_token(const RequestRecord& record);

// numpy's definitions: percentile with linear interpolation between closest ranks, std over N
// (ddof = 0). All zeros for no values (as vllm reports an empty list).
struct LatencySummary {
  double mean = 0, median = 0, std = 0, p90 = 0, p99 = 0;
};
double percentile(std::vector<double> values, double q);  // q in [0, 100]
LatencySummary summarize(const std::vector<double>& values);

// One run's result over its requests (latencies in seconds here; the JSON has milliseconds).
struct ServeRunMetrics {
  int64_t completed = 0, failed = 0;
  int64_t total_input_tokens = 0, total_output_tokens = 0;  // over completed requests
  double duration_s = 0;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  LatencySummary ttft, tpot, itl, e2el;
  std::vector<std::string> errors;  // the first few distinct error texts
};
ServeRunMetrics compute_serve_metrics(const std::vector<RequestRecord>& records, double duration_s);

// What describes a run in its JSON object (besides the metrics).
struct ServeRunSpec {
  std::optional<int> concurrency;  // workers (closed loop) or the in-flight cap; none: no cap
  double request_rate = 0;         // requests/s; infinity: all at once (closed loop too)
  double burstiness = 1;
  int num_prompts = 0, input_len = 0, output_len = 0;
  std::string label, url, endpoint, model;
};
// vllm bench serve's keys: completed, failed, total_input_tokens, total_output_tokens,
// duration, request_throughput, output_throughput, total_token_throughput, {mean,median,std,
// p90,p99}_{ttft,tpot,itl,e2el}_ms; plus the spec ("request_rate": "inf" when unbounded,
// "concurrency": null when uncapped) and "errors".
nlohmann::json serve_run_json(const ServeRunSpec& spec, const ServeRunMetrics& metrics);

// Gaps between consecutive arrivals: gamma with shape `burstiness` and mean 1/rate
// (burstiness 1 is a Poisson process; below 1 burstier, above 1 more regular). All zero for an
// infinite rate. Seeded: the same arguments give the same gaps.
std::vector<double> gamma_intervals(int count, double rate, double burstiness, uint64_t seed);
// When each request is sent, seconds from the run's start: the first at 0, then the gaps.
std::vector<double> arrival_times(int count, double rate, double burstiness, uint64_t seed);

// Prompts like vllm's random dataset: `length` token ids in [100, 10000) (ordinary tokens in
// every vocabulary we test with, no special ones), or `length` common English words for chat.
std::vector<int32_t> random_prompt_ids(int length, uint64_t seed);
std::string random_prompt_words(int length, uint64_t seed);

// The body of one streamed request: greedy, ignore_eos, exactly `output_len` tokens, usage in
// the last chunk. Completions send `prompt_ids`; chat sends `prompt_text` as a user message.
std::string request_body(ApiKind kind, const std::string& model,
                         const std::vector<int32_t>& prompt_ids, const std::string& prompt_text,
                         int output_len);

// One run of load against a server.
struct LoadPlan {
  ServerUrl url;
  std::string endpoint = "/v1/completions";
  std::string model;
  std::string api_key;  // sent as "Authorization: Bearer KEY" when set
  int num_prompts = 1;
  int input_len = 1, output_len = 1;
  uint64_t seed = 0;
  // Closed loop: rate infinity and max_in_flight = C (C workers back to back). Open loop: a
  // finite rate; max_in_flight caps requests in flight (later arrivals wait), none: no cap.
  double request_rate = 0;
  double burstiness = 1;
  std::optional<int> max_in_flight;
  double timeout_s = 600;  // per connect, write and read of one request
};
struct LoadResult {
  std::vector<RequestRecord> records;  // in request order
  double duration_s = 0;               // first send to last completion
};
// Runs num_prompts requests as the plan says; `on_complete(done)` is called (from worker
// threads, one at a time) after each request. Request failures are recorded, not thrown.
LoadResult run_load(const LoadPlan& plan,
                    const std::function<void(size_t completed)>& on_complete = {});

// Checks the server answers before a benchmark: connects and asks GET /v1/models. Throws
// parafuse::Error with one line for a user when it cannot connect: "cannot connect to
// http://127.0.0.1:8000: Connection refused". An HTTP error is returned, not thrown.
struct ServerProbe {
  std::string first_model;  // data[0].id of /v1/models; "" when the server does not say
  std::string problem;      // "GET http://.../v1/models: HTTP 401: ..."; "" when it answered
  int status = 0;           // the HTTP status of GET /v1/models
};
ServerProbe probe_server(const ServerUrl& url, const std::string& api_key, double timeout_s);

}  // namespace parafuse

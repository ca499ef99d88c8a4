// `parafuse bench serve` (launcher/bench_serve.h): the SSE parser under every split of a stream,
// what a stream chunk says, one request's timings from a stream with made-up clocks, the
// statistics against numpy's definitions, gamma arrivals, --url errors, and the client and the
// real binary against a small fake OpenAI server in this process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "launcher/bench_serve.h"
#include "tests/unit/cli_runner.h"
#include "tests/unit/error_of.h"

using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace parafuse {
namespace {

// ---------------------------------------------------------------------------------------------
// SSE parser

// A completions stream as the server contract writes it: token chunks, a closing chunk, usage,
// [DONE].
std::string completion_stream(const std::string& newline) {
  const std::vector<std::string> events = {
      R"({"choices":[{"index":0,"text":"Hel","finish_reason":null}]})",
      R"({"choices":[{"index":0,"text":"lo","finish_reason":null}]})",
      R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})",
      R"({"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}})",
      "[DONE]"};
  std::string s;
  for (const std::string& e : events) s += "data: " + e + newline + newline;
  return s;
}

std::vector<SseEvent> feed_in_pieces(const std::string& stream, const std::vector<size_t>& cuts,
                                     bool* done = nullptr) {
  SseParser parser;
  std::vector<SseEvent> events;
  size_t from = 0;
  for (size_t cut : cuts) {
    for (SseEvent& e : parser.feed(std::string_view(stream).substr(from, cut - from)))
      events.push_back(std::move(e));
    from = cut;
  }
  for (SseEvent& e : parser.feed(std::string_view(stream).substr(from)))
    events.push_back(std::move(e));
  if (done) *done = parser.done();
  return events;
}

TEST(SseParser, EveryLineEndingAndEverySplitGivesTheSameEvents) {
  const std::vector<SseEvent> expected = feed_in_pieces(completion_stream("\n"), {});
  ASSERT_EQ(expected.size(), 4u);  // [DONE] is not an event
  EXPECT_EQ(expected[0].data, R"({"choices":[{"index":0,"text":"Hel","finish_reason":null}]})");
  EXPECT_EQ(expected[0].type, "");
  for (const std::string newline : {"\n", "\r\n", "\r"}) {
    const std::string stream = completion_stream(newline);
    SCOPED_TRACE(testing::PrintToString(newline));
    bool done = false;
    // Whole, byte by byte, and cut in two at every position (CRLF split included).
    EXPECT_EQ(feed_in_pieces(stream, {}, &done), expected);
    EXPECT_TRUE(done);
    std::vector<size_t> every_byte(stream.size());
    std::iota(every_byte.begin(), every_byte.end(), size_t(0));
    EXPECT_EQ(feed_in_pieces(stream, every_byte, &done), expected);
    EXPECT_TRUE(done);
    for (size_t cut = 0; cut <= stream.size(); ++cut) {
      ASSERT_EQ(feed_in_pieces(stream, {cut}, &done), expected) << "cut at " << cut;
      ASSERT_TRUE(done);
    }
  }
}

TEST(SseParser, EventsEndOnlyAtABlankLine) {
  SseParser parser;
  EXPECT_TRUE(parser.feed("data: {\"a\":1}\n").empty());  // no blank line yet
  EXPECT_THAT(parser.feed("\n"), ElementsAre(SseEvent{"", "{\"a\":1}"}));
  // Across an event boundary: the end of one and the start of the next in one piece.
  EXPECT_TRUE(parser.feed("data: x").empty());
  EXPECT_THAT(parser.feed("\n\ndata: y\n"), ElementsAre(SseEvent{"", "x"}));
  EXPECT_THAT(parser.feed("\n"), ElementsAre(SseEvent{"", "y"}));
  EXPECT_FALSE(parser.done());
}

TEST(SseParser, FieldsCommentsAndDone) {
  const std::string stream =
      "\xEF\xBB\xBF: a comment, then a multi-line event\n"
      "event: error\n"
      "data: line one\n"
      "data:line two\n"
      "id: 7\n"
      "\n"
      "event: nothing\n"  // no data: dropped
      "\n"
      "data\n"  // a field name alone: empty data
      "\n"
      "data: [DONE]\n\n"
      "data: after done\n\n";
  bool done = false;
  EXPECT_THAT(feed_in_pieces(stream, {}, &done),
              ElementsAre(SseEvent{"error", "line one\nline two"}, SseEvent{"", ""}));
  EXPECT_TRUE(done);
  // An event cut off by the end of the stream is not an event.
  EXPECT_TRUE(feed_in_pieces("data: partial\n", {}).empty());
}

TEST(SseParser, AnEndlessLineIsAnErrorNotAllMemory) {
  SseParser parser;
  const std::string piece(1 << 20, 'x');
  const std::string message = error_of([&] {
    for (size_t fed = 0; fed <= SseParser::kMaxEventBytes; fed += piece.size()) parser.feed(piece);
  });
  EXPECT_EQ(message, "server-sent event larger than 16 MiB");
}

// ---------------------------------------------------------------------------------------------
// Stream chunks and one request's timings

TEST(StreamChunk, WhatCarriesAToken) {
  const auto completion = [](const std::string& data) {
    return read_stream_chunk(data, ApiKind::kCompletions);
  };
  const auto chat = [](const std::string& data) { return read_stream_chunk(data, ApiKind::kChat); };
  EXPECT_TRUE(completion(R"({"choices":[{"text":"a","finish_reason":null}]})").carries_token);
  // A token that ends inside a UTF-8 character has empty text: still a token.
  EXPECT_TRUE(completion(R"({"choices":[{"text":"","finish_reason":null}]})").carries_token);
  EXPECT_TRUE(completion(R"({"choices":[{"text":"z","finish_reason":"length"}]})").carries_token);
  EXPECT_FALSE(completion(R"({"choices":[{"text":"","finish_reason":"length"}]})").carries_token);
  const StreamChunk usage =
      completion(R"({"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":9}})");
  EXPECT_FALSE(usage.carries_token);
  EXPECT_EQ(usage.completion_tokens, 9);
  EXPECT_EQ(usage.prompt_tokens, 4);
  EXPECT_FALSE(chat(R"({"choices":[{"delta":{"role":"assistant"}}]})").carries_token);
  EXPECT_FALSE(chat(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})").carries_token);
  EXPECT_TRUE(
      chat(R"({"choices":[{"delta":{"content":"hi"},"finish_reason":null}]})").carries_token);
  EXPECT_FALSE(chat(R"({"choices":[{"delta":{},"finish_reason":"stop"}]})").carries_token);
  // A completions chunk read as chat (or the reverse) carries nothing.
  EXPECT_FALSE(chat(R"({"choices":[{"text":"a"}]})").carries_token);

  EXPECT_EQ(completion(R"({"error":{"message":"KV cache full","type":"server_error"}})").error,
            "KV cache full");
  EXPECT_EQ(completion("not json").error, "malformed stream chunk: 'not json'");
  EXPECT_EQ(completion("[1,2]").error, "malformed stream chunk: '[1,2]'");
}

TEST(StreamRecorder, TimesFirstTokenGapsAndEnd) {
  StreamRecorder recorder(ApiKind::kCompletions, /*start_s=*/10.0, /*prompt_tokens_sent=*/32);
  recorder.on_bytes("data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n", 10.5);
  recorder.on_bytes("data: {\"choices\":[{\"text\":\"b\",\"finish_reason\":null}]}\n\nda", 10.7);
  recorder.on_bytes("ta: {\"choices\":[{\"text\":\"c\",\"finish_reason\":null}]}\n\n", 11.0);
  recorder.on_bytes("data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n", 11.1);
  recorder.on_bytes(
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":33,\"completion_tokens\":3}}\n\n", 11.2);
  EXPECT_FALSE(recorder.finished());
  recorder.on_bytes("data: [DONE]\n\n", 11.25);
  EXPECT_TRUE(recorder.finished());
  const RequestRecord r = recorder.finish(/*now_s=*/12.0);  // end of the HTTP message, later
  EXPECT_TRUE(r.success) << r.error;
  EXPECT_DOUBLE_EQ(r.start_s, 10.0);
  EXPECT_DOUBLE_EQ(r.ttft_s, 0.5);
  ASSERT_EQ(r.itl_s.size(), 2u);
  EXPECT_NEAR(r.itl_s[0], 0.2, 1e-12);
  EXPECT_NEAR(r.itl_s[1], 0.3, 1e-12);
  EXPECT_DOUBLE_EQ(r.e2el_s, 1.25);  // at [DONE]
  EXPECT_EQ(r.output_tokens, 3);
  EXPECT_EQ(r.prompt_tokens, 33);  // the server's count wins
}

TEST(StreamRecorder, CountsTokenChunksWithoutUsage) {
  StreamRecorder recorder(ApiKind::kChat, 0.0, 0);
  recorder.on_bytes("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n", 0.1);
  for (int i = 0; i < 4; ++i)
    recorder.on_bytes("data: {\"choices\":[{\"delta\":{\"content\":\"w\"}}]}\n\n", 0.2 + i);
  recorder.on_bytes("data: [DONE]\n\n", 5.0);
  const RequestRecord r = recorder.finish(5.0);
  EXPECT_TRUE(r.success) << r.error;
  EXPECT_EQ(r.output_tokens, 4);
  EXPECT_DOUBLE_EQ(r.ttft_s, 0.2);  // the role chunk is not a token
  EXPECT_EQ(r.itl_s.size(), 3u);
}

TEST(StreamRecorder, FailuresSayWhy) {
  {
    StreamRecorder recorder(ApiKind::kCompletions, 0.0, 8);
    recorder.on_bytes("data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n", 0.1);
    recorder.on_bytes("data: {\"error\":{\"message\":\"engine stopped\"}}\n\n", 0.2);
    EXPECT_TRUE(recorder.finished());
    const RequestRecord r = recorder.finish(0.3);
    EXPECT_FALSE(r.success);
    EXPECT_EQ(r.error, "engine stopped");
  }
  {
    StreamRecorder recorder(ApiKind::kCompletions, 0.0, 8);
    recorder.on_bytes("event: error\ndata: overloaded\n\n", 0.1);
    EXPECT_EQ(recorder.finish(0.2).error, "stream error: overloaded");
  }
  {
    StreamRecorder recorder(ApiKind::kCompletions, 0.0, 8);
    recorder.on_bytes("event: error\ndata: {\"error\":{\"message\":\"out of memory\"}}\n\n", 0.1);
    EXPECT_EQ(recorder.finish(0.2).error, "out of memory");
  }
  {
    StreamRecorder recorder(ApiKind::kCompletions, 0.0, 8);
    recorder.on_bytes("data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\n", 0.1);
    const RequestRecord r = recorder.finish(0.2);
    EXPECT_FALSE(r.success);
    EXPECT_EQ(r.error, "the stream ended before 'data: [DONE]'");
  }
  {
    StreamRecorder recorder(ApiKind::kCompletions, 0.0, 8);
    recorder.on_bytes("data: [DONE]\n\n", 0.1);
    EXPECT_EQ(recorder.finish(0.2).error, "the stream carried no tokens");
  }
}

TEST(HttpErrorText, ReadsTheJsonMessage) {
  EXPECT_EQ(http_error_text(401, R"({"error":{"message":"invalid API key","type":"auth"}})"),
            "HTTP 401: invalid API key");
  EXPECT_EQ(http_error_text(404, R"({"detail":"Not Found"})"), "HTTP 404: Not Found");
  EXPECT_EQ(http_error_text(502, "  Bad Gateway\n"), "HTTP 502: Bad Gateway");
  EXPECT_EQ(http_error_text(503, ""), "HTTP 503");
}

// ---------------------------------------------------------------------------------------------
// Statistics

TEST(Statistics, PercentilesMeanAndStdAsNumpy) {
  // numpy: np.percentile([4,1,3,2], [50,90,99]) = [2.5, 3.7, 3.97]
  const std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);
  EXPECT_NEAR(percentile(v, 90), 3.7, 1e-12);
  EXPECT_NEAR(percentile(v, 99), 3.97, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 4);
  // np.std([2,4,4,4,5,5,7,9]) = 2.0 (over N), mean 5, median 4.5
  const LatencySummary s = summarize({2, 4, 4, 4, 5, 5, 7, 9});
  EXPECT_DOUBLE_EQ(s.mean, 5);
  EXPECT_DOUBLE_EQ(s.std, 2);
  EXPECT_DOUBLE_EQ(s.median, 4.5);
  EXPECT_NEAR(s.p90, 7.6, 1e-12);   // np.percentile(..., 90)
  EXPECT_NEAR(s.p99, 8.86, 1e-12);  // np.percentile(..., 99)
  const LatencySummary one = summarize({0.25});
  EXPECT_EQ(one.mean, 0.25);
  EXPECT_EQ(one.std, 0);
  EXPECT_EQ(one.p99, 0.25);
  const LatencySummary none = summarize({});
  EXPECT_EQ(none.mean, 0);
  EXPECT_EQ(none.p99, 0);
}

RequestRecord completed_request(double ttft, double e2el, int64_t output_tokens) {
  RequestRecord r;
  r.success = true;
  r.ttft_s = ttft;
  r.e2el_s = e2el;
  r.output_tokens = output_tokens;
  r.prompt_tokens = 10;
  for (int64_t i = 1; i < output_tokens; ++i)
    r.itl_s.push_back((e2el - ttft) / double(output_tokens - 1));
  return r;
}

TEST(Statistics, TimePerOutputTokenExcludesTheFirst) {
  EXPECT_DOUBLE_EQ(time_per_output_token(completed_request(0.1, 1.0, 10)).value(), 0.1);
  EXPECT_DOUBLE_EQ(time_per_output_token(completed_request(0.2, 0.4, 2)).value(), 0.2);
  EXPECT_FALSE(time_per_output_token(completed_request(0.2, 0.2, 1)).has_value());
  EXPECT_FALSE(time_per_output_token(completed_request(0.2, 0.2, 0)).has_value());
}

TEST(Statistics, RunMetricsCountCompletedRequestsOnly) {
  RequestRecord refused;
  refused.error = "HTTP 503: draining";
  RequestRecord refused_again = refused;
  RequestRecord other;
  other.error = "cannot connect";
  const std::vector<RequestRecord> records = {completed_request(0.1, 1.0, 10), refused,
                                              completed_request(0.3, 0.3, 1), refused_again, other};
  const ServeRunMetrics m = compute_serve_metrics(records, /*duration_s=*/2.0);
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 3);
  EXPECT_EQ(m.total_input_tokens, 20);
  EXPECT_EQ(m.total_output_tokens, 11);
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 5.5);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 15.5);
  EXPECT_DOUBLE_EQ(m.ttft.mean, 0.2);
  EXPECT_DOUBLE_EQ(m.tpot.mean, 0.1);  // the one-token request has no TPOT
  EXPECT_EQ(m.itl.mean, summarize(records[0].itl_s).mean);
  EXPECT_DOUBLE_EQ(m.e2el.mean, 0.65);
  EXPECT_THAT(m.errors, ElementsAre("HTTP 503: draining", "cannot connect"));

  ServeRunSpec spec;
  spec.concurrency = std::nullopt;
  spec.request_rate = std::numeric_limits<double>::infinity();
  spec.label = "x";
  const nlohmann::json j = serve_run_json(spec, m);
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_TRUE(j["concurrency"].is_null());
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["failed"], 3);
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 200.0);
  EXPECT_DOUBLE_EQ(j["mean_tpot_ms"].get<double>(), 100.0);
  for (const char* stat : {"mean", "median", "std", "p90", "p99"})
    for (const char* metric : {"ttft", "tpot", "itl", "e2el"})
      EXPECT_TRUE(j.contains(fmt::format("{}_{}_ms", stat, metric))) << stat << metric;
  for (const char* key :
       {"duration", "request_throughput", "output_throughput", "total_token_throughput",
        "total_input_tokens", "total_output_tokens", "burstiness", "num_prompts", "input_len",
        "output_len", "label", "url", "errors"})
    EXPECT_TRUE(j.contains(key)) << key;
}

// ---------------------------------------------------------------------------------------------
// Arrivals and prompts

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}
double variance_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / double(v.size());
}

TEST(Arrivals, GammaGapsHaveMeanOneOverRateAndBurstinessSetsTheSpread) {
  constexpr int kDraws = 200000;
  constexpr double kRate = 4.0;
  const std::vector<double> poisson = gamma_intervals(kDraws, kRate, 1.0, 7);
  EXPECT_NEAR(mean_of(poisson), 1 / kRate, 0.01 / kRate);
  // Gamma(k, 1/(rate k)): variance 1 / (k rate^2); k = 1 is exponential.
  EXPECT_NEAR(variance_of(poisson), 1 / (kRate * kRate), 0.03 / (kRate * kRate));
  const std::vector<double> regular = gamma_intervals(kDraws, kRate, 4.0, 7);
  const std::vector<double> bursty = gamma_intervals(kDraws, kRate, 0.25, 7);
  EXPECT_NEAR(mean_of(regular), 1 / kRate, 0.01 / kRate);
  EXPECT_NEAR(mean_of(bursty), 1 / kRate, 0.02 / kRate);
  EXPECT_NEAR(variance_of(regular), 1 / (4.0 * kRate * kRate), 0.03 / (4.0 * kRate * kRate));
  EXPECT_NEAR(variance_of(bursty), 4 / (kRate * kRate), 0.1 * 4 / (kRate * kRate));

  EXPECT_EQ(gamma_intervals(100, kRate, 1.0, 7), gamma_intervals(100, kRate, 1.0, 7));
  EXPECT_NE(gamma_intervals(100, kRate, 1.0, 7), gamma_intervals(100, kRate, 1.0, 8));
  const std::vector<double> at_once =
      gamma_intervals(5, std::numeric_limits<double>::infinity(), 1.0, 7);
  EXPECT_EQ(at_once, std::vector<double>(5, 0.0));
}

TEST(Arrivals, TimesStartAtZeroAndAddTheGaps) {
  const std::vector<double> gaps = gamma_intervals(6, 2.0, 1.0, 3);
  const std::vector<double> times = arrival_times(6, 2.0, 1.0, 3);
  ASSERT_EQ(times.size(), 6u);
  EXPECT_EQ(times[0], 0);
  for (size_t i = 1; i < times.size(); ++i) EXPECT_DOUBLE_EQ(times[i], times[i - 1] + gaps[i - 1]);
}

TEST(Prompts, RandomIdsAreOrdinaryTokensAndSeeded) {
  const std::vector<int32_t> ids = random_prompt_ids(5000, 1);
  ASSERT_EQ(ids.size(), 5000u);
  EXPECT_GE(*std::min_element(ids.begin(), ids.end()), 100);
  EXPECT_LT(*std::max_element(ids.begin(), ids.end()), 10000);
  EXPECT_EQ(random_prompt_ids(64, 1), random_prompt_ids(64, 1));
  EXPECT_NE(random_prompt_ids(64, 1), random_prompt_ids(64, 2));
  const std::string words = random_prompt_words(12, 1);
  EXPECT_EQ(std::count(words.begin(), words.end(), ' '), 11);
}

TEST(Prompts, RequestBodiesAskForExactlyOutputLenGreedyStreamedTokens) {
  const nlohmann::json completion = nlohmann::json::parse(
      request_body(ApiKind::kCompletions, "m", {101, 102}, "", /*output_len=*/16));
  EXPECT_EQ(completion["model"], "m");
  EXPECT_EQ(completion["prompt"], nlohmann::json({101, 102}));
  EXPECT_EQ(completion["max_tokens"], 16);
  EXPECT_EQ(completion["ignore_eos"], true);
  EXPECT_EQ(completion["temperature"], 0);
  EXPECT_EQ(completion["stream"], true);
  EXPECT_EQ(completion["stream_options"]["include_usage"], true);
  const nlohmann::json chat =
      nlohmann::json::parse(request_body(ApiKind::kChat, "m", {}, "the old river", 8));
  EXPECT_EQ(chat["messages"],
            nlohmann::json::parse(R"([{"role":"user","content":"the old river"}])"));
  EXPECT_EQ(chat["max_completion_tokens"], 8);
  EXPECT_FALSE(chat.contains("prompt"));
  EXPECT_EQ(api_kind_of("/v1/chat/completions"), ApiKind::kChat);
  EXPECT_EQ(api_kind_of("/v1/completions"), ApiKind::kCompletions);
}

// ---------------------------------------------------------------------------------------------
// --url

TEST(ServerUrl, ParsesHostPortAndPath) {
  ServerUrl u = parse_server_url("http://127.0.0.1:8000");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 8000);
  EXPECT_EQ(u.base_path, "");
  EXPECT_EQ(u.text(), "http://127.0.0.1:8000");
  u = parse_server_url("http://localhost/proxy/");
  EXPECT_EQ(u.port, 80);
  EXPECT_EQ(u.base_path, "/proxy");
  EXPECT_EQ(u.text(), "http://localhost:80/proxy");
  u = parse_server_url("http://[::1]:9000");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.text(), "http://[::1]:9000");
}

TEST(ServerUrl, MistakesSayTheForm) {
  const std::string form = "must be an http URL (http://HOST[:PORT][/PATH]), got ";
  const auto problem = [](const std::string& text) {
    return error_of([&] { parse_server_url(text); });
  };
  EXPECT_EQ(problem("127.0.0.1:8000"), form + "'127.0.0.1:8000'");
  EXPECT_EQ(problem("ftp://host"), form + "'ftp://host'");
  EXPECT_EQ(problem("https://host"),
            form + "'https://host' (https is not supported: plain TCP only)");
  EXPECT_EQ(problem("http://:8000"), form + "'http://:8000' (no host)");
  EXPECT_EQ(problem("http://"), form + "'http://' (no host)");
  EXPECT_EQ(problem("http://host:"), form + "'http://host:' (no port after ':')");
  EXPECT_EQ(problem("http://host:0"), form + "'http://host:0' (the port must be from 1 to 65535)");
  EXPECT_EQ(problem("http://host:65536"),
            form + "'http://host:65536' (the port must be from 1 to 65535)");
  EXPECT_EQ(problem("http://host:80x"),
            form + "'http://host:80x' (the port must be from 1 to 65535)");
  EXPECT_EQ(problem("http://host/a?b=1"), form + "'http://host/a?b=1'");
  EXPECT_EQ(problem("http://[::1"), form + "'http://[::1'");
}

// ---------------------------------------------------------------------------------------------
// Against a fake server

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// A small OpenAI-compatible server on 127.0.0.1 (port picked by the system): GET /v1/models,
// and POST streams of `tokens` token chunks `gap` apart (each event written in two pieces, cut
// inside the JSON), then a closing chunk, usage and [DONE], chunked, keep-alive. It records what
// it was sent and the most requests it had in flight at once. One thread per connection.
class FakeOpenAiServer {
 public:
  struct Behaviour {
    int tokens = 3;
    std::chrono::milliseconds gap{5};
    std::string api_key;  // when set, POSTs without "Bearer KEY" get a 401
  };

  explicit FakeOpenAiServer(Behaviour behaviour)
      : behaviour_(std::move(behaviour)), acceptor_(io_, {net::ip::make_address("127.0.0.1"), 0}) {
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeOpenAiServer() {
    stopping_ = true;
    tcp::socket wake(io_);  // unblocks accept()
    beast::error_code ignored;
    wake.connect({net::ip::make_address("127.0.0.1"), port_}, ignored);
    accept_thread_.join();
    for (std::thread& t : connection_threads_) t.join();
  }

  std::string url() const { return fmt::format("http://127.0.0.1:{}", port_); }
  std::vector<nlohmann::json> bodies() {
    std::lock_guard lock(mutex_);
    return bodies_;
  }
  int max_in_flight() const { return max_in_flight_; }
  int connections() const { return connections_; }

 private:
  void accept_loop() {
    for (;;) {
      tcp::socket socket(io_);
      beast::error_code ec;
      acceptor_.accept(socket, ec);
      if (stopping_ || ec) return;
      ++connections_;
      connection_threads_.emplace_back(
          [this, s = std::move(socket)]() mutable { serve_connection(std::move(s)); });
    }
  }

  void write(tcp::socket& socket, std::string_view bytes) {
    beast::error_code ignored;
    net::write(socket, net::buffer(bytes.data(), bytes.size()), ignored);
  }
  void write_chunk(tcp::socket& socket, std::string_view bytes) {
    write(socket, fmt::format("{:x}\r\n{}\r\n", bytes.size(), bytes));
  }

  void serve_connection(tcp::socket socket) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> request;
      beast::error_code ec;
      http::read(socket, buffer, request, ec);
      if (ec) return;
      if (!behaviour_.api_key.empty() &&
          request[http::field::authorization] != "Bearer " + behaviour_.api_key) {
        const std::string body = R"({"error":{"message":"invalid API key","code":401}})";
        write(socket, fmt::format("HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                                  "application/json\r\nContent-Length: {}\r\n\r\n{}",
                                  body.size(), body));
        continue;
      }
      if (request.method() == http::verb::get) {
        const std::string body = R"({"object":"list","data":[{"id":"fake-model"}]})";
        write(socket, fmt::format("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  "Content-Length: {}\r\n\r\n{}",
                                  body.size(), body));
        continue;
      }
      {
        std::lock_guard lock(mutex_);
        bodies_.push_back(nlohmann::json::parse(request.body(), nullptr, false));
      }
      const int now_in_flight = ++in_flight_;
      for (int seen = max_in_flight_; now_in_flight > seen;)
        if (max_in_flight_.compare_exchange_weak(seen, now_in_flight)) break;
      write(socket,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
            "chunked\r\n\r\n");
      const auto event = [&](const std::string& data) {
        const std::string text = "data: " + data + "\n\n";
        write_chunk(socket, text.substr(0, text.size() / 2));
        write_chunk(socket, text.substr(text.size() / 2));
      };
      for (int t = 0; t < behaviour_.tokens; ++t) {
        std::this_thread::sleep_for(behaviour_.gap);
        event(
            R"({"object":"text_completion","choices":[{"index":0,"text":"tok","finish_reason":null}]})");
      }
      event(
          R"({"object":"text_completion","choices":[{"index":0,"text":"","finish_reason":"length"}]})");
      event(fmt::format(R"({{"choices":[],"usage":{{"prompt_tokens":{},"completion_tokens":{}}}}})",
                        request.body().size() > 0 ? 7 : 0, behaviour_.tokens));
      event("[DONE]");
      --in_flight_;
      write(socket, "0\r\n\r\n");
    }
  }

  Behaviour behaviour_;
  net::io_context io_;
  tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::vector<std::thread> connection_threads_;  // touched by the accept thread only
  std::mutex mutex_;
  std::vector<nlohmann::json> bodies_;
  std::atomic<int> in_flight_{0}, max_in_flight_{0}, connections_{0};
};

FakeOpenAiServer::Behaviour streaming(int tokens, int gap_ms) {
  FakeOpenAiServer::Behaviour b;
  b.tokens = tokens;
  b.gap = std::chrono::milliseconds(gap_ms);
  return b;
}

FakeOpenAiServer::Behaviour requiring_key(const std::string& key) {
  FakeOpenAiServer::Behaviour b;
  b.api_key = key;
  return b;
}

LoadPlan plan_for(const FakeOpenAiServer& server) {
  LoadPlan plan;
  plan.url = parse_server_url(server.url());
  plan.model = "fake-model";
  plan.num_prompts = 6;
  plan.input_len = 12;
  plan.output_len = 3;
  plan.request_rate = std::numeric_limits<double>::infinity();
  plan.timeout_s = 30;
  return plan;
}

TEST(LoadGenerator, ClosedLoopKeepsConcurrencyConnectionsAndRecordsEveryRequest) {
  FakeOpenAiServer server(streaming(3, 20));
  LoadPlan plan = plan_for(server);
  plan.max_in_flight = 2;
  size_t progress_calls = 0;
  const LoadResult result = run_load(plan, [&](size_t done) { progress_calls = done; });
  EXPECT_EQ(progress_calls, 6u);
  ASSERT_EQ(result.records.size(), 6u);
  for (const RequestRecord& r : result.records) {
    EXPECT_TRUE(r.success) << r.error;
    EXPECT_EQ(r.output_tokens, 3);
    EXPECT_EQ(r.prompt_tokens, 7);  // usage.prompt_tokens wins over the 12 ids sent
    EXPECT_EQ(r.itl_s.size(), 2u);
    EXPECT_GE(r.ttft_s, 0.020);  // the server waits one gap before the first token
    EXPECT_GE(r.e2el_s, 0.060);
  }
  EXPECT_GE(result.duration_s, 3 * 0.060);  // 6 requests, 2 at a time, 3 gaps each
  EXPECT_EQ(server.max_in_flight(), 2);
  EXPECT_EQ(server.connections(), 2);  // keep-alive: one connection per worker
  const std::vector<nlohmann::json> bodies = server.bodies();
  ASSERT_EQ(bodies.size(), 6u);
  for (const nlohmann::json& body : bodies) {
    ASSERT_TRUE(body.is_object());
    EXPECT_EQ(body["model"], "fake-model");
    EXPECT_EQ(body["prompt"].size(), 12u);
    EXPECT_EQ(body["max_tokens"], 3);
    EXPECT_EQ(body["stream"], true);
  }
  EXPECT_NE(bodies[0]["prompt"], bodies[1]["prompt"]);  // a prompt per request
}

TEST(LoadGenerator, OpenLoopFollowsTheRateAndTheCap) {
  FakeOpenAiServer server(streaming(2, 30));
  LoadPlan plan = plan_for(server);
  plan.num_prompts = 8;
  plan.request_rate = 1000;  // arrivals within a few ms: the cap decides
  plan.max_in_flight = 3;
  const LoadResult capped = run_load(plan);
  for (const RequestRecord& r : capped.records) EXPECT_TRUE(r.success) << r.error;
  EXPECT_LE(server.max_in_flight(), 3);

  FakeOpenAiServer slow_arrivals(streaming(1, 1));
  plan = plan_for(slow_arrivals);
  plan.num_prompts = 5;
  plan.request_rate = 20;  // a request every 50 ms on average
  plan.burstiness = 1000;  // nearly regular
  const LoadResult paced = run_load(plan);
  EXPECT_GE(paced.duration_s, 4 * 0.050 * 0.8);
  std::vector<double> starts;
  for (const RequestRecord& r : paced.records) starts.push_back(r.start_s);
  EXPECT_TRUE(std::is_sorted(starts.begin(), starts.end()));
}

TEST(LoadGenerator, HttpErrorsAndRefusedConnectionsAreRecordedOrReportedInOneLine) {
  FakeOpenAiServer server(requiring_key("secret"));
  LoadPlan plan = plan_for(server);
  plan.max_in_flight = 1;
  plan.num_prompts = 2;
  LoadResult result = run_load(plan);
  for (const RequestRecord& r : result.records) {
    EXPECT_FALSE(r.success);
    EXPECT_EQ(r.error, "HTTP 401: invalid API key");
  }
  plan.api_key = "secret";
  result = run_load(plan);
  for (const RequestRecord& r : result.records) EXPECT_TRUE(r.success) << r.error;

  EXPECT_EQ(probe_server(plan.url, "secret", 5).first_model, "fake-model");
  const ServerProbe refused = probe_server(plan.url, "wrong", 5);
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.problem,
            fmt::format("GET {}/v1/models: HTTP 401: invalid API key", server.url()));

  // A port nobody listens on.
  uint16_t closed_port = 0;
  {
    net::io_context io;
    tcp::acceptor probe(io, {net::ip::make_address("127.0.0.1"), 0});
    closed_port = probe.local_endpoint().port();
  }
  const ServerUrl nowhere = parse_server_url(fmt::format("http://127.0.0.1:{}", closed_port));
  EXPECT_EQ(error_of([&] { probe_server(nowhere, "", 5); }),
            fmt::format("cannot connect to http://127.0.0.1:{}: Connection refused", closed_port));
  plan.url = nowhere;
  result = run_load(plan);
  for (const RequestRecord& r : result.records) {
    EXPECT_FALSE(r.success);
    EXPECT_THAT(r.error, HasSubstr("Connection refused"));
  }
}

// ---------------------------------------------------------------------------------------------
// The real binary

TEST(BenchServeCli, HelpListsTheSubcommandAndItsFlags) {
  const CliResult bench = run_cli("bench --help");
  EXPECT_EQ(bench.exit_code, 0);
  EXPECT_THAT(bench.out, HasSubstr("serve"));
  EXPECT_THAT(bench.out, HasSubstr("--batch"));  // the sweep's own flags are still there
  const CliResult serve = run_cli("bench serve --help");
  EXPECT_EQ(serve.exit_code, 0);
  for (const char* flag :
       {"--url", "--model", "--endpoint", "--concurrency", "--request-rate", "--burstiness",
        "--num-prompts", "--input-len", "--output-len", "--seed", "--api-key", "--json", "--label"})
    EXPECT_THAT(serve.out, HasSubstr(flag)) << flag;
}

TEST(BenchServeCli, MistakesAreOneLineAndExitCode2) {
  const auto expect_usage_error = [](const std::string& args, const std::string& line) {
    SCOPED_TRACE(args);
    const CliResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.err, "parafuse: error: " + line + " (parafuse bench --help)\n");
    EXPECT_EQ(r.out, "");
  };
  expect_usage_error("bench serve --url localhost:8000",
                     "--url must be an http URL (http://HOST[:PORT][/PATH]), got "
                     "'localhost:8000'");
  expect_usage_error("bench serve --concurrency 1,0", "--concurrency must be at least 1, got '0'");
  expect_usage_error("bench serve --request-rate 2,0",
                     "--request-rate must be a number greater than 0 or 'inf', got '0'");
  expect_usage_error("bench serve --burstiness 0", "--burstiness must be greater than 0, got '0'");
  expect_usage_error("bench serve --endpoint v1/completions",
                     "--endpoint must be a path starting with '/', got 'v1/completions'");
}

TEST(BenchServeCli, AServerThatIsNotThereIsOneLineAndExitCode1) {
  uint16_t closed_port = 0;
  {
    net::io_context io;
    tcp::acceptor probe(io, {net::ip::make_address("127.0.0.1"), 0});
    closed_port = probe.local_endpoint().port();
  }
  const CliResult r = run_cli(fmt::format("bench serve --url http://127.0.0.1:{}", closed_port));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, fmt::format("parafuse: error: cannot connect to http://127.0.0.1:{}: "
                               "Connection refused\n",
                               closed_port));
}

TEST(BenchServeCli, SweepPrintsARowPerRunAndWritesVllmKeys) {
  FakeOpenAiServer server(streaming(4, 2));
  const std::string json =
      (std::filesystem::temp_directory_path() / fmt::format("pf_bench_serve_{}.json", getpid()))
          .string();
  const CliResult r =
      run_cli(fmt::format("bench serve --url {} --concurrency 1,3 --num-prompts 6 --input-len 8 "
                          "--output-len 4 --json {} --label smoke -q",
                          server.url(), json));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("model fake-model"));
  EXPECT_THAT(r.out, HasSubstr("TTFT ms"));
  const nlohmann::json j = nlohmann::json::parse(slurp(json));
  std::filesystem::remove(json);
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["concurrency"], 1);
  EXPECT_EQ(j["runs"][1]["concurrency"], 3);
  for (const nlohmann::json& run : j["runs"]) {
    EXPECT_EQ(run["completed"], 6);
    EXPECT_EQ(run["failed"], 0);
    EXPECT_EQ(run["total_output_tokens"], 24);
    EXPECT_EQ(run["request_rate"], "inf");
    EXPECT_EQ(run["label"], "smoke");
    EXPECT_GT(run["mean_ttft_ms"].get<double>(), 0);
    EXPECT_GT(run["mean_tpot_ms"].get<double>(), 0);
    EXPECT_GT(run["p99_itl_ms"].get<double>(), 0);
  }
  // Open loop at two rates, capped at 2 in flight: one run per rate.
  const CliResult open = run_cli(
      fmt::format("bench serve --url {} --model fake-model --request-rate 50,inf --concurrency 2 "
                  "--num-prompts 4 --input-len 8 --output-len 2 --json {} -q",
                  server.url(), json));
  ASSERT_EQ(open.exit_code, 0) << open.err;
  const nlohmann::json o = nlohmann::json::parse(slurp(json));
  std::filesystem::remove(json);
  ASSERT_EQ(o["runs"].size(), 2u);
  EXPECT_EQ(o["runs"][0]["request_rate"], 50.0);
  EXPECT_EQ(o["runs"][1]["request_rate"], "inf");
  EXPECT_EQ(o["runs"][0]["concurrency"], 2);
}

TEST(BenchServeCli, EveryRequestRefusedIsExitCode1WithTheServersWords) {
  FakeOpenAiServer server(requiring_key("secret"));
  const std::string load = "--concurrency 1 --num-prompts 2 --input-len 4 --output-len 2 -q";
  // Without --model, the check before the runs asks /v1/models, which wants the key.
  CliResult r = run_cli(fmt::format("bench serve --url {} {}", server.url(), load));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, fmt::format("parafuse: error: GET {}/v1/models: HTTP 401: invalid API key; "
                               "pass the server's --api-key\n",
                               server.url()));
  // With --model, the requests go out and every one is refused.
  r = run_cli(fmt::format("bench serve --url {} --model fake-model {}", server.url(), load));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("failed: HTTP 401: invalid API key"));
  EXPECT_EQ(r.err,
            "parafuse: error: no request completed (concurrency 1, rate inf): HTTP 401: invalid "
            "API key\n");
  r = run_cli(fmt::format("bench serve --url {} --api-key secret {}", server.url(), load));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace parafuse

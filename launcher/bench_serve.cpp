// The load generator behind `parafuse bench serve` (see bench_serve.h).
#include "launcher/bench_serve.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>  // tcp_stream (timeouts), flat_buffer
#include <boost/beast/http.hpp>

#include "kernels/core/error.h"
#include "runtime/config/value_rules.h"  // parse_int

namespace parafuse {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr const char* kUrlForm = "an http URL (http://HOST[:PORT][/PATH])";

// At most `limit` characters of a server's text, for an error line.
std::string clipped(std::string_view text, size_t limit = 200) {
  std::string s(text.substr(0, limit));
  if (text.size() > limit) s += "...";
  return s;
}

// splitmix64: independent-looking seeds for request i of a run from one --seed.
uint64_t mixed_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// URL and endpoint

std::string ServerUrl::text() const {
  const std::string shown_host = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return fmt::format("http://{}:{}{}", shown_host, port, base_path);
}

ServerUrl parse_server_url(const std::string& text) {
  const auto fail = [&text](std::string_view why) {
    PF_THROW("must be {}, got '{}'{}", kUrlForm, clipped(text, 60), why);
  };
  constexpr std::string_view kScheme = "http://";
  if (text.rfind("https://", 0) == 0) fail(" (https is not supported: plain TCP only)");
  if (text.rfind(kScheme, 0) != 0) fail("");
  std::string_view rest = std::string_view(text).substr(kScheme.size());
  if (rest.find_first_of("?# \t") != std::string_view::npos) fail("");
  const size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (authority.find('@') != std::string_view::npos) fail(" (no user:password@ here)");

  ServerUrl url;
  url.base_path = std::string(path);
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:8000
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) fail("");
    url.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') fail("");
      port_text = after.substr(1);
      if (port_text.empty()) fail(" (no port after ':')");
    }
  } else {
    const size_t colon = authority.find(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) fail(" (no port after ':')");
    }
  }
  if (url.host.empty()) fail(" (no host)");
  if (!port_text.empty()) {
    const auto port = parse_int(port_text);
    if (!port || !kPort.accepts(*port) || port_text.front() == '+')
      fail(fmt::format(" (the port must be {})", kPort.describe()));
    url.port = uint16_t(*port);
  }
  return url;
}

ApiKind api_kind_of(std::string_view endpoint) {
  constexpr std::string_view kChatSuffix = "/chat/completions";
  const bool chat = endpoint.size() >= kChatSuffix.size() &&
                    endpoint.substr(endpoint.size() - kChatSuffix.size()) == kChatSuffix;
  return chat ? ApiKind::kChat : ApiKind::kCompletions;
}

// ---------------------------------------------------------------------------------------------
// The stream

std::vector<SseEvent> SseParser::feed(std::string_view bytes) {
  std::vector<SseEvent> out;
  for (const char c : bytes) {
    if (done_) break;
    if (line_ended_by_cr_) {
      line_ended_by_cr_ = false;
      if (c == '\n') continue;  // the LF of a CRLF split across pieces
    }
    if (c == '\r' || c == '\n') {
      end_line(out);
      line_ended_by_cr_ = c == '\r';
      continue;
    }
    line_ += c;
    PF_CHECK(line_.size() + pending_.data.size() <= kMaxEventBytes,
             "server-sent event larger than {} MiB", kMaxEventBytes >> 20);
  }
  return out;
}

void SseParser::end_line(std::vector<SseEvent>& out) {
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (at_stream_start_ && std::string_view(line_).substr(0, kBom.size()) == kBom)
    line_.erase(0, kBom.size());
  at_stream_start_ = false;
  if (line_.empty()) {  // a blank line ends the event
    if (pending_has_data_) {
      if (pending_.data == "[DONE]")
        done_ = true;
      else
        out.push_back(std::move(pending_));
    }
    pending_ = {};
    pending_has_data_ = false;
    return;
  }
  if (line_.front() != ':') {  // ':' starts a comment
    const size_t colon = line_.find(':');
    const std::string_view field = std::string_view(line_).substr(0, colon);
    std::string_view value;
    if (colon != std::string::npos) {
      value = std::string_view(line_).substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      if (pending_has_data_) pending_.data += '\n';
      pending_.data += value;
      pending_has_data_ = true;
    } else if (field == "event") {
      pending_.type = std::string(value);
    }  // "id" and "retry" do not matter to a benchmark
  }
  line_.clear();
}

namespace {

// The message of an OpenAI-style error value: {"message": ...} or a plain string.
std::optional<std::string> error_message_in(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  for (const char* key : {"error", "message", "detail"}) {
    const auto it = j.find(key);
    if (it == j.end()) continue;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object()) {
      if (auto inner = error_message_in(*it)) return inner;
      return it->dump();
    }
  }
  return std::nullopt;
}

std::optional<int64_t> integer_at(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

}  // namespace

StreamChunk read_stream_chunk(std::string_view data, ApiKind kind) {
  StreamChunk chunk;
  const nlohmann::json j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    chunk.error = fmt::format("malformed stream chunk: '{}'", clipped(data, 80));
    return chunk;
  }
  if (j.contains("error")) {
    chunk.error = error_message_in(j).value_or("stream error");
    return chunk;
  }
  if (const auto usage = j.find("usage"); usage != j.end() && usage->is_object()) {
    chunk.completion_tokens = integer_at(*usage, "completion_tokens");
    chunk.prompt_tokens = integer_at(*usage, "prompt_tokens");
  }
  const auto choices = j.find("choices");
  if (choices == j.end() || !choices->is_array() || choices->empty() ||
      !choices->front().is_object())
    return chunk;
  const nlohmann::json& choice = choices->front();
  const auto finish = choice.find("finish_reason");
  const bool closes = finish != choice.end() && !finish->is_null();
  const nlohmann::json* holder = &choice;
  const char* text_key = "text";
  bool opens = false;
  if (kind == ApiKind::kChat) {
    const auto delta = choice.find("delta");
    if (delta == choice.end() || !delta->is_object()) return chunk;
    holder = &*delta;
    text_key = "content";
    opens = delta->contains("role");
  }
  const auto text = holder->find(text_key);
  if (text == holder->end() || !text->is_string()) return chunk;
  chunk.carries_token = !text->get_ref<const std::string&>().empty() || (!closes && !opens);
  return chunk;
}

StreamRecorder::StreamRecorder(ApiKind kind, double start_s, int64_t prompt_tokens_sent)
    : kind_(kind) {
  record_.start_s = start_s;
  record_.prompt_tokens = prompt_tokens_sent;
}

void StreamRecorder::on_bytes(std::string_view bytes, double now_s) {
  if (finished()) return;
  std::vector<SseEvent> events;
  try {
    events = parser_.feed(bytes);
  } catch (const Error& e) {
    record_.error = e.what();
    return;
  }
  for (const SseEvent& event : events) {
    if (event.type == "error") {  // its data: an OpenAI error object, or just words
      const nlohmann::json j = nlohmann::json::parse(event.data, nullptr, false);
      record_.error = (j.is_discarded() ? std::nullopt : error_message_in(j))
                          .value_or(fmt::format("stream error: {}", clipped(event.data)));
      return;
    }
    const StreamChunk chunk = read_stream_chunk(event.data, kind_);
    if (chunk.error) {
      record_.error = *chunk.error;
      return;
    }
    if (chunk.prompt_tokens) record_.prompt_tokens = *chunk.prompt_tokens;
    if (chunk.completion_tokens) usage_completion_tokens_ = chunk.completion_tokens;
    if (!chunk.carries_token) continue;
    if (token_chunks_ == 0)
      record_.ttft_s = now_s - record_.start_s;
    else
      record_.itl_s.push_back(now_s - last_token_s_);
    last_token_s_ = now_s;
    ++token_chunks_;
  }
  if (parser_.done() && !done_s_) done_s_ = now_s;
}

RequestRecord StreamRecorder::finish(double now_s) {
  RequestRecord r = record_;
  if (r.error.empty() && !parser_.done()) r.error = "the stream ended before 'data: [DONE]'";
  if (r.error.empty() && token_chunks_ == 0) r.error = "the stream carried no tokens";
  r.success = r.error.empty();
  r.e2el_s = done_s_.value_or(now_s) - r.start_s;
  r.output_tokens = usage_completion_tokens_.value_or(token_chunks_);
  return r;
}

std::string http_error_text(int status, std::string_view body) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string message;
  if (!j.is_discarded()) message = error_message_in(j).value_or("");
  if (message.empty()) {
    const size_t first = body.find_first_not_of(" \t\r\n");
    const size_t last = body.find_last_not_of(" \t\r\n");
    if (first != std::string_view::npos) message = clipped(body.substr(first, last - first + 1));
  }
  return message.empty() ? fmt::format("HTTP {}", status)
                         : fmt::format("HTTP {}: {}", status, message);
}

// ---------------------------------------------------------------------------------------------
// Statistics

std::optional<double> time_per_output_token(const RequestRecord& record) {
  if (record.output_tokens <= 1) return std::nullopt;
  return (record.e2el_s - record.ttft_s) / double(record.output_tokens - 1);
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * double(values.size() - 1);
  const size_t below = size_t(std::floor(rank));
  const size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (values[above] - values[below]) * (rank - double(below));
}

LatencySummary summarize(const std::vector<double>& values) {
  LatencySummary s;
  if (values.empty()) return s;
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / double(values.size());
  double squares = 0;
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(squares / double(values.size()));
  s.median = percentile(values, 50);
  s.p90 = percentile(values, 90);
  s.p99 = percentile(values, 99);
  return s;
}

ServeRunMetrics compute_serve_metrics(const std::vector<RequestRecord>& records,
                                      double duration_s) {
  constexpr size_t kErrorsKept = 5;
  ServeRunMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  for (const RequestRecord& r : records) {
    if (!r.success) {
      ++m.failed;
      if (m.errors.size() < kErrorsKept &&
          std::find(m.errors.begin(), m.errors.end(), r.error) == m.errors.end())
        m.errors.push_back(r.error);
      continue;
    }
    ++m.completed;
    m.total_input_tokens += r.prompt_tokens;
    m.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2el.push_back(r.e2el_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    if (const auto t = time_per_output_token(r)) tpot.push_back(*t);
  }
  if (duration_s > 0) {
    m.request_throughput = double(m.completed) / duration_s;
    m.output_throughput = double(m.total_output_tokens) / duration_s;
    m.total_token_throughput = double(m.total_input_tokens + m.total_output_tokens) / duration_s;
  }
  m.ttft = summarize(ttft);
  m.tpot = summarize(tpot);
  m.itl = summarize(itl);
  m.e2el = summarize(e2el);
  return m;
}

nlohmann::json serve_run_json(const ServeRunSpec& spec, const ServeRunMetrics& m) {
  nlohmann::json j = {
      {"label", spec.label},
      {"url", spec.url},
      {"endpoint", spec.endpoint},
      {"model", spec.model},
      {"concurrency", spec.concurrency ? nlohmann::json(*spec.concurrency) : nlohmann::json()},
      {"request_rate",
       std::isinf(spec.request_rate) ? nlohmann::json("inf") : nlohmann::json(spec.request_rate)},
      {"burstiness", spec.burstiness},
      {"num_prompts", spec.num_prompts},
      {"input_len", spec.input_len},
      {"output_len", spec.output_len},
      {"completed", m.completed},
      {"failed", m.failed},
      {"total_input_tokens", m.total_input_tokens},
      {"total_output_tokens", m.total_output_tokens},
      {"duration", m.duration_s},
      {"request_throughput", m.request_throughput},
      {"output_throughput", m.output_throughput},
      {"total_token_throughput", m.total_token_throughput},
      {"errors", m.errors},
  };
  const std::pair<const char*, const LatencySummary*> latencies[] = {
      {"ttft", &m.ttft}, {"tpot", &m.tpot}, {"itl", &m.itl}, {"e2el", &m.e2el}};
  for (const auto& [name, s] : latencies) {
    j[fmt::format("mean_{}_ms", name)] = s->mean * 1e3;
    j[fmt::format("median_{}_ms", name)] = s->median * 1e3;
    j[fmt::format("std_{}_ms", name)] = s->std * 1e3;
    j[fmt::format("p90_{}_ms", name)] = s->p90 * 1e3;
    j[fmt::format("p99_{}_ms", name)] = s->p99 * 1e3;
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// Arrivals and prompts

std::vector<double> gamma_intervals(int count, double rate, double burstiness, uint64_t seed) {
  PF_CHECK(count >= 0 && rate > 0 && burstiness > 0 && std::isfinite(burstiness),
           "gamma_intervals: count {}, rate {}, burstiness {}", count, rate, burstiness);
  std::vector<double> gaps(size_t(count), 0.0);
  if (std::isinf(rate)) return gaps;
  std::mt19937_64 rng(mixed_seed(seed, std::numeric_limits<uint64_t>::max()));
  // Gamma(k, theta) has mean k * theta: theta = 1 / (rate * k) gives mean 1 / rate.
  std::gamma_distribution<double> gamma(burstiness, 1.0 / (rate * burstiness));
  for (double& gap : gaps) gap = gamma(rng);
  return gaps;
}

std::vector<double> arrival_times(int count, double rate, double burstiness, uint64_t seed) {
  const std::vector<double> gaps = gamma_intervals(count, rate, burstiness, seed);
  std::vector<double> times(gaps.size(), 0.0);
  for (size_t i = 1; i < times.size(); ++i) times[i] = times[i - 1] + gaps[i - 1];
  return times;
}

std::vector<int32_t> random_prompt_ids(int length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(100, 9999);
  std::vector<int32_t> ids(size_t(std::max(length, 0)));
  for (int32_t& v : ids) v = id(rng);
  return ids;
}

std::string random_prompt_words(int length, uint64_t seed) {
  // Common words, each one token in the BPE vocabularies we test with.
  static constexpr const char* kWords[] = {
      "the",   "of",    "and",  "to",    "in",    "is",    "that",  "for",   "it",     "as",
      "was",   "with",  "be",   "by",    "on",    "not",   "he",    "this",  "are",    "or",
      "his",   "from",  "at",   "which", "but",   "have",  "an",    "had",   "they",   "you",
      "were",  "their", "one",  "all",   "we",    "can",   "her",   "has",   "there",  "been",
      "if",    "more",  "when", "will",  "would", "who",   "so",    "no",    "time",   "people",
      "water", "house", "day",  "world", "city",  "light", "music", "river", "green",  "small",
      "large", "old",   "new",  "good",  "first", "last",  "long",  "great", "little", "own"};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
  std::string text;
  for (int i = 0; i < length; ++i) {
    if (i > 0) text += ' ';
    text += kWords[pick(rng)];
  }
  return text;
}

std::string request_body(ApiKind kind, const std::string& model,
                         const std::vector<int32_t>& prompt_ids, const std::string& prompt_text,
                         int output_len) {
  nlohmann::json body = {{"model", model},
                         {"temperature", 0},
                         {"ignore_eos", true},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
  if (kind == ApiKind::kChat) {
    body["messages"] = nlohmann::json::array({{{"role", "user"}, {"content", prompt_text}}});
    body["max_completion_tokens"] = output_len;
  } else {
    body["prompt"] = prompt_ids;
    body["max_tokens"] = output_len;
  }
  return body.dump();
}

// ---------------------------------------------------------------------------------------------
// HTTP

namespace {

// One keep-alive HTTP/1.1 connection, used by one thread. Each call blocks; the asynchronous
// operations underneath exist only so that beast::tcp_stream's timeout applies (Beast's
// blocking calls have none). Transport failures throw parafuse::Error.
class HttpConnection {
 public:
  HttpConnection(ServerUrl url, double timeout_s)
      : url_(std::move(url)),
        timeout_(
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s))) {
  }

  bool is_open() const { return stream_.has_value() && stream_->socket().is_open(); }

  void connect() {
    tcp::resolver resolver(io_);
    beast::error_code ec;
    const auto endpoints = resolver.resolve(url_.host, std::to_string(url_.port), ec);
    PF_CHECK(!ec, "cannot connect to {}: {}", url_.text(), ec.message());
    stream_.emplace(io_);
    stream_->expires_after(timeout_);
    ec = wait([&](auto done) { stream_->async_connect(endpoints, done); });
    if (ec) {
      stream_.reset();
      PF_THROW("cannot connect to {}: {}", url_.text(), ec.message());
    }
    stream_->socket().set_option(tcp::no_delay(true), ec);
    buffer_.clear();
  }

  void close() {
    if (!stream_) return;
    beast::error_code ignored;
    stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.reset();
    buffer_.clear();
  }

  // Sends `request` and reads the response's header; returns the status code.
  int start_exchange(const http::request<http::string_body>& request) {
    stream_->expires_after(timeout_);
    beast::error_code ec = wait([&](auto done) { http::async_write(*stream_, request, done); });
    PF_CHECK(!ec, "sending the request to {}: {}", url_.text(), ec.message());
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    stream_->expires_after(timeout_);
    ec = wait([&](auto done) { http::async_read_header(*stream_, buffer_, *parser_, done); });
    PF_CHECK(!ec, "reading the response from {}: {}", url_.text(), ec.message());
    return int(parser_->get().result_int());
  }

  // The next piece of the response body as it arrives (possibly empty); false once the
  // response is complete.
  bool read_body_piece(std::string& piece) {
    piece.clear();
    if (parser_->is_done()) return false;
    auto& body = parser_->get().body();
    body.data = body_buffer_.data();
    body.size = body_buffer_.size();
    stream_->expires_after(timeout_);
    beast::error_code ec =
        wait([&](auto done) { http::async_read_some(*stream_, buffer_, *parser_, done); });
    if (ec == http::error::need_buffer || (ec == http::error::end_of_stream && parser_->is_done()))
      ec = {};
    PF_CHECK(!ec, "reading the response from {}: {}", url_.text(), ec.message());
    piece.assign(body_buffer_.data(), body_buffer_.size() - body.size);
    return true;
  }

  // After a complete response: keep the connection when the server does.
  void end_exchange() {
    if (!parser_ || !parser_->is_done() || !parser_->keep_alive()) close();
  }

 private:
  // Starts one asynchronous operation with a completion handler and runs it to completion.
  template <typename Start>
  beast::error_code wait(Start&& start) {
    beast::error_code result;
    start([&result](beast::error_code ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run();
    return result;
  }

  ServerUrl url_;
  Clock::duration timeout_;
  net::io_context io_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> body_buffer_{};
};

http::request<http::string_body> make_request(http::verb verb, const ServerUrl& url,
                                              const std::string& target, const std::string& api_key,
                                              std::string body) {
  http::request<http::string_body> request{verb, url.base_path + target, 11};
  const std::string host =
      url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  request.set(http::field::host, fmt::format("{}:{}", host, url.port));
  request.set(http::field::user_agent, "parafuse-bench-serve");
  if (!api_key.empty()) request.set(http::field::authorization, "Bearer " + api_key);
  if (verb == http::verb::post) {
    request.set(http::field::content_type, "application/json");
    request.set(http::field::accept, "text/event-stream");
  }
  request.keep_alive(true);
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

// The rest of a response body (at most `limit` bytes kept), for an error message.
std::string read_whole_body(HttpConnection& connection, size_t limit) {
  std::string body, piece;
  while (connection.read_body_piece(piece))
    if (body.size() < limit) body += piece.substr(0, limit - body.size());
  return body;
}

struct PreparedRequest {
  http::request<http::string_body> http_request;
  int64_t prompt_tokens = 0;  // what was sent; chat's count comes from usage
};

// Sends one request on `connection` (connecting when it is not open) and records it. A reused
// keep-alive connection the server has meanwhile closed fails before any answer: that request
// is sent once more on a fresh connection.
RequestRecord send_request(HttpConnection& connection, const PreparedRequest& request, ApiKind kind,
                           Clock::time_point run_start) {
  const auto now_s = [run_start] {
    return std::chrono::duration<double>(Clock::now() - run_start).count();
  };
  for (int attempt = 0;; ++attempt) {
    const bool reused = connection.is_open();
    RequestRecord failed;
    failed.start_s = now_s();
    if (!reused) {
      try {
        connection.connect();
      } catch (const Error& e) {
        failed.error = e.what();
        return failed;
      }
    }
    const double start = now_s();
    StreamRecorder recorder(kind, start, request.prompt_tokens);
    bool answered = false;
    try {
      const int status = connection.start_exchange(request.http_request);
      answered = true;
      if (status != 200) {
        failed.start_s = start;
        failed.error = http_error_text(status, read_whole_body(connection, 64 << 10));
        failed.e2el_s = now_s() - start;
        connection.end_exchange();
        return failed;
      }
      std::string piece;
      while (connection.read_body_piece(piece))
        if (!piece.empty()) recorder.on_bytes(piece, now_s());
      connection.end_exchange();
      return recorder.finish(now_s());
    } catch (const Error& e) {
      connection.close();
      if (reused && !answered && attempt == 0) continue;
      if (recorder.finished()) return recorder.finish(now_s());  // [DONE] came; the rest did not
      RequestRecord r = recorder.finish(now_s());
      r.success = false;
      r.error = e.what();
      return r;
    }
  }
}

}  // namespace

LoadResult run_load(const LoadPlan& plan, const std::function<void(size_t)>& on_complete) {
  PF_CHECK(plan.num_prompts >= 1 && plan.input_len >= 1 && plan.output_len >= 1,
           "run_load: num_prompts {}, input_len {}, output_len {}", plan.num_prompts,
           plan.input_len, plan.output_len);
  PF_CHECK(!plan.max_in_flight || *plan.max_in_flight >= 1, "run_load: max_in_flight {}",
           plan.max_in_flight.value_or(0));
  const ApiKind kind = api_kind_of(plan.endpoint);
  const size_t count = size_t(plan.num_prompts);

  // Every body is made before the clock starts; prompts depend on --seed and the index only,
  // so each run of a sweep sends the same requests.
  std::vector<PreparedRequest> requests(count);
  for (size_t i = 0; i < count; ++i) {
    const uint64_t seed = mixed_seed(plan.seed, i);
    std::vector<int32_t> ids;
    std::string words;
    if (kind == ApiKind::kChat) {
      words = random_prompt_words(plan.input_len, seed);
    } else {
      ids = random_prompt_ids(plan.input_len, seed);
      requests[i].prompt_tokens = plan.input_len;
    }
    requests[i].http_request =
        make_request(http::verb::post, plan.url, plan.endpoint, plan.api_key,
                     request_body(kind, plan.model, ids, words, plan.output_len));
  }
  const std::vector<double> arrivals =
      arrival_times(plan.num_prompts, plan.request_rate, plan.burstiness, plan.seed);

  LoadResult result;
  result.records.resize(count);
  // Workers take request indices from `queue`; the dispatcher (this thread) adds each at its
  // arrival time and starts another worker (with its own connection) when more requests wait
  // than workers are idle, up to the in-flight cap. Closed loop is the same with every arrival
  // at 0 and the cap at C: C workers, back to back.
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<size_t> queue;
  size_t idle_workers = 0, completed = 0;
  bool no_more_requests = false;
  Clock::time_point last_completion;
  const Clock::time_point run_start = Clock::now();

  const auto worker = [&] {
    HttpConnection connection(plan.url, plan.timeout_s);
    for (;;) {
      size_t index = 0;
      {
        std::unique_lock lock(mutex);
        ++idle_workers;
        ready.wait(lock, [&] { return !queue.empty() || no_more_requests; });
        --idle_workers;
        if (queue.empty()) return;
        index = queue.front();
        queue.pop_front();
      }
      RequestRecord record;
      try {
        record = send_request(connection, requests[index], kind, run_start);
      } catch (const std::exception& e) {  // not expected; a message is not a crash
        connection.close();
        record.error = e.what();
      }
      std::lock_guard lock(mutex);
      result.records[index] = std::move(record);
      last_completion = Clock::now();
      ++completed;
      if (on_complete) on_complete(completed);
    }
  };

  const size_t max_workers = plan.max_in_flight ? size_t(*plan.max_in_flight) : count;
  std::vector<std::thread> workers;
  for (size_t i = 0; i < count; ++i) {
    std::this_thread::sleep_until(run_start + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(arrivals[i])));
    bool start_worker = false;
    {
      std::lock_guard lock(mutex);
      queue.push_back(i);
      start_worker = queue.size() > idle_workers && workers.size() < max_workers;
    }
    if (start_worker) workers.emplace_back(worker);
    ready.notify_one();
  }
  {
    std::lock_guard lock(mutex);
    no_more_requests = true;
  }
  ready.notify_all();
  for (std::thread& t : workers) t.join();
  result.duration_s = std::chrono::duration<double>(last_completion - run_start).count();
  return result;
}

ServerProbe probe_server(const ServerUrl& url, const std::string& api_key, double timeout_s) {
  HttpConnection connection(url, timeout_s);
  connection.connect();  // throws "cannot connect to ...: Connection refused"
  const auto request = make_request(http::verb::get, url, "/v1/models", api_key, "");
  const int status = connection.start_exchange(request);
  const std::string body = read_whole_body(connection, 1 << 20);
  connection.close();
  ServerProbe probe;
  probe.status = status;
  if (status != 200) {
    probe.problem = fmt::format("GET {}/v1/models: {}", url.text(), http_error_text(status, body));
    return probe;
  }
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty() &&
      j["data"][0].is_object() && j["data"][0].contains("id") && j["data"][0]["id"].is_string())
    probe.first_model = j["data"][0]["id"].get<std::string>();
  return probe;
}

}  // namespace parafuse

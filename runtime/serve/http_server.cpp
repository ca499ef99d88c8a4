#include "runtime/serve/http_server.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <deque>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <utility>  // std::exchange, which Boost 1.74's asio/awaitable.hpp uses unincluded

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "runtime/serve/metrics.h"
#include "runtime/serve/openai_api.h"
#include "runtime/serve/serve_loop.h"
#include "runtime/tokenizer/tokenizer.h"

#ifndef PF_VERSION
#define PF_VERSION "unknown"
#endif

namespace parafuse {

std::string_view chat_page();  // generated from serve/chat.html (runtime/CMakeLists.txt)

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;

enum class Route { Health, Ready, Metrics, Version, Page, Models, Completions, Chat };

struct RouteInfo {
  const char* path;
  http::verb method;
  Route route;
};

constexpr RouteInfo kRoutes[] = {
    {"/health", http::verb::get, Route::Health},
    {"/ready", http::verb::get, Route::Ready},
    {"/metrics", http::verb::get, Route::Metrics},
    {"/version", http::verb::get, Route::Version},
    {"/", http::verb::get, Route::Page},
    {"/v1/models", http::verb::get, Route::Models},
    {"/v1/completions", http::verb::post, Route::Completions},
    {"/v1/chat/completions", http::verb::post, Route::Chat},
};

std::string_view text(beast::string_view v) { return {v.data(), v.size()}; }

// The answer to a request that could not be read: which status, which words.
ApiError read_error(const beast::error_code& ec, const HttpServerOptions& o) {
  if (ec == http::error::body_limit)
    return ApiError(413, fmt::format("the request body is larger than {} bytes", o.body_limit),
                    "", "body_too_large");
  if (ec == http::error::header_limit)
    return ApiError(431,
                    fmt::format("the request line and headers are larger than {} bytes",
                                o.header_limit),
                    "", "headers_too_large");
  return ApiError(400, fmt::format("malformed HTTP request: {}", ec.message()), "",
                  "bad_http_request");
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter++ ^ (uint64_t(std::time(nullptr)) << 24);
  return fmt::format("{}-{:016x}", prefix, n * 0x9e3779b97f4a7c15ull);
}

}  // namespace

struct HttpServer::Impl {
  Impl(const HttpServerOptions& o, Metrics& m, const ModelConfig& c)
      : options(o), metrics(&m), model(c) {}

  HttpServerOptions options;
  Metrics* metrics;
  ModelConfig model;
  // Set by serve(), the tokenizer first; the loop is null while the model loads.
  std::atomic<const Tokenizer*> tokenizer{nullptr};
  std::atomic<ServeLoop*> loop{nullptr};
  std::atomic<bool> stop_requested{false};
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::signal_set signals{ioc};
  std::vector<std::thread> threads;
  std::atomic<int> in_flight{0};  // generations whose final delta has not been written
  int port = 0;

  void accept();
  // SIGINT / SIGTERM / SIGUSR1: the first drains the loop, a second aborts what is left. One
  // stop often arrives twice (scancel signals the task and srun forwards the same signal;
  // mpirun forwards Ctrl-C that the terminal also sent): a signal within a second of the first
  // is that stop.
  std::chrono::steady_clock::time_point first_signal;
  void wait_for_signal() {
    signals.async_wait([this](beast::error_code e, int signal) {
      if (e) return;
      const auto now = std::chrono::steady_clock::now();
      if (!stop_requested) {
        first_signal = now;
        spdlog::info("serve: signal {}: draining (a second Ctrl-C aborts)", signal);
        stop_requested = true;
        if (ServeLoop* l = loop.load()) l->stop();
      } else if (now - first_signal < std::chrono::seconds(1)) {
        spdlog::info("serve: signal {} again within a second: the same stop, still draining",
                     signal);
      } else {
        spdlog::info("serve: signal {}: aborting the requests still running", signal);
        if (ServeLoop* l = loop.load()) l->stop();
      }
      wait_for_signal();
    });
  }
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, HttpServer::Impl& server)
      : stream_(std::move(socket)), server_(server) {}

  void start() {
    net::dispatch(stream_.get_executor(),
                  [self = shared_from_this()] { self->read_request(); });
  }

 private:
  const HttpServerOptions& options() const { return server_.options; }

  // ---- reading --------------------------------------------------------------------------
  void read_request() {
    parser_.emplace();
    parser_->header_limit(uint32_t(options().header_limit));
    parser_->body_limit(options().body_limit);
    stream_.expires_after(std::chrono::milliseconds(int64_t(options().idle_seconds * 1000)));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Connection::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      return close();
    }
    if (ec) {
      keep_alive_ = false;
      return send_error(read_error(ec, options()));
    }
    // The idle limit was for reading this request; a generation may stream for longer. (Beast's
    // deadline is absolute and taken by every later operation, so it is cleared here, before
    // any write is posted.)
    stream_.expires_never();
    http::request<http::string_body> request = parser_->release();
    keep_alive_ = request.keep_alive();
    version_ = request.version();
    handle(request);
  }

  // While a generation runs, a read stays posted: EOF or a reset means the client left.
  void watch() {
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096),
                            beast::bind_front_handler(&Connection::on_watch, shared_from_this()));
  }

  void on_watch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (!ec) {
      buffer_.commit(n);  // a pipelined request: read once this answer is out
      if (generating_) return watch();
      if (writing_ || !out_.empty()) return;  // on_write reads it once the answer is out
      return read_request();
    }
    if (ec == net::error::operation_aborted && !generating_ && !gone_) return read_request();
    gone_ = true;
    if (generating_) server_.loop.load()->cancel(request_id_);
  }

  // ---- routing ----------------------------------------------------------------------------
  void handle(http::request<http::string_body>& request) {
    std::string_view target(request.target().data(), request.target().size());
    if (const size_t q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    const RouteInfo* route = nullptr;
    for (const RouteInfo& r : kRoutes)
      if (target == r.path) route = &r;
    try {
      if (!route)
        throw ApiError(404, fmt::format("no route {}: the server has /v1/completions, "
                                        "/v1/chat/completions, /v1/models, /health, /ready, "
                                        "/metrics, /version and /",
                                        target),
                       "", "not_found");
      if (request.method() != route->method) {
        allow_ = std::string(text(http::to_string(route->method)));
        throw ApiError(405,
                       fmt::format("{} takes {}, not {}", route->path, allow_,
                                   text(request.method_string())),
                       "", "method_not_allowed");
      }
      if (std::string_view(route->path).substr(0, 4) == "/v1/") check_key(request);
      switch (route->route) {
        case Route::Health: return send(http::status::ok, "application/json", "{}");
        case Route::Ready:
          ready_loop();
          return send(http::status::ok, "application/json", R"({"status":"ready"})");
        case Route::Metrics:
          return send(http::status::ok, "text/plain; version=0.0.4; charset=utf-8",
                      server_.metrics->render());
        case Route::Version:
          return send(http::status::ok, "application/json",
                      json{{"version", PF_VERSION}}.dump());
        case Route::Page: return send(http::status::ok, "text/html; charset=utf-8",
                                      std::string(chat_page()));
        case Route::Models: return send(http::status::ok, "application/json", models_json());
        case Route::Completions: return generate(request, Endpoint::Completions);
        case Route::Chat: return generate(request, Endpoint::ChatCompletions);
      }
    } catch (const ApiError& e) {
      return send_error(e);
    } catch (const std::exception& e) {  // a bug of ours, not the client's
      spdlog::error("serve: {} {}: {}", text(request.method_string()), target, e.what());
      return send_error(ApiError(500, fmt::format("internal error: {}", e.what()), "",
                                 "internal_error", "server_error"));
    }
  }

  // The step loop when it is running, else 503 saying why.
  ServeLoop& ready_loop() const {
    ServeLoop* loop = server_.loop.load();
    if (loop && loop->stopping())
      throw ApiError(503, "the server is shutting down", "", "shutting_down");
    if (!loop || !loop->ready())
      throw ApiError(503, "the model is still loading", "", "not_ready");
    return *loop;
  }

  void check_key(const http::request<http::string_body>& request) {
    const std::string& key = options().api_key;
    if (key.empty()) return;
    const auto it = request.find(http::field::authorization);
    const std::string given =
        it == request.end() ? std::string() : std::string(it->value().data(), it->value().size());
    const std::string expected = "Bearer " + key;
    // Compared without an early exit, so the time does not say how much of the key matched.
    unsigned diff = unsigned(given.size() != expected.size());
    for (size_t i = 0; i < given.size() && i < expected.size(); ++i)
      diff |= unsigned(given[i] ^ expected[i]);
    if (it == request.end())
      throw ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "",
                     "invalid_api_key");
    if (diff) throw ApiError(401, "incorrect API key", "", "invalid_api_key");
  }

  std::string models_json() const {
    json model = {{"id", options().model_name},
                  {"object", "model"},
                  {"created", int64_t(std::time(nullptr))},
                  {"owned_by", "parafuse"},
                  {"root", options().model_name},
                  {"max_model_len", server_.model.max_position_embeddings}};
    return json{{"object", "list"}, {"data", json::array({model})}}.dump();
  }

  // ---- generation -------------------------------------------------------------------------
  void generate(http::request<http::string_body>& request, Endpoint endpoint) {
    ServeLoop& loop = ready_loop();
    ApiLimits limits;
    limits.max_json_depth = options().json_depth_limit;
    limits.vocab_size = server_.model.vocab_size;
    const GenerationRequest r = parse_generation_request(request.body(), endpoint, limits);
    if (!r.model.empty() && r.model != options().model_name)
      throw ApiError(404,
                     fmt::format("the model '{}' does not exist; this server serves '{}'", r.model,
                                 options().model_name),
                     "model", "model_not_found");
    const Tokenizer& tok = *server_.tokenizer.load();
    ServeRequest s;
    if (endpoint == Endpoint::ChatCompletions) {
      s.prompt = tok.encode(tok.apply_chat_template(r.messages, true), true);
    } else if (r.prompt) {
      s.prompt = tok.encode_with_bos(*r.prompt);
    } else {
      s.prompt = r.prompt_ids;
    }
    const int64_t n_prompt = int64_t(s.prompt.size());
    const int64_t context = server_.model.max_position_embeddings;
    const int64_t max_tokens =
        r.max_tokens ? *r.max_tokens
                     : std::min<int64_t>(options().default_max_tokens,
                                         std::max<int64_t>(context - n_prompt, 1));
    if (const std::string problem = loop.admission_problem(n_prompt, max_tokens);
        !problem.empty())
      throw ApiError(400, problem, r.max_tokens ? "max_tokens" : "prompt",
                     "context_length_exceeded");
    s.max_tokens = int(max_tokens);
    s.sampling.temperature = float(r.temperature.value_or(options().default_temperature));
    s.sampling.top_p = float(r.top_p.value_or(options().default_top_p));
    s.sampling.top_k = int(r.top_k.value_or(options().default_top_k));
    s.sampling.seed = r.seed ? *r.seed : std::random_device{}() * 0x100000001ull;
    if (!r.ignore_eos) {
      s.stop_ids = tok.eos_ids();
      for (int id : server_.model.eos_token_ids)
        if (std::find(s.stop_ids.begin(), s.stop_ids.end(), id) == s.stop_ids.end())
          s.stop_ids.push_back(id);
    }
    s.stop_ids.insert(s.stop_ids.end(), r.stop_token_ids.begin(), r.stop_token_ids.end());
    s.stop_strings = r.stop;
    s.top_logprobs = r.top_logprobs;
    auto self = shared_from_this();
    s.on_delta = [self](const ServeDelta& d) {
      net::post(self->stream_.get_executor(), [self, d] { self->on_delta(d); });
    };

    head_ = {};
    head_.endpoint = endpoint;
    head_.id = new_id(endpoint == Endpoint::Completions ? "cmpl" : "chatcmpl");
    head_.created = int64_t(std::time(nullptr));
    head_.model = options().model_name;
    head_.logprobs = r.top_logprobs >= 0;
    streaming_ = r.stream;
    include_usage_ = r.include_usage;
    text_.clear();
    tokens_.clear();
    request_id_ = loop.submit(std::move(s));  // 429 / 503 throw before anything is sent
    generating_ = true;
    ++server_.in_flight;
    if (streaming_) {
      queue(fmt::format("HTTP/1.{} 200 OK\r\nServer: parafuse\r\nContent-Type: "
                        "text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: "
                        "chunked\r\nConnection: {}\r\n\r\n",
                        version_ % 10, keep_alive_ ? "keep-alive" : "close"));
      if (endpoint == Endpoint::ChatCompletions) event(role_chunk_json(head_));
    }
    watch();
  }

  void on_delta(const ServeDelta& d) {
    if (gone_) {  // nobody to write to: wait for the final delta, then let go
      if (d.finish != FinishReason::None) end_generation();
      return;
    }
    if (streaming_) {
      if (!d.text.empty() || !d.tokens.empty()) event(chunk_json(head_, d.text, d.tokens, FinishReason::None));
      if (d.finish != FinishReason::None) {
        event(chunk_json(head_, "", {}, d.finish));
        if (include_usage_) event(usage_chunk_json(head_, d.usage));
        // Cancelled with the client still here: the drain ran out (the server is stopping).
        // The stream ends with an error event in the API's error shape, then [DONE].
        if (d.finish == FinishReason::Cancelled)
          event(error_json(ApiError(503,
                                    "the server is shutting down: the request did not finish "
                                    "within serve.drain_seconds and was cancelled",
                                    "", "shutting_down")));
        event("[DONE]");
        queue("0\r\n\r\n");  // the last chunk of the chunked body
        end_generation();
      }
      return;
    }
    text_ += d.text;
    tokens_.insert(tokens_.end(), d.tokens.begin(), d.tokens.end());
    if (d.finish == FinishReason::None) return;
    end_generation();
    if (d.finish == FinishReason::Cancelled)
      return send_error(ApiError(503, "the server is shutting down", "", "shutting_down"));
    send(http::status::ok, "application/json",
         response_json(head_, text_, tokens_, d.finish, d.usage));
  }

  void end_generation() {
    generating_ = false;
    --server_.in_flight;
    if (gone_) close();
  }

  // One server-sent event as one chunk of the chunked body.
  void event(const std::string& data) {
    const std::string payload = "data: " + data + "\n\n";
    queue(fmt::format("{:x}\r\n{}\r\n", payload.size(), payload));
  }

  // ---- writing ----------------------------------------------------------------------------
  void send(http::status status, const char* content_type, std::string body) {
    http::response<http::string_body> res{status, version_};
    res.set(http::field::server, "parafuse");
    res.set(http::field::content_type, content_type);
    if (!allow_.empty()) res.set(http::field::allow, allow_);
    allow_.clear();
    res.keep_alive(keep_alive_);
    res.body() = std::move(body);
    res.prepare_payload();
    std::ostringstream text;
    text << res;
    queue(text.str());
  }

  void send_error(const ApiError& e) {
    send(http::status(e.status), "application/json", error_json(e));
  }

  void queue(std::string bytes) {
    out_.push_back(std::move(bytes));
    if (!writing_) write_next();
  }

  void write_next() {
    writing_ = true;
    net::async_write(stream_, net::buffer(out_.front()),
                     beast::bind_front_handler(&Connection::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    out_.pop_front();
    if (ec) {
      out_.clear();
      gone_ = true;
      if (generating_) server_.loop.load()->cancel(request_id_);
      return close();
    }
    if (!out_.empty()) return write_next();
    if (generating_ || gone_) return;  // more to come, or the watcher ends it
    if (!keep_alive_) return linger();
    if (watching_) {
      stream_.socket().cancel();  // the watcher then reads the next request
      return;
    }
    read_request();
  }

  // Ends a connection after its last answer without losing that answer: a close with unread
  // input (the rest of an oversized header) would reset the connection before the client read
  // the error. So: send FIN, read and drop what still comes for a moment, then close.
  void linger() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(2));
    linger_more();
  }
  void linger_more() {
    stream_.async_read_some(buffer_.prepare(64 << 10),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->linger_more();
                            });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  HttpServer::Impl& server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool keep_alive_ = true;
  unsigned version_ = 11;
  std::string allow_;  // the Allow header of a 405
  // The generation in flight on this connection.
  bool generating_ = false, watching_ = false, gone_ = false, streaming_ = false;
  bool include_usage_ = false;
  int64_t request_id_ = -1;
  ResponseHead head_;
  std::string text_;
  std::vector<OutputToken> tokens_;
};

}  // namespace

void HttpServer::Impl::accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) std::make_shared<Connection>(std::move(socket), *this)->start();
    accept();
  });
}

HttpServer::HttpServer(const HttpServerOptions& options, Metrics& metrics,
                       const ModelConfig& model)
    : impl_(std::make_unique<Impl>(options, metrics, model)) {
  Impl& s = *impl_;
  beast::error_code ec;
  const auto address = net::ip::make_address(s.options.host, ec);
  PF_CHECK(!ec, "--host '{}' is not an IP address ({}); use 127.0.0.1 or 0.0.0.0",
           s.options.host, ec.message());
  const tcp::endpoint endpoint(address, uint16_t(s.options.port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  PF_CHECK(!ec, "cannot listen on {}:{}: {}", s.options.host, s.options.port, ec.message());
  s.port = s.acceptor.local_endpoint().port();
  s.signals.add(SIGINT);
  s.signals.add(SIGTERM);
  // Open MPI's mpirun ends the job on SIGTERM itself but forwards SIGUSR1 to every rank:
  // `kill -USR1 <mpirun>` drains a server started by mpirun.
  s.signals.add(SIGUSR1);
  s.wait_for_signal();
  s.accept();
  for (int i = 0; i < std::max(1, s.options.threads); ++i)
    s.threads.emplace_back([&s] { s.ioc.run(); });
}

HttpServer::~HttpServer() { stop(0); }

void HttpServer::serve(ServeLoop& loop, const Tokenizer& tokenizer) {
  impl_->tokenizer = &tokenizer;
  impl_->loop = &loop;
  if (impl_->stop_requested) loop.stop();  // Ctrl-C while the model loaded
}

int HttpServer::port() const { return impl_->port; }

std::string HttpServer::url() const {
  return fmt::format("http://{}:{}", impl_->options.host, impl_->port);
}

void HttpServer::stop(double grace_seconds) {
  Impl& s = *impl_;
  if (s.threads.empty()) return;
  net::post(s.ioc, [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.signals.cancel(ignored);
  });
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(grace_seconds * 1000));
  while (s.in_flight > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // last writes
  s.ioc.stop();
  for (std::thread& t : s.threads) t.join();
  s.threads.clear();
}

}  // namespace parafuse

// The HTTP side of `parafuse serve`, on world rank 0: Boost.Beast HTTP/1.1 with keep-alive over
// Asio, a few threads, each connection on its own strand.
//
// A request is read with bounded headers and body (431 / 413), routed, checked (auth, JSON,
// fields: openai_api.h), tokenized here and handed to the ServeLoop; the loop's deltas come back
// on the loop thread and are posted to the connection's strand, which writes them as one JSON
// answer or as server-sent events. While a generation is in flight the connection keeps a read
// posted: when the client goes away (EOF, reset) the request is cancelled, so its pages are
// freed within one step, streaming or not. Nothing a client sends can stop /health answering:
// parsing errors end that connection only, and the step loop never waits on a socket.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/model/model_config.h"

namespace parafuse {

class ServeLoop;
class Tokenizer;
class Metrics;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;              // 0: any free port (see HttpServer::port())
  std::string api_key;          // empty: no auth
  std::string model_name;       // what /v1/models lists and requests may name
  size_t body_limit = 4 << 20;  // bytes; larger bodies get 413
  size_t header_limit = 16 << 10;  // bytes of request line + headers; more gets 431
  int json_depth_limit = 64;
  int threads = 2;
  double idle_seconds = 60;  // a connection with no request in flight closes after this
  // Defaults for fields a request leaves out (the run config's sampling section).
  int default_max_tokens = 128;
  float default_temperature = 0;
  float default_top_p = 1;
  int default_top_k = 0;
};

class HttpServer {
 public:
  // Binds, listens and starts answering at once (so a taken port is an error during setup,
  // and /health answers while the model loads); throws parafuse::Error naming the address
  // when it cannot. Until serve() the model-facing endpoints answer 503 "still loading".
  // `metrics` outlives the server. SIGINT and SIGTERM stop the ServeLoop (once attached).
  HttpServer(const HttpServerOptions& options, Metrics& metrics, const ModelConfig& model);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Attaches the step loop and the tokenizer requests are encoded with (both outlive the
  // server): generation requests go to the loop from now on.
  void serve(ServeLoop& loop, const Tokenizer& tokenizer);
  int port() const;
  std::string url() const;  // http://host:port
  // Lets in-flight answers finish writing (at most `grace_seconds`), then closes everything.
  void stop(double grace_seconds = 2.0);

  struct Impl;  // the Asio state, in the .cpp; its connections reach it

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace parafuse

// Fuzz target: the hand-written text/event-stream parser of `parafuse bench serve`
// (launcher/bench_serve.h) on arbitrary bytes, and what reads its events.
//
// The first byte picks a piece size; the stream is then fed whole and in pieces of that size.
// A server's stream may be cut anywhere by TCP, so both must give the same events and the same
// done(); a difference is a bug and aborts. Every event's data also goes through
// read_stream_chunk (both API kinds) and the whole stream through StreamRecorder, whose record
// must be sane (no negative times, e2el not before TTFT); the same bytes are read as an HTTP
// error body and as a --url. parafuse::Error (an oversized event, a bad URL) is a message, not
// a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/core/error.h"
#include "launcher/bench_serve.h"

namespace {

std::vector<parafuse::SseEvent> parse(std::string_view stream, size_t piece, bool& done) {
  parafuse::SseParser parser;
  std::vector<parafuse::SseEvent> events;
  for (size_t at = 0; at < stream.size(); at += piece)
    for (parafuse::SseEvent& e : parser.feed(stream.substr(at, piece)))
      events.push_back(std::move(e));
  done = parser.done();
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = size_t(data[0] % 16) + 1;
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    bool done_whole = false, done_pieces = false;
    const auto whole = parse(stream, stream.size() + 1, done_whole);
    const auto pieces = parse(stream, piece, done_pieces);
    if (whole != pieces || done_whole != done_pieces) std::abort();
    for (const parafuse::SseEvent& e : whole) {
      parafuse::read_stream_chunk(e.data, parafuse::ApiKind::kCompletions);
      parafuse::read_stream_chunk(e.data, parafuse::ApiKind::kChat);
    }
    for (const parafuse::ApiKind kind :
         {parafuse::ApiKind::kCompletions, parafuse::ApiKind::kChat}) {
      parafuse::StreamRecorder recorder(kind, 1.0, 4);
      double now = 1.0;
      for (size_t at = 0; at < stream.size(); at += piece) {
        now += 0.001 * double(piece);
        recorder.on_bytes(stream.substr(at, piece), now);
      }
      const parafuse::RequestRecord r = recorder.finish(now + 1);
      if (r.success && (r.ttft_s < 0 || r.e2el_s < r.ttft_s)) std::abort();
      for (double gap : r.itl_s)
        if (gap < 0) std::abort();
      if (!r.success && r.error.empty()) std::abort();
    }
  } catch (const parafuse::Error&) {
    // An oversized event: a message, not a crash.
  }
  parafuse::http_error_text(400, stream);
  try {
    parafuse::parse_server_url(std::string(stream));
  } catch (const parafuse::Error&) {
  }
  return 0;
}

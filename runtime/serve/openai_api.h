// The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions in, with
// every field checked, and responses, stream chunks and errors out.
//
// Parsing goes through nlohmann-json after a bounded pre-scan (body size and nesting depth),
// so no body can exhaust the stack; every problem becomes an ApiError that the server turns
// into {"error": {"message", "type", "param", "code"}} with its HTTP status. Unknown fields are
// ignored (clients send fields we do not use), but fields whose behaviour we do not implement
// (n > 1, echo, best_of, penalties, logit_bias) are refused by name rather than ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/engine/scheduler.h"  // FinishReason, TokenLogprob
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string param = {}, std::string code = {},
           std::string type = {});
  int status;         // HTTP status
  std::string type;   // "invalid_request_error", "authentication_error", ...
  std::string param;  // the request field at fault, or empty (null)
  std::string code;   // machine-readable, or empty (null)
};

// {"error": {"message", "type", "param", "code"}}
std::string error_json(const ApiError& error);

enum class Endpoint { Completions, ChatCompletions };

struct ApiLimits {
  int max_json_depth = 64;
  int64_t vocab_size = 0;  // token ids must be below it
  int max_stop_strings = 16;
};

struct GenerationRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;                     // empty: the served model
  std::optional<std::string> prompt;     // completions: prompt text
  std::vector<int32_t> prompt_ids;       // completions: prompt as token ids
  std::vector<ChatMessage> messages;     // chat
  std::optional<int64_t> max_tokens;     // max_tokens or max_completion_tokens
  std::optional<double> temperature;
  std::optional<double> top_p;
  std::optional<int64_t> top_k;          // 0 or -1: off
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;         // stop strings (not part of the output)
  std::vector<int32_t> stop_token_ids;
  bool stream = false;
  bool include_usage = false;            // stream_options.include_usage
  bool ignore_eos = false;               // vLLM's extension: run to max_tokens
  int top_logprobs = -1;                 // -1: no logprobs
};

// Throws ApiError (400) naming the field; `body` may be anything.
GenerationRequest parse_generation_request(std::string_view body, Endpoint endpoint,
                                           const ApiLimits& limits);

// Whether the JSON text nests deeper than `max_depth` (arrays and objects), ignoring brackets
// inside strings. Linear, no recursion.
bool json_nesting_exceeds(std::string_view text, int max_depth);

// One generated token as the client sees it.
struct OutputToken {
  int32_t id = 0;
  std::string text;   // its bytes (possibly part of a UTF-8 character)
  float logprob = 0;  // where logprobs were asked
  std::vector<std::pair<std::string, float>> top;  // alternatives (text, logprob)
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// The parts every response and chunk share.
struct ResponseHead {
  Endpoint endpoint = Endpoint::Completions;
  std::string id;  // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::string model;
  bool logprobs = false;  // include logprobs fields
};

// A whole non-streamed answer.
std::string response_json(const ResponseHead& head, const std::string& text,
                          const std::vector<OutputToken>& tokens, FinishReason finish,
                          const Usage& usage);
// One stream chunk: a piece of text (tokens: what it came from), or the finish. For chat, the
// first chunk of an answer is `role_chunk_json`.
std::string chunk_json(const ResponseHead& head, const std::string& text,
                       const std::vector<OutputToken>& tokens, FinishReason finish);
std::string role_chunk_json(const ResponseHead& head);
std::string usage_chunk_json(const ResponseHead& head, const Usage& usage);

}  // namespace parafuse

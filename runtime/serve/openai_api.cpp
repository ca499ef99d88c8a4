#include "runtime/serve/openai_api.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace parafuse {
namespace {

using json = nlohmann::json;

std::string default_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

ApiError bad(const std::string& param, const std::string& message,
             const std::string& code = "invalid_value") {
  return ApiError(400, message, param, code);
}

const char* json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

ApiError wrong_type(const std::string& param, const json& v, const char* wanted) {
  return bad(param, fmt::format("'{}' must be {}, got {}", param, wanted, json_type_name(v)),
             "invalid_type");
}

// An integer field (a float with an integral value such as 16.0 is accepted, as Python does).
int64_t integer(const json& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      throw bad(param, fmt::format("'{}' must be at most {}", param, hi));
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
             std::fabs(v.get<double>()) < 9e18) {
    x = int64_t(v.get<double>());
  } else {
    throw wrong_type(param, v, "an integer");
  }
  if (x < lo || x > hi) {
    if (hi == std::numeric_limits<int64_t>::max())
      throw bad(param, fmt::format("'{}' must be at least {}, got {}", param, lo, x));
    throw bad(param, fmt::format("'{}' must be in [{}, {}], got {}", param, lo, hi, x));
  }
  return x;
}

double number(const json& v, const std::string& param) {
  if (!v.is_number()) throw wrong_type(param, v, "a number");
  return v.get<double>();
}

bool boolean(const json& v, const std::string& param) {
  if (!v.is_boolean()) throw wrong_type(param, v, "a boolean");
  return v.get<bool>();
}

int32_t token_id(const json& v, const std::string& param, const ApiLimits& limits) {
  const int64_t hi = limits.vocab_size > 0 ? limits.vocab_size - 1 : int64_t(INT32_MAX);
  return int32_t(integer(v, param, 0, hi));
}

// A message's content: a string, or a list of {"type": "text", "text": ...} parts.
std::string message_content(const json& v, const std::string& param) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) throw wrong_type(param, v, "a string or a list of text parts");
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& part = v[i];
    const std::string where = fmt::format("{}[{}]", param, i);
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string())
      throw bad(where, fmt::format("'{}' must be {{\"type\": \"text\", \"text\": \"...\"}}: only "
                                   "text content is supported",
                                   where));
    text += part["text"].get<std::string>();
  }
  return text;
}

// Fields we do not implement: refused when set to anything but their neutral value.
void refuse_unsupported(const json& body) {
  auto set = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  if (set("n") && !(body["n"].is_number_integer() && body["n"].get<int64_t>() == 1))
    throw bad("n", "'n' must be 1: parafuse returns one choice per request");
  if (set("best_of") && !(body["best_of"].is_number_integer() && body["best_of"] == 1))
    throw bad("best_of", "'best_of' must be 1: parafuse returns one choice per request");
  if (set("echo") && body["echo"] != false)
    throw bad("echo", "'echo' is not supported: the answer never repeats the prompt");
  if (set("suffix")) throw bad("suffix", "'suffix' (insertion) is not supported");
  for (const char* key : {"presence_penalty", "frequency_penalty"})
    if (set(key) && !(body[key].is_number() && body[key].get<double>() == 0.0))
      throw bad(key, fmt::format("'{}' is not supported; leave it out or set 0", key));
  if (set("logit_bias") && !(body["logit_bias"].is_object() && body["logit_bias"].empty()))
    throw bad("logit_bias", "'logit_bias' is not supported");
}

void read_prompt(const json& body, GenerationRequest& r, const ApiLimits& limits) {
  if (!body.contains("prompt") || body["prompt"].is_null())
    throw bad("prompt", "'prompt' is required", "missing_required_parameter");
  const json& p = body["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
    if (r.prompt->empty()) throw bad("prompt", "'prompt' is empty");
    return;
  }
  if (!p.is_array()) throw wrong_type("prompt", p, "a string or a list of token ids");
  if (p.empty()) throw bad("prompt", "'prompt' is empty");
  if (p.size() == 1 && p[0].is_string()) {  // ["text"]: one prompt in a list
    r.prompt = p[0].get<std::string>();
    if (r.prompt->empty()) throw bad("prompt", "'prompt' is empty");
    return;
  }
  if (p[0].is_string() || p[0].is_array())
    throw bad("prompt", "one prompt per request: 'prompt' must be a string or one list of ids");
  for (size_t i = 0; i < p.size(); ++i)
    r.prompt_ids.push_back(token_id(p[i], fmt::format("prompt[{}]", i), limits));
}

void read_messages(const json& body, GenerationRequest& r) {
  if (!body.contains("messages") || body["messages"].is_null())
    throw bad("messages", "'messages' is required", "missing_required_parameter");
  const json& m = body["messages"];
  if (!m.is_array()) throw wrong_type("messages", m, "a list of messages");
  if (m.empty()) throw bad("messages", "'messages' is empty");
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string where = fmt::format("messages[{}]", i);
    if (!m[i].is_object()) throw wrong_type(where, m[i], "an object with 'role' and 'content'");
    const json& msg = m[i];
    if (!msg.contains("role") || !msg["role"].is_string())
      throw bad(where + ".role", fmt::format("'{}.role' must be a string", where));
    std::string role = msg["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant")
      throw bad(where + ".role",
                fmt::format("'{}.role' must be system, user or assistant, got '{}'", where, role));
    if (!msg.contains("content") || msg["content"].is_null())
      throw bad(where + ".content", fmt::format("'{}.content' is required", where),
                "missing_required_parameter");
    r.messages.push_back({role, message_content(msg["content"], where + ".content")});
  }
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json finish_json(FinishReason f) {
  return f == FinishReason::None ? json(nullptr) : json(finish_reason_name(f));
}

// Text that is valid JSON: partial UTF-8 sequences (a token that ends inside a character)
// become U+FFFD rather than failing the dump.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::vector<int> utf8_bytes(const std::string& s) {
  std::vector<int> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

json completion_logprobs(const std::vector<OutputToken>& tokens, size_t text_offset) {
  json j = {{"tokens", json::array()},
            {"token_logprobs", json::array()},
            {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  for (const OutputToken& t : tokens) {
    j["tokens"].push_back(t.text);
    j["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& [text, lp] : t.top) top[text] = lp;
    j["top_logprobs"].push_back(top);
    j["text_offset"].push_back(text_offset);
    text_offset += t.text.size();
  }
  return j;
}

json chat_logprobs(const std::vector<OutputToken>& tokens) {
  json content = json::array();
  for (const OutputToken& t : tokens) {
    json top = json::array();
    for (const auto& [text, lp] : t.top)
      top.push_back({{"token", text}, {"logprob", lp}, {"bytes", utf8_bytes(text)}});
    content.push_back({{"token", t.text},
                       {"logprob", t.logprob},
                       {"bytes", utf8_bytes(t.text)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json head_json(const ResponseHead& h, bool chunk) {
  const char* object = h.endpoint == Endpoint::Completions
                           ? "text_completion"
                           : (chunk ? "chat.completion.chunk" : "chat.completion");
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

}  // namespace

ApiError::ApiError(int status_, std::string message, std::string param_, std::string code_,
                   std::string type_)
    : std::runtime_error(std::move(message)),
      status(status_),
      type(type_.empty() ? default_type(status_) : std::move(type_)),
      param(std::move(param_)),
      code(std::move(code_)) {}

std::string error_json(const ApiError& e) {
  json err = {{"message", e.what()},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return dump(json{{"error", err}});
}

bool json_nesting_exceeds(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

GenerationRequest parse_generation_request(std::string_view text, Endpoint endpoint,
                                           const ApiLimits& limits) {
  if (json_nesting_exceeds(text, limits.max_json_depth))
    throw bad("", fmt::format("the JSON body nests deeper than {} levels", limits.max_json_depth),
              "invalid_json");
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400
    // nlohmann's message names the byte; drop its "[json.exception.parse_error.101]" prefix.
    std::string what = e.what();
    if (const size_t at = what.find("] "); at != std::string::npos) what = what.substr(at + 2);
    throw bad("", "the body is not valid JSON: " + what, "invalid_json");
  }
  if (!body.is_object()) throw bad("", "the body must be a JSON object", "invalid_json");

  GenerationRequest r;
  r.endpoint = endpoint;
  auto has = [&](const char* key) { return body.contains(key) && !body[key].is_null(); };
  if (has("model")) {
    if (!body["model"].is_string()) throw wrong_type("model", body["model"], "a string");
    r.model = body["model"].get<std::string>();
  }
  refuse_unsupported(body);
  if (endpoint == Endpoint::Completions) {
    read_prompt(body, r, limits);
  } else {
    read_messages(body, r);
  }

  constexpr int64_t kMaxTokens = INT32_MAX;
  for (const char* key : {"max_tokens", "max_completion_tokens"})
    if (has(key)) r.max_tokens = integer(body[key], key, 1, kMaxTokens);
  if (has("temperature")) {
    r.temperature = number(body["temperature"], "temperature");
    if (!(*r.temperature >= 0.0 && *r.temperature <= 2.0))
      throw bad("temperature",
                fmt::format("'temperature' must be in [0, 2], got {}", *r.temperature));
  }
  if (has("top_p")) {
    r.top_p = number(body["top_p"], "top_p");
    if (!(*r.top_p > 0.0 && *r.top_p <= 1.0))
      throw bad("top_p", fmt::format("'top_p' must be in (0, 1], got {}", *r.top_p));
  }
  if (has("top_k")) {
    const int64_t k = integer(body["top_k"], "top_k", -1, INT32_MAX);
    r.top_k = k < 0 ? 0 : k;  // -1 (vLLM) and 0 both mean off
  }
  if (has("seed")) {
    r.seed = uint64_t(integer(body["seed"], "seed", std::numeric_limits<int64_t>::min(),
                              std::numeric_limits<int64_t>::max()));
  }
  if (has("stop")) {
    const json& s = body["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (int(s.size()) > limits.max_stop_strings)
        throw bad("stop", fmt::format("'stop' holds at most {} strings, got {}",
                                      limits.max_stop_strings, s.size()));
      for (size_t i = 0; i < s.size(); ++i) {
        if (!s[i].is_string()) throw wrong_type(fmt::format("stop[{}]", i), s[i], "a string");
        r.stop.push_back(s[i].get<std::string>());
      }
    } else {
      throw wrong_type("stop", s, "a string or a list of strings");
    }
    for (const std::string& stop : r.stop)
      if (stop.empty()) throw bad("stop", "'stop' strings must not be empty");
  }
  if (has("stop_token_ids")) {
    const json& s = body["stop_token_ids"];
    if (!s.is_array()) throw wrong_type("stop_token_ids", s, "a list of token ids");
    for (size_t i = 0; i < s.size(); ++i)
      r.stop_token_ids.push_back(token_id(s[i], fmt::format("stop_token_ids[{}]", i), limits));
  }
  if (has("stream")) r.stream = boolean(body["stream"], "stream");
  if (has("stream_options")) {
    const json& o = body["stream_options"];
    if (!o.is_object()) throw wrong_type("stream_options", o, "an object");
    if (!r.stream)
      throw bad("stream_options", "'stream_options' is only allowed with \"stream\": true");
    if (o.contains("include_usage") && !o["include_usage"].is_null())
      r.include_usage = boolean(o["include_usage"], "stream_options.include_usage");
  }
  if (has("ignore_eos")) r.ignore_eos = boolean(body["ignore_eos"], "ignore_eos");
  if (endpoint == Endpoint::Completions) {
    if (has("logprobs"))
      r.top_logprobs = int(integer(body["logprobs"], "logprobs", 0, kMaxTopLogprobs));
  } else {
    const bool want = has("logprobs") && boolean(body["logprobs"], "logprobs");
    if (has("top_logprobs")) {
      const int k = int(integer(body["top_logprobs"], "top_logprobs", 0, kMaxTopLogprobs));
      if (!want) throw bad("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
      r.top_logprobs = k;
    } else if (want) {
      r.top_logprobs = 0;
    }
  }
  return r;
}

std::string response_json(const ResponseHead& head, const std::string& text,
                          const std::vector<OutputToken>& tokens, FinishReason finish,
                          const Usage& usage) {
  json j = head_json(head, false);
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish)}};
  if (head.endpoint == Endpoint::Completions) {
    choice["text"] = text;
    choice["logprobs"] = head.logprobs ? completion_logprobs(tokens, 0) : json(nullptr);
  } else {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    choice["logprobs"] = head.logprobs ? chat_logprobs(tokens) : json(nullptr);
  }
  j["choices"] = json::array({choice});
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string chunk_json(const ResponseHead& head, const std::string& text,
                       const std::vector<OutputToken>& tokens, FinishReason finish) {
  json j = head_json(head, true);
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish)}};
  if (head.endpoint == Endpoint::Completions) {
    choice["text"] = text;
    choice["logprobs"] = head.logprobs ? completion_logprobs(tokens, 0) : json(nullptr);
  } else {
    choice["delta"] = text.empty() && finish != FinishReason::None ? json::object()
                                                                   : json{{"content", text}};
    choice["logprobs"] = head.logprobs ? chat_logprobs(tokens) : json(nullptr);
  }
  j["choices"] = json::array({choice});
  return dump(j);
}

std::string role_chunk_json(const ResponseHead& head) {
  json j = head_json(head, true);
  j["choices"] = json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
        {"finish_reason", nullptr}}});
  return dump(j);
}

std::string usage_chunk_json(const ResponseHead& head, const Usage& usage) {
  json j = head_json(head, true);
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return dump(j);
}

}  // namespace parafuse

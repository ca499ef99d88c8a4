// The OpenAI wire format: every bad request field gets a 400 naming it (table-driven), good
// requests read back what was sent, and responses have the shapes OpenAI clients parse.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/serve/metrics.h"
#include "runtime/serve/openai_api.h"

namespace parafuse {
namespace {

using json = nlohmann::json;

ApiLimits limits() {
  ApiLimits l;
  l.vocab_size = 1000;
  return l;
}

struct BadCase {
  const char* name;
  Endpoint endpoint;
  std::string body;
  std::string param;    // the field the error names
  std::string message;  // a piece of the message
};

class BadRequest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadRequest, Is400NamingTheField) {
  const BadCase& c = GetParam();
  try {
    parse_generation_request(c.body, c.endpoint, limits());
    FAIL() << "accepted: " << c.body;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(e.param, c.param);
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << e.what();
    const json body = json::parse(error_json(e));
    EXPECT_EQ(body["error"]["message"], e.what());
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  }
}

const Endpoint kC = Endpoint::Completions;
const Endpoint kChat = Endpoint::ChatCompletions;

INSTANTIATE_TEST_SUITE_P(
    Fields, BadRequest,
    ::testing::Values(
        BadCase{"not_json", kC, "{\"prompt\": ", "", "not valid JSON"},
        BadCase{"number_overflow", kC, R"({"prompt": [1, 2e4444]})", "", "not valid JSON"},
        BadCase{"not_an_object", kC, "[1, 2]", "", "must be a JSON object"},
        BadCase{"deep_nesting", kC, std::string(10000, '[') + std::string(10000, ']'), "",
                "nests deeper than 64"},
        BadCase{"missing_prompt", kC, R"({"model": "m"})", "prompt", "'prompt' is required"},
        BadCase{"empty_prompt", kC, R"({"prompt": ""})", "prompt", "'prompt' is empty"},
        BadCase{"empty_id_list", kC, R"({"prompt": []})", "prompt", "'prompt' is empty"},
        BadCase{"prompt_object", kC, R"({"prompt": {}})", "prompt", "must be a string or a list"},
        BadCase{"id_out_of_vocab", kC, R"({"prompt": [1, 1000]})", "prompt[1]",
                "must be in [0, 999], got 1000"},
        BadCase{"negative_id", kC, R"({"prompt": [-1]})", "prompt[0]", "got -1"},
        BadCase{"two_prompts", kC, R"({"prompt": ["a", "b"]})", "prompt", "one prompt per request"},
        BadCase{"model_number", kC, R"({"prompt": "x", "model": 3})", "model", "must be a string"},
        BadCase{"max_tokens_zero", kC, R"({"prompt": "x", "max_tokens": 0})", "max_tokens",
                "must be in [1, 2147483647], got 0"},
        BadCase{"max_tokens_negative", kC, R"({"prompt": "x", "max_tokens": -5})", "max_tokens",
                "got -5"},
        BadCase{"max_tokens_huge", kC, R"({"prompt": "x", "max_tokens": 1e30})", "max_tokens",
                "must be an integer"},
        BadCase{"max_tokens_huger", kC, R"({"prompt": "x", "max_tokens": 99999999999999999999})",
                "max_tokens", "must be an integer"},
        BadCase{"max_tokens_fraction", kC, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens",
                "must be an integer"},
        BadCase{"max_tokens_string", kC, R"({"prompt": "x", "max_tokens": "8"})", "max_tokens",
                "must be an integer, got a string"},
        BadCase{"temperature_negative", kC, R"({"prompt": "x", "temperature": -1})", "temperature",
                "must be in [0, 2], got -1"},
        BadCase{"temperature_nan_text", kC, R"({"prompt": "x", "temperature": "NaN"})",
                "temperature", "must be a number"},
        BadCase{"temperature_nan_literal", kC, R"({"prompt": "x", "temperature": NaN})", "",
                "not valid JSON"},
        BadCase{"top_p_zero", kC, R"({"prompt": "x", "top_p": 0})", "top_p",
                "must be in (0, 1], got 0"},
        BadCase{"top_p_above_one", kC, R"({"prompt": "x", "top_p": 1.5})", "top_p", "got 1.5"},
        BadCase{"top_k_negative", kC, R"({"prompt": "x", "top_k": -2})", "top_k",
                "must be in [-1, 2147483647], got -2"},
        BadCase{"top_k_huge", kC, R"({"prompt": "x", "top_k": 5000000000})", "top_k",
                "got 5000000000"},
        BadCase{"n_two", kC, R"({"prompt": "x", "n": 2})", "n", "'n' must be 1"},
        BadCase{"n_zero", kChat, R"({"messages": [{"role": "user", "content": "x"}], "n": 0})",
                "n", "'n' must be 1"},
        BadCase{"echo", kC, R"({"prompt": "x", "echo": true})", "echo", "not supported"},
        BadCase{"penalty", kC, R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty",
                "not supported"},
        BadCase{"stop_number", kC, R"({"prompt": "x", "stop": 5})", "stop",
                "must be a string or a list of strings"},
        BadCase{"stop_empty", kC, R"({"prompt": "x", "stop": [""]})", "stop", "must not be empty"},
        BadCase{"stop_ids_bad", kC, R"({"prompt": "x", "stop_token_ids": [5000]})",
                "stop_token_ids[0]", "got 5000"},
        BadCase{"stream_string", kC, R"({"prompt": "x", "stream": "yes"})", "stream",
                "must be a boolean"},
        BadCase{"stream_options_alone", kC,
                R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options",
                "only allowed with \"stream\": true"},
        BadCase{"logprobs_too_many", kC, R"({"prompt": "x", "logprobs": 21})", "logprobs",
                "must be in [0, 20]"},
        BadCase{"messages_missing", kChat, R"({"model": "m"})", "messages", "is required"},
        BadCase{"messages_empty", kChat, R"({"messages": []})", "messages", "is empty"},
        BadCase{"message_not_object", kChat, R"({"messages": ["hi"]})", "messages[0]",
                "must be an object"},
        BadCase{"bad_role", kChat, R"({"messages": [{"role": "robot", "content": "x"}]})",
                "messages[0].role", "must be system, user or assistant, got 'robot'"},
        BadCase{"no_content", kChat, R"({"messages": [{"role": "user"}]})", "messages[0].content",
                "is required"},
        BadCase{"image_content", kChat,
                R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
                "messages[0].content[0]", "only text content"},
        BadCase{"top_logprobs_without_logprobs", kChat,
                R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
                "top_logprobs", "needs \"logprobs\": true"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(OpenAiRequest, ReadsWhatWasSent) {
  const GenerationRequest r = parse_generation_request(
      R"({"model": "m", "prompt": [1, 2, 3], "max_tokens": 16.0, "temperature": 0.7,
          "top_p": 0.9, "top_k": -1, "seed": -3, "stop": ["\n\n", "END"],
          "stop_token_ids": [7], "stream": true, "stream_options": {"include_usage": true},
          "logprobs": 3, "ignore_eos": true, "user": "ignored", "n": 1})",
      Endpoint::Completions, limits());
  EXPECT_EQ(r.model, "m");
  EXPECT_FALSE(r.prompt);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(*r.max_tokens, 16);
  EXPECT_DOUBLE_EQ(*r.temperature, 0.7);
  EXPECT_EQ(*r.top_k, 0);
  EXPECT_EQ(*r.seed, uint64_t(int64_t(-3)));
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_TRUE(r.stream && r.include_usage && r.ignore_eos);
  EXPECT_EQ(r.top_logprobs, 3);

  const GenerationRequest chat = parse_generation_request(
      R"({"messages": [{"role": "developer", "content": "Be brief."},
                       {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                    {"type": "text", "text": "there"}]}],
          "max_completion_tokens": 5, "logprobs": true})",
      Endpoint::ChatCompletions, limits());
  ASSERT_EQ(chat.messages.size(), 2u);
  EXPECT_EQ(chat.messages[0].role, "system");
  EXPECT_EQ(chat.messages[1].content, "Hi there");
  EXPECT_EQ(*chat.max_tokens, 5);
  EXPECT_EQ(chat.top_logprobs, 0);
}

TEST(OpenAiRequest, NestingScanIgnoresBracketsInStrings) {
  EXPECT_FALSE(json_nesting_exceeds(R"({"prompt": "[[[[[[[[[[\"[[[["})", 3));
  EXPECT_TRUE(json_nesting_exceeds("[[[[", 3));
  EXPECT_FALSE(json_nesting_exceeds("[[[]]]", 3));
}

TEST(OpenAiResponse, ShapesClientsParse) {
  ResponseHead head{Endpoint::ChatCompletions, "chatcmpl-1", 1700000000, "m", true};
  OutputToken t{42, "Hi", -0.5f, {{"Hi", -0.5f}, {"Hello", -1.25f}}};
  const json full = json::parse(response_json(head, "Hi", {t}, FinishReason::Stop, {3, 1}));
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(full["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1]["token"], "Hello");
  EXPECT_EQ(full["usage"]["total_tokens"], 4);
  const json chunk = json::parse(chunk_json(head, "", {}, FinishReason::Length));
  EXPECT_EQ(chunk["object"], "chat.completion.chunk");
  EXPECT_TRUE(chunk["choices"][0]["delta"].empty());
  EXPECT_EQ(chunk["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json::parse(usage_chunk_json(head, {3, 1}))["choices"].size(), 0u);

  head.endpoint = Endpoint::Completions;
  // A token that ends inside a UTF-8 character still gives valid JSON.
  OutputToken partial{7, "\xe2\x82", -0.1f, {}};
  const json c = json::parse(response_json(head, "\xe2\x82", {partial}, FinishReason::Length, {1, 1}));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["logprobs"]["text_offset"][0], 0);
}

TEST(Metrics, PrometheusTextHasVllmNamesAndCumulativeBuckets) {
  Metrics m("tiny");
  m.set_queue(2, 1);
  m.set_kv_usage({0.25, 0.5});
  m.first_token(0.007);
  m.first_token(3.0);
  m.request_finished("stop", 4.0, 0.01);
  const std::string text = m.render();
  for (const char* line :
       {"parafuse:num_requests_running{model_name=\"tiny\"} 2",
        "parafuse:num_requests_waiting{model_name=\"tiny\"} 1",
        "parafuse:kv_cache_usage_perc{model_name=\"tiny\",rank=\"1\"} 0.5",
        "parafuse:request_success_total{model_name=\"tiny\",finished_reason=\"stop\"} 1",
        "parafuse:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"0.01\"} 1",
        "parafuse:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"5\"} 2",
        "parafuse:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"} 2",
        "parafuse:time_to_first_token_seconds_count{model_name=\"tiny\"} 2",
        "# TYPE parafuse:e2e_request_latency_seconds histogram",
        "parafuse:all_reduces_total{model_name=\"tiny\"} 0"})
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line;
}

}  // namespace
}  // namespace parafuse

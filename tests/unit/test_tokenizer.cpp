// Tokenizer tests: ids checked against the HF tokenizers library, round trips, special tokens,
// chat templates as exact strings, streaming decode, and malformed tokenizer files.
//
// Expected ids of the SmolLM2 cases were produced by the HF `tokenizers` library (0.23) from a
// tokenizer built out of this GGUF's vocabulary and merges with SmolLM2's pre-tokenizer
// (Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)]) and its 17
// control tokens as special added tokens; the same reference agreed with this implementation
// on 1.38M tokens of mixed text while it was written. The fixtures' ids come from
// tests/data/tokenizer/make_fixtures.py (print_expected).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

using Ids = std::vector<int32_t>;

const std::string kSmolPath = std::string(PF_MODEL_CACHE) + "/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kFixtures = std::string(PF_TEST_DATA) + "/tokenizer";

// The SmolLM2 tokenizer, loaded once; nullptr when the model has not been downloaded.
const Tokenizer* smollm() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!std::filesystem::exists(kSmolPath)) return nullptr;
    GgufFile file(kSmolPath);
    return std::make_unique<Tokenizer>(tokenizer_from_gguf(file));
  }();
  return tok.get();
}

#define REQUIRE_SMOLLM()                                                   \
  const Tokenizer* tok_ptr = smollm();                                     \
  if (tok_ptr == nullptr) {                                                \
    GTEST_SKIP() << "embedded model not downloaded: run cluster/setup.sh"; \
  }                                                                        \
  const Tokenizer& tok = *tok_ptr

TEST(TokenizerSmolLM, MatchesReferenceIds) {
  REQUIRE_SMOLLM();
  struct Case {
    std::string text;
    Ids ids;
  };
  const std::vector<Case> cases = {
      // Hello | , | Ġworld | !
      {"Hello, world!", {19556, 28, 905, 17}},
      // Digits are split one by one: The | Ġyear | Ġ | 2 | 0 | 2 | 4 | Ġhad | Ġ | 3 | 6 | 5 ...
      {"The year 2024 had 365 days.",
       {504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 37, 2009, 30}},
      // Contractions are pieces of their own: I | 'm | Ġsure | Ġthey | 'll | 've | Ġdone | Ġit
      {"I'm sure they'll've done it", {57, 5248, 2090, 502, 3060, 3543, 2294, 357}},
      // Ġ | Ġtwo | Ġspaces | ĉ | and | ĉ | t | abs | ĊĊ
      {"  two spaces\tand\ttabs\n\n", {216, 827, 5600, 197, 397, 197, 100, 7366, 1116}},
      // CJK and emoji fall apart into byte-level pieces: æĹ | ¥ | æľ¬ | ... | ĠðŁĺ | Ģ
      {"日本語 café 😀", {23274, 115, 40993, 179, 120, 248, 37366, 40303, 218}},
      {"x = [1, 22, 333]", {104, 446, 933, 33, 28, 216, 34, 34, 28, 216, 35, 35, 35, 77}},
      // Special tokens are matched before splitting: <|im_start|> | user | Ċ | Hi | <|im_end|>
      {"<|im_start|>user\nHi<|im_end|>", {1, 4093, 198, 26843, 2}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(tok.encode(c.text), c.ids) << c.text;
    EXPECT_EQ(tok.decode(c.ids), c.text);
  }
}

TEST(TokenizerSmolLM, Metadata) {
  REQUIRE_SMOLLM();
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_TRUE(tok.is_eos(2));  // <|im_end|>, the GGUF's eos
  EXPECT_TRUE(tok.is_eos(0));  // <|endoftext|>, a conventional end of generation
  EXPECT_FALSE(tok.is_eos(1));
  EXPECT_EQ(tok.eos_ids(), (Ids{2, 0}));
  EXPECT_EQ(tok.chat_format_name(), "chatml");
}

TEST(TokenizerSmolLM, RoundTripsUnicodeAndWhitespace) {
  REQUIRE_SMOLLM();
  const std::vector<std::string> texts = {
      "Emoji: 😀👍🏽 🇺🇸 👨‍👩‍👧‍👦 and text after.",
      "中文文本，日本語のテキスト、한국어 텍스트.",
      "Combining: e\xCC\x81 a\xCC\x88\xCC\x81 n\xCC\x83 (NFD forms stay as they are)",
      "   leading, \t\t mixed \n\n\n   runs \r\n of\u00a0whitespace\u3000here   ",
      "1234567890 3.14159 -42 1e10 ١٢٣ Ⅻ ½",
      "Съешь же ещё этих мягких французских булок. Ελληνικά. עברית. हिन्दी।",
      "code:\n\tif (x <= 10) { return y**2; } // comment",
      "",
      " ",
      "\n",
  };
  for (const auto& text : texts) {
    const Ids ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text);
  }
}

TEST(TokenizerSmolLM, SpecialTokensAndParseSpecial) {
  REQUIRE_SMOLLM();
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  // As plain text the markers are ordinary characters.
  const Ids plain = tok.encode(text, /*parse_special=*/false);
  EXPECT_NE(plain.front(), 1);
  EXPECT_EQ(tok.decode(plain), text);
  // Control tokens decode to their text unless skipped.
  EXPECT_EQ(tok.decode(Ids{1, 4093, 198, 26843, 2}), text);
  EXPECT_EQ(tok.decode(Ids{1, 4093, 198, 26843, 2}, /*skip_special=*/true), "user\nHi");
  // Adjacent specials and a cut-off marker.
  EXPECT_EQ(tok.encode("<|im_start|><|im_end|><|endoftext|>"), (Ids{1, 2, 0}));
  const Ids cut = tok.encode("<|im_start");
  EXPECT_NE(cut.front(), 1);
  EXPECT_EQ(tok.decode(cut), "<|im_start");
  EXPECT_EQ(tok.token_bytes(1), "<|im_start|>");
  EXPECT_EQ(tok.token_bytes(216), " ");  // "Ġ"
}

TEST(TokenizerSmolLM, ChatTemplateExact) {
  REQUIRE_SMOLLM();
  const std::vector<ChatMessage> messages = {{"user", "What is 2+2?"}};
  const std::string expected =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(tok.apply_chat_template(messages), expected);
  // The same prompt through HF's reference tokenizer.
  const Ids expected_ids = {1,    9690, 198,   2683, 359,  253,  5356, 5646,  11173, 3365,
                            3511, 308,  34519, 28,   7018, 411,  407,  19712, 8182,  2,
                            198,  1,    4093,  198,  1780, 314,  216,  34,    27,    34,
                            47,   2,    198,   1,    520,  9531, 198};
  EXPECT_EQ(tok.encode(expected), expected_ids);
  EXPECT_EQ(tok.encode_with_bos(expected), expected_ids);  // add_bos is false for SmolLM2

  const std::vector<ChatMessage> with_system = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  EXPECT_EQ(tok.apply_chat_template(with_system, /*add_generation_prompt=*/false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n");
}

TEST(TokenizerSmolLM, StreamDecoderHoldsBackSplitEmoji) {
  REQUIRE_SMOLLM();
  // " 😀" is ĠðŁĺ (" " + the first three bytes of U+1F600) followed by Ģ (its last byte).
  const Ids ids = tok.encode(" 😀 ok");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], 40303);
  EXPECT_EQ(ids[1], 218);
  StreamDecoder stream(tok);
  EXPECT_EQ(stream.push(ids[0]), " ");
  EXPECT_EQ(stream.push(ids[1]), "😀");
  std::string rest;
  for (size_t i = 2; i < ids.size(); ++i) rest += stream.push(ids[i]);
  rest += stream.flush();
  EXPECT_EQ(rest, " ok");

  // A sequence left incomplete at the end becomes U+FFFD on flush.
  StreamDecoder cut(tok);
  EXPECT_EQ(cut.push(40303), " ");
  EXPECT_EQ(cut.flush(), "\xEF\xBF\xBD");
  // Bytes that can never complete a character are replaced at once.
  StreamDecoder bad(tok);
  const Ids invalid = tok.encode(
      "\x80"
      "a");
  std::string out;
  for (int32_t id : invalid) out += bad.push(id);
  EXPECT_EQ(out,
            "\xEF\xBF\xBD"
            "a");
}

TEST(TokenizerSmolLM, InvalidUtf8DoesNotCrashAndRoundTrips) {
  REQUIRE_SMOLLM();
  // Lone continuation bytes, cut-off sequences, a surrogate, an overlong form: each byte is a
  // piece of its own and has a byte-level token in this vocabulary, so the bytes come back.
  const std::vector<std::string> texts = {
      std::string("\x80"),
      std::string("abc\xC3"),
      std::string("\xE2\x82 euro cut"),
      std::string("surrogate \xED\xA0\x80 here"),
      std::string("overlong \xE0\x80\xAF"),
      std::string("\xF0\x9F\x98 emoji cut\xF0\x9F"),
      std::string("mixed \xC3\xA9\xC3 valid then not"),
  };
  for (const auto& text : texts) {
    const Ids ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text);
  }
  // SmolLM2 has no token for 0xFF (never in UTF-8): such a byte is dropped, as HF and
  // llama.cpp drop it.
  EXPECT_EQ(tok.decode(tok.encode("a\xFF"
                                  "b")),
            "ab");
  // Every byte value, in one string: no crash, and everything but the dropped bytes returns.
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_NO_THROW(tok.decode(tok.encode(all)));
}

TEST(TokenizerSmolLM, LongInputsAndThreads) {
  REQUIRE_SMOLLM();
  const std::string spaces(1 << 18, ' ');
  EXPECT_EQ(tok.decode(tok.encode(spaces + "x")), spaces + "x");
  const std::string letters(200000, 'a');
  EXPECT_EQ(tok.decode(tok.encode(letters)), letters);

  // Encoding from several threads at once (the piece cache is shared) gives the same ids.
  std::vector<std::string> texts;
  std::vector<Ids> expected;
  for (int i = 0; i < 7; ++i) {
    texts.push_back("The quick brown fox " + std::to_string(i * 37) + " jumps. 😀 日本語 " +
                    std::string(i, 'z'));
    expected.push_back(tok.encode(texts.back()));
  }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const int k = (i + t) % 7;
        mismatches[t] += tok.encode(texts[k]) == expected[k] ? 0 : 1;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST(TokenizerSmolLM, DecodeRejectsOutOfRangeIds) {
  REQUIRE_SMOLLM();
  EXPECT_NE(error_of([&] {
              tok.decode(Ids{5, 49152});
            }).find("token id 49152 is outside"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tok.token_bytes(-1); }).find("token id -1"), std::string::npos);
}

// ---- tokenizer.json fixtures ----

TEST(TokenizerHfJson, SmolLMFixture) {
  const Tokenizer tok = Tokenizer::from_hf_json(kFixtures + "/smollm_tiny/tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), 400);
  EXPECT_EQ(tok.encode("Hello, world! It's 2024."),
            (Ids{293, 14, 276, 3, 349, 296, 223, 20, 18, 20, 22, 16}));
  EXPECT_EQ(tok.encode("<|im_start|>user\nHi<|im_end|>"), (Ids{1, 87, 85, 270, 201, 42, 75, 2}));
  EXPECT_EQ(tok.encode("I'M 12345 ok"), (Ids{43, 9, 47, 223, 19, 20, 21, 22, 23, 223, 81, 77}));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_TRUE(tok.is_eos(2));
  EXPECT_EQ(tok.chat_format_name(), "chatml");
  EXPECT_EQ(tok.apply_chat_template({{"user", "Hi"}}),
            "<|im_start|>system\nYou are a tiny test model<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // The fixture's vocabulary has all 256 bytes, so any bytes at all come back.
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(255 - b);
  EXPECT_EQ(tok.decode(tok.encode(all)), all);
}

TEST(TokenizerHfJson, Llama3Fixture) {
  const Tokenizer tok = Tokenizer::from_hf_json(kFixtures + "/llama3_tiny/tokenizer.json");
  EXPECT_EQ(tok.encode("Hello, world! It's 2024."),
            (Ids{296, 16, 279, 5, 362, 299, 225, 306, 24, 18}));
  // Numbers go in groups of three: 123 | 45.
  EXPECT_EQ(tok.encode("I'M 12345 ok"), (Ids{45, 11, 49, 225, 399, 308, 225, 83, 79}));
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_TRUE(tok.is_eos(4));  // <|eot_id|> from tokenizer_config.json
  EXPECT_TRUE(tok.is_eos(1));  // <|end_of_text|>
  EXPECT_EQ(tok.chat_format_name(), "llama3");
  const std::string prompt = tok.apply_chat_template({{"user", "  Hi\n"}});
  EXPECT_EQ(prompt,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(tok.encode(prompt).front(), 0);
  // The template carries BOS already: encode_with_bos must not add a second one.
  const Ids ids = tok.encode_with_bos(prompt);
  EXPECT_EQ(ids, tok.encode(prompt));
  EXPECT_EQ(tok.encode_with_bos("Hi").front(), 0);
  EXPECT_EQ(tok.encode_with_bos("Hi").size(), tok.encode("Hi").size() + 1);
}

// ---- malformed inputs ----

// A valid minimal tokenizer.json, to be broken one field at a time.
nlohmann::json minimal_json() {
  return nlohmann::json::parse(R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3}, "merges": ["a b"]},
    "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
  })");
}

std::string json_error(const std::string& text, const std::string& config = "") {
  return error_of([&] { Tokenizer::from_hf_json_text(text, config, "tok.json"); });
}

TEST(TokenizerHfJson, MinimalIsValid) {
  const Tokenizer tok = Tokenizer::from_hf_json_text(minimal_json().dump());
  EXPECT_EQ(tok.encode("ab<s>ba"), (Ids{2, 3, 1, 0}));
  EXPECT_EQ(tok.decode(Ids{2, 3}, true), "ab");
  EXPECT_EQ(tok.chat_format_name(), "none");
  EXPECT_NE(error_of([&] {
              tok.apply_chat_template({{"user", "Hi"}});
            }).find("the model has no chat template"),
            std::string::npos);
}

TEST(TokenizerHfJson, MalformedInputsNameTheProblem) {
  struct Case {
    std::string name;
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  using J = nlohmann::json;
  const std::vector<Case> cases = {
      {"model type", [](J& j) { j["model"]["type"] = "Unigram"; },
       "model.type is 'Unigram'; parafuse supports only byte-level 'BPE'"},
      {"no model", [](J& j) { j.erase("model"); }, "no 'model' object"},
      {"vocab type", [](J& j) { j["model"]["vocab"] = J::array(); },
       "model.vocab is not an object"},
      {"id type", [](J& j) { j["model"]["vocab"]["b"] = "one"; },
       "model.vocab['b'] is not an integer id"},
      {"negative id", [](J& j) { j["model"]["vocab"]["b"] = -5; }, "is not a valid id"},
      {"id hole", [](J& j) { j["model"]["vocab"]["b"] = 7; }, "ids must run from 0 without holes"},
      {"duplicate id", [](J& j) { j["model"]["vocab"]["b"] = 0; }, "which 'a' already has"},
      {"merges type", [](J& j) { j["model"]["merges"] = "a b"; }, "model.merges is not a list"},
      {"merge form", [](J& j) { j["model"]["merges"] = {"ab"}; },
       "merge 0 'ab' is not of the form 'left right'"},
      {"merge pair form", [](J& j) { j["model"]["merges"] = J::parse(R"([["a"]])"); },
       "model.merges[0] is neither"},
      {"merge unknown", [](J& j) { j["model"]["merges"] = {"a c"}; },
       "merge 0 'a c': 'c' is not in the vocabulary"},
      {"merge result unknown", [](J& j) { j["model"]["merges"] = {"b a"}; },
       "'ba' is not in the vocabulary"},
      {"pre-tokenizer",
       [](J& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "pre_tokenizer {\"type\":\"Whitespace\"} is not supported"},
      {"prefix space", [](J& j) { j["pre_tokenizer"]["add_prefix_space"] = true; },
       "is not supported"},
      {"normalizer",
       [](J& j) {
         j["normalizer"] = {{"type", "NFC"}};
       },
       "normalizer {\"type\":\"NFC\"} is not supported"},
      {"added token", [](J& j) { j["added_tokens"] = J::parse(R"([{"id": 4}])"); },
       "added_tokens[0] needs an 'id' and a 'content' string"},
      {"added tokens type", [](J& j) { j["added_tokens"] = 5; }, "added_tokens is not a list"},
      {"suffix", [](J& j) { j["model"]["end_of_word_suffix"] = "</w>"; },
       "model.end_of_word_suffix = \"</w>\" is not supported"},
      {"no bytes",
       [](J& j) {
         j["model"]["vocab"] = {{"\xe2\x82\xac", 0}};
         j["model"]["merges"] = J::array();
         j.erase("added_tokens");
       },
       "not a byte-level BPE vocabulary"},
  };
  for (const auto& c : cases) {
    nlohmann::json j = minimal_json();
    c.edit(j);
    const std::string message = json_error(j.dump());
    EXPECT_NE(message.find(c.message), std::string::npos) << c.name << ": got '" << message << "'";
    EXPECT_EQ(message.rfind("tok.json: ", 0), 0u) << c.name << ": " << message;
  }
  EXPECT_NE(json_error("{not json").find("parse_error"), std::string::npos);
  EXPECT_NE(json_error("[1, 2]").find("the top level is not an object"), std::string::npos);
  EXPECT_NE(json_error("").find("tok.json: "), std::string::npos);
  const std::string base = minimal_json().dump();
  EXPECT_NE(json_error(base, R"({"bos_token": "<unk>"})")
                .find("bos_token '<unk>' is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(json_error(base, R"({"eos_token": 3})").find("eos_token is neither a string"),
            std::string::npos);
  EXPECT_NE(json_error(base, R"({"add_bos_token": "yes"})").find("type_error"), std::string::npos);
  EXPECT_NE(json_error(base, "[]").find("tokenizer_config.json: the top level is not an object"),
            std::string::npos);
  EXPECT_NE(json_error(base, R"({"chat_template": 5})").find("chat_template is neither"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              Tokenizer::from_hf_json("/nonexistent/tokenizer.json");
            }).find("tokenizer file '/nonexistent/tokenizer.json' does not exist"),
            std::string::npos);
}

TEST(TokenizerData, UnknownPreTokenizerListsSupported) {
  TokenizerData data;
  data.tokens = {"a", "b"};
  data.pre = "qwen2";
  const std::string message = error_of([&] { Tokenizer tok(data); });
  EXPECT_NE(message.find("unsupported pre-tokenizer 'qwen2' (supported: smollm, llama-bpe"),
            std::string::npos)
      << message;
}

TEST(TokenizerData, ChatFormatFromVocabularyAndTemplate) {
  TokenizerData data;
  data.tokens = {"a", "b", "<|im_start|>", "<|im_end|>"};
  data.token_types = {1, 1, 3, 3};
  data.pre = "gpt2";
  {
    const Tokenizer tok(data);  // no template text: the vocabulary decides, no default system
    EXPECT_EQ(tok.chat_format_name(), "chatml");
    EXPECT_EQ(tok.apply_chat_template({{"user", "a"}}, false), "<|im_start|>user\na<|im_end|>\n");
  }
  data.chat_template = "{{ messages }} in some format we do not know";
  {
    const Tokenizer tok(data);
    EXPECT_EQ(tok.chat_format_name(), "none");
    EXPECT_NE(error_of([&] {
                tok.apply_chat_template({{"user", "a"}});
              }).find("chat template is not a format parafuse knows"),
              std::string::npos);
  }
  // A template using escaped newlines inside Jinja string literals (as JSON files spell them).
  data.chat_template =
      "{{ '<|im_start|>system\\nYou are Tiny.<|im_end|>\\n' }}{{ '<|im_start|>' + role }}";
  const Tokenizer tok(data);
  EXPECT_EQ(tok.apply_chat_template({{"user", "a"}}),
            "<|im_start|>system\nYou are Tiny.<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
            "<|im_start|>assistant\n");
}

// ---- GGUF metadata errors (a GGUF built in memory, no tensors) ----

class GgufBuilder {
 public:
  GgufBuilder& str(const std::string& key, const std::string& value) {
    this->key(key, 8);
    string(value);
    ++count_;
    return *this;
  }
  GgufBuilder& strings(const std::string& key, const std::vector<std::string>& values) {
    this->key(key, 9);
    pod<uint32_t>(8);
    pod<uint64_t>(values.size());
    for (const auto& v : values) string(v);
    ++count_;
    return *this;
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    for (int i = 0; i < 8; ++i) out.push_back(0);  // tensor count
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(count_ >> (8 * i)));
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  template <typename T>
  void pod(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) body_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void string(const std::string& s) {
    pod<uint64_t>(s.size());
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void key(const std::string& k, uint32_t type) {
    string(k);
    pod<uint32_t>(type);
  }
  std::vector<uint8_t> body_;
  uint64_t count_ = 0;
};

TEST(TokenizerGguf, RejectsOtherModelsAndBadPre) {
  auto load = [](const GgufBuilder& b) {
    const std::vector<uint8_t> bytes = b.bytes();
    const GgufFile file(bytes.data(), bytes.size(), "mem.gguf");
    return error_of([&] { tokenizer_from_gguf(file); });
  };
  EXPECT_NE(load(GgufBuilder().str("tokenizer.ggml.model", "llama"))
                .find("mem.gguf: tokenizer.ggml.model is 'llama'; parafuse supports only "
                      "byte-level BPE ('gpt2')"),
            std::string::npos);
  EXPECT_NE(load(GgufBuilder()).find("tokenizer.ggml.model is missing"), std::string::npos);
  const std::vector<std::string> tokens = {"a", "b", "ab"};
  EXPECT_NE(load(GgufBuilder()
                     .str("tokenizer.ggml.model", "gpt2")
                     .strings("tokenizer.ggml.tokens", tokens)
                     .strings("tokenizer.ggml.merges", {"a b"})
                     .str("tokenizer.ggml.pre", "tekken"))
                .find("unsupported pre-tokenizer 'tekken' (supported: smollm, llama-bpe, "
                      "llama3, llama-v3, gpt2, default)"),
            std::string::npos);
  // The same file with a known pre name loads and merges.
  const auto bytes = GgufBuilder()
                         .str("tokenizer.ggml.model", "gpt2")
                         .strings("tokenizer.ggml.tokens", tokens)
                         .strings("tokenizer.ggml.merges", {"a b"})
                         .str("tokenizer.ggml.pre", "gpt2")
                         .bytes();
  const GgufFile file(bytes.data(), bytes.size(), "mem.gguf");
  EXPECT_EQ(tokenizer_from_gguf(file).encode("abba"), (Ids{2, 1, 0}));
}

}  // namespace
}  // namespace parafuse

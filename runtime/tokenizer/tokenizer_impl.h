// Internals shared by the tokenizer's .cpp files (not part of the public interface).
//
// The tokenizer is split by concern: unicode_bytes.cpp (GPT-2 byte<->unicode table, UTF-8
// helpers), pretokenize.cpp (PCRE2 regex splitting), bpe.cpp (vocabulary, merges, encode and
// decode), chat_template.cpp (the fixed chat formats) and tokenizer_loaders.cpp (GGUF and HF
// tokenizer.json). Tokenizer::Impl is defined here so each of them can reach the state it needs.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace parafuse::tokenizer_detail {

// ---- unicode_bytes.cpp ----

// GPT-2's bytes_to_unicode(): byte b -> the UTF-8 text of the printable code point standing
// for it in byte-level token strings (printable ASCII and most of Latin-1 map to themselves,
// the rest to U+0100 onwards, e.g. ' ' -> "Ġ", '\n' -> "Ċ").
const std::array<std::string, 256>& byte_to_unicode();
// The inverse: code point -> byte, or -1 when the code point is not in the table.
int unicode_to_byte(uint32_t code_point);

// Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates, at most
// U+10FFFF) starting at s[i]; 0 when the bytes there are not one.
size_t utf8_valid_length(std::string_view s, size_t i);
// For the bytes at s[i..]: how many of them form a prefix that is still a possible start of a
// well-formed sequence (1..3 when the sequence is cut off by the end of s, which is then
// "incomplete"); 0 when s[i] cannot start one or the prefix is already invalid.
size_t utf8_incomplete_prefix(std::string_view s, size_t i);
// Replaces ill-formed bytes by U+FFFD (one per maximal ill-formed subpart, as Python's
// errors="replace" does); a cut-off sequence at the end is replaced as well.
std::string utf8_sanitize(std::string_view s);
// Decodes the code point of a well-formed sequence of `len` bytes at s[i].
uint32_t utf8_decode(std::string_view s, size_t i, size_t len);
void utf8_append(std::string& out, uint32_t code_point);

// ---- pretokenize.cpp ----

// The regex sequence of one pre-tokenizer name. Each regex splits every piece from the
// previous stage into its matches and the gaps between them (both kept, in order), which is
// what llama.cpp's unicode_regex_split and HF's Split(behavior=Isolated) do.
class PreTokenizer {
 public:
  explicit PreTokenizer(const std::string& name);  // throws Error for an unknown name
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  const std::string& name() const { return name_; }
  // Appends the pieces of `text` (views into it). Ill-formed UTF-8 never reaches PCRE2: each
  // ill-formed byte becomes a piece of its own, the well-formed runs between are split.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;

  static std::string supported_names();  // "smollm, llama-bpe, ..." for error messages
  // The Llama-3 split regex, as HF tokenizer.json files spell it (from_hf_json matches it).
  static std::string_view llama3_pattern();

 private:
  struct Regex;
  std::string name_;
  std::vector<std::unique_ptr<Regex>> stages_;
};

// ---- chat_template.cpp ----

enum class ChatFormat { kNone, kChatMl, kLlama3 };

struct ChatTemplate {
  ChatFormat format = ChatFormat::kNone;
  std::string default_system;  // ChatML: system turn added when the first message is not one
  std::string missing_reason;  // kNone: why there is no format (the Error apply() throws)
};

// Picks the format from the template text; without text, from the special tokens the
// vocabulary has.
ChatTemplate detect_chat_template(const std::string& template_text, bool vocab_has_im_start,
                                  bool vocab_has_start_header);
std::string render_chat(const ChatTemplate& chat, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);
std::string chat_format_name(ChatFormat format);

// ---- tokenizer_loaders.cpp ----

// Adds the ids of control tokens that conventionally end a turn (<|eot_id|>, <|im_end|>, ...)
// to data.extra_eos_ids, as llama.cpp does for its end-of-generation set.
void add_conventional_eos_ids(TokenizerData& data);

}  // namespace parafuse::tokenizer_detail

namespace parafuse {

struct Tokenizer::Impl {
  explicit Impl(TokenizerData data);

  TokenizerData data;
  std::unordered_map<std::string, int32_t> token_to_id;  // byte-level token string -> id
  std::vector<std::string> token_bytes;                  // id -> the raw bytes it stands for
  std::vector<bool> is_control;                          // type 3: skipped by skip_special
  std::array<int32_t, 256> byte_token{};                 // byte -> its one-char token, or -1
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_rank;
  // Special tokens (types 3 and 4) matched verbatim before pre-tokenization: by first byte,
  // longest first.
  std::array<std::vector<int32_t>, 256> special_by_first_byte;
  std::unique_ptr<tokenizer_detail::PreTokenizer> pre;
  tokenizer_detail::ChatTemplate chat;

  // Piece -> ids, shared by all threads that encode; cleared when it grows past a bound.
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void merge(std::vector<int32_t>& symbols) const;
};

}  // namespace parafuse

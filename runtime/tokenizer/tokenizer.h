// Byte-level BPE tokenizer (GPT-2 / Llama-3 / SmolLM2 family) and chat templates.
//
// Loaded from an HF `tokenizer.json`, or from TokenizerData that another reader filled (GGUF
// `tokenizer.ggml.*` metadata: runtime/model/gguf.h's tokenizer_from_gguf). Text is split by
// the model's pre-tokenizer regex (PCRE2 with Unicode properties, so \p{L} and \p{N} match as
// the HF tokenizers library does), each piece is mapped through the GPT-2 byte->unicode table
// and merged by rank. Special tokens (control / user-defined) are matched verbatim before
// splitting. Chat templates are the few fixed formats of the models we ship configs for
// (ChatML for SmolLM2, Llama-3, Nemotron), detected from the template text the file carries,
// not a Jinja interpreter.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace parafuse {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// What a tokenizer file gives us, independent of its format.
struct TokenizerData {
  std::vector<std::string> tokens;  // byte-level (GPT-2 unicode-mapped) token strings
  std::vector<std::string> merges;  // "left right", highest priority first
  // GGUF token types (1 normal, 3 control, 4 user-defined, 6 byte); may be empty.
  std::vector<int> token_types;
  std::string pre;  // pre-tokenizer name: "smollm", "llama-bpe", "gpt2", ...
  int bos_id = -1;
  int eos_id = -1;
  std::vector<int> extra_eos_ids;  // e.g. <|eot_id|> and <|end_of_text|> for Llama-3
  bool add_bos = false;
  // A piece that is itself a token is emitted whole, before any merge (HF `ignore_merges`;
  // llama.cpp does this for the Llama-3 pre-tokenizer).
  bool ignore_merges = false;
  std::string chat_template;  // the raw template text, used only to pick the format
};

class Tokenizer {
 public:
  explicit Tokenizer(TokenizerData data);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // From data another format's reader filled; the end-of-turn tokens of common chat formats
  // join the eos ids. Errors are prefixed with `origin` (the file it came from).
  static Tokenizer from_data(TokenizerData data, const std::string& origin);
  // `tokenizer_json` is the path of tokenizer.json; tokenizer_config.json beside it is read
  // when present (chat template, bos/eos, add_bos_token).
  static Tokenizer from_hf_json(const std::string& tokenizer_json);
  // The same from the files' text (an empty config means none); `origin` names the input in
  // errors. Used by tests and the fuzz target.
  static Tokenizer from_hf_json_text(std::string_view tokenizer_json,
                                     std::string_view tokenizer_config_json = {},
                                     const std::string& origin = "tokenizer.json");

  // Text -> ids. No BOS is added here (see add_bos()). Special-token text such as
  // "<|im_start|>" becomes its id when parse_special is true.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true) const;
  // encode() with BOS in front when add_bos() and the text did not already start with the BOS
  // token (a Llama-3 chat prompt carries "<|begin_of_text|>" itself).
  std::vector<int32_t> encode_with_bos(std::string_view text) const;
  // Ids -> text. Control tokens decode to their text unless skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes one token stands for (possibly a partial UTF-8 sequence).
  std::string token_bytes(int32_t id) const;

  int vocab_size() const;
  // A control token (<|im_end|>, <|eot_id|>): decode(skip_special) and served text leave it out.
  bool is_control(int32_t id) const;
  int bos_id() const;
  bool add_bos() const;
  bool is_eos(int32_t id) const;
  std::vector<int32_t> eos_ids() const;

  // The model's chat format applied to messages; add_generation_prompt opens the assistant turn.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages,
                                  bool add_generation_prompt = true) const;
  std::string chat_format_name() const;  // "chatml", "llama3", ...
  const TokenizerData& data() const;      // what it was built from

  // Writes dir/tokenizer.json and dir/tokenizer_config.json (HF format) that from_hf_json
  // reads back to the same tokenizer: how a checkpoint converted from GGUF keeps its text
  // interface (parafuse fuse).
  void save_hf(const std::string& dir) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A text file as ids (BOS first when the tokenizer adds one; special-token text is not
// parsed), at most `max_tokens` (0: all). What eval-ppl, analyze, plan and fuse score.
std::vector<int32_t> tokenize_text_file(const Tokenizer& tokenizer, const std::string& path,
                                        int64_t max_tokens = 0);

// Turns a stream of token ids into UTF-8 text pieces, holding back incomplete sequences.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);  // returns the complete characters now available
  std::string flush();           // whatever is left (invalid bytes become U+FFFD)

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

}  // namespace parafuse

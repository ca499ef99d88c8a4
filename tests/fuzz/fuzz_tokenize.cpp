// Fuzz target: encode and decode of arbitrary bytes with a small byte-level BPE tokenizer.
//
// The tokenizer is built in memory (all 256 byte tokens, a few merges, ChatML control tokens)
// for each pre-tokenizer in turn, so every regex set sees the input, ill-formed UTF-8 included.
// Since every byte has a token, decode(encode(x)) must give x back exactly; a difference is a
// bug and aborts. The same input is also streamed through StreamDecoder, which must yield
// well-formed UTF-8 only.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace {

// GPT-2 bytes_to_unicode, as token strings.
std::vector<std::string> byte_tokens() {
  std::vector<std::string> out(256);
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    out[b] = s;
  }
  return out;
}

std::unique_ptr<parafuse::Tokenizer> make(const std::string& pre) {
  parafuse::TokenizerData data;
  data.tokens = byte_tokens();
  data.token_types.assign(256, 1);
  const std::vector<std::string> extra = {"\xC4\xA0t", "he", "\xC4\xA0the",
                                          "in",        "12", "\xC4\xA0\xC4\xA0"};
  data.merges = {"\xC4\xA0 t", "h e", "\xC4\xA0t he", "i n", "1 2", "\xC4\xA0 \xC4\xA0"};
  for (const auto& t : extra) {
    data.tokens.push_back(t);
    data.token_types.push_back(1);
  }
  for (const char* special : {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}) {
    data.tokens.push_back(special);
    data.token_types.push_back(3);
  }
  data.pre = pre;
  data.ignore_merges = pre == "llama-bpe";
  return std::make_unique<parafuse::Tokenizer>(std::move(data));
}

bool well_formed_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80                   ? 1
               : (c >= 0xC2 && c <= 0xDF) ? 2
               : (c >= 0xE0 && c <= 0xEF) ? 3
               : (c >= 0xF0 && c <= 0xF4) ? 4
                                          : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<std::unique_ptr<parafuse::Tokenizer>> tokenizers = [] {
    std::vector<std::unique_ptr<parafuse::Tokenizer>> all;
    for (const char* pre : {"smollm", "llama-bpe", "gpt2", "default"}) all.push_back(make(pre));
    return all;
  }();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    for (const auto& tok : tokenizers) {
      for (bool parse_special : {true, false}) {
        const std::vector<int32_t> ids = tok->encode(text, parse_special);
        if (tok->decode(ids) != text) std::abort();  // byte-level: the bytes must come back
      }
      parafuse::StreamDecoder stream(*tok);
      std::string streamed;
      for (int32_t id : tok->encode(text)) streamed += stream.push(id);
      streamed += stream.flush();
      if (!well_formed_utf8(streamed)) std::abort();
    }
  } catch (const parafuse::Error&) {
    // Not expected for encode/decode of in-vocabulary ids, but a message is not a crash.
  }
  return 0;
}

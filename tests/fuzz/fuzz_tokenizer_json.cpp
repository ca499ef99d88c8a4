// Fuzz target: Tokenizer::from_hf_json_text on arbitrary bytes.
//
// The input is split at the first NUL into tokenizer.json and tokenizer_config.json text, so
// both parsers are reached. Malformed input must end in parafuse::Error, never in a crash, a
// hang or another exception; a tokenizer that does load is then used once, so whatever the
// loader accepted is also safe to encode and decode with.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view tokenizer_json = input.substr(0, nul);
  const std::string_view config_json =
      nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  try {
    const parafuse::Tokenizer tok =
        parafuse::Tokenizer::from_hf_json_text(tokenizer_json, config_json, "fuzz.json");
    const std::vector<int32_t> ids = tok.encode("Hello <|im_start|> world 123 \xF0\x9F\x98\x80");
    (void)tok.decode(ids, /*skip_special=*/true);
    (void)tok.chat_format_name();
    try {
      (void)tok.apply_chat_template({{"user", "hi"}});
    } catch (const parafuse::Error&) {
      // A tokenizer without a chat format says so.
    }
  } catch (const parafuse::Error&) {
    // Rejected with a message: what we want for malformed input.
  }
  return 0;
}

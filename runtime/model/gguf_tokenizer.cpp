// The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata (byte-level BPE only):
// read into TokenizerData here, beside the GGUF reader, so runtime/tokenizer knows no file
// format but HF's tokenizer.json.
#include <limits>

#include "kernels/core/error.h"
#include "runtime/model/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {
namespace {

int gguf_id(const GgufFile& file, const std::string& key) {
  if (!file.has(key)) return -1;
  const int64_t id = file.get_int(key);
  PF_CHECK(id >= -1 && id <= std::numeric_limits<int32_t>::max(), "{}: {} = {} is not a token id",
           file.origin(), key, id);
  return static_cast<int>(id);
}

}  // namespace

Tokenizer tokenizer_from_gguf(const GgufFile& file) {
  const std::string& origin = file.origin();
  PF_CHECK(file.has("tokenizer.ggml.model"), "{}: no tokenizer (tokenizer.ggml.model is missing)",
           origin);
  const std::string& model = file.get_string("tokenizer.ggml.model");
  PF_CHECK(model == "gpt2",
           "{}: tokenizer.ggml.model is '{}'; parafuse supports only byte-level BPE ('gpt2')",
           origin, model);
  TokenizerData data;
  data.tokens = file.get_strings("tokenizer.ggml.tokens");
  PF_CHECK(file.has("tokenizer.ggml.merges"), "{}: tokenizer.ggml.merges is missing", origin);
  data.merges = file.get_strings("tokenizer.ggml.merges");
  if (file.has("tokenizer.ggml.token_type")) {
    for (int64_t type : file.get_ints("tokenizer.ggml.token_type")) {
      PF_CHECK(type >= 0 && type <= 6, "{}: tokenizer.ggml.token_type has unknown type {}", origin,
               type);
      data.token_types.push_back(static_cast<int>(type));
    }
  }
  // llama.cpp treats a missing pre-tokenizer name as "default".
  data.pre = file.has("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : "default";
  data.bos_id = gguf_id(file, "tokenizer.ggml.bos_token_id");
  data.eos_id = gguf_id(file, "tokenizer.ggml.eos_token_id");
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int id = gguf_id(file, key);
    if (id >= 0 && id != data.eos_id) data.extra_eos_ids.push_back(id);
  }
  if (file.has("tokenizer.ggml.add_bos_token")) {
    data.add_bos = file.get_bool("tokenizer.ggml.add_bos_token");
  }
  if (file.has("tokenizer.chat_template")) {
    data.chat_template = file.get_string("tokenizer.chat_template");
  }
  return Tokenizer::from_data(std::move(data), origin);
}

}  // namespace parafuse

// Tokenizer -> HF tokenizer.json + tokenizer_config.json, the inverse of from_hf_json for the
// pre-tokenizers we support. Used when a GGUF model is rewritten as an HF checkpoint.
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse {
namespace {

using json = nlohmann::ordered_json;

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
          {"use_regex", use_regex}};
}

json pre_tokenizer_json(const std::string& pre) {
  if (pre == "gpt2") return byte_level(true);
  if (pre == "smollm")
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3")
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern",
                {{"Regex", std::string(tokenizer_detail::PreTokenizer::llama3_pattern())}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              byte_level(false)}}};
  PF_THROW("pre-tokenizer '{}' has no HF tokenizer.json form here (supported: gpt2, smollm, "
           "llama-bpe)",
           pre);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  PF_CHECK(out.good(), "cannot write '{}'", path);
  out << text;
  PF_CHECK(out.good(), "writing '{}' failed", path);
}

}  // namespace

const TokenizerData& Tokenizer::data() const { return impl_->data; }

void Tokenizer::save_hf(const std::string& dir) const {
  const TokenizerData& d = impl_->data;
  json vocab = json::object();
  json added = json::array();
  for (size_t id = 0; id < d.tokens.size(); ++id) {
    const int type = id < d.token_types.size() ? d.token_types[id] : 1;
    if (type == 3 || type == 4) {
      added.push_back({{"id", id}, {"content", d.tokens[id]}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                       {"special", type == 3}});
    }
    vocab[d.tokens[id]] = id;
  }
  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre_tokenizer_json(d.pre)},
      {"post_processor", nullptr},
      {"decoder", byte_level(true)},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", d.ignore_merges},
        {"vocab", vocab}, {"merges", d.merges}}}};
  json config = {{"add_bos_token", d.add_bos}};
  auto token_text = [&](int id) {
    return id >= 0 && size_t(id) < d.tokens.size() ? json(d.tokens[size_t(id)]) : json(nullptr);
  };
  config["bos_token"] = token_text(d.bos_id);
  config["eos_token"] = token_text(d.eos_id);
  if (!d.chat_template.empty()) config["chat_template"] = d.chat_template;
  write_file(dir + "/tokenizer.json", tokenizer.dump());
  write_file(dir + "/tokenizer_config.json", config.dump(1));
}

}  // namespace parafuse

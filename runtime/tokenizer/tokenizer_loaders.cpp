// Tokenizer loaders: HF tokenizer.json (+ config), and TokenizerData filled elsewhere (GGUF).
//
// Both produce a TokenizerData and leave every consistency check of the vocabulary to the
// Tokenizer constructor, so the two formats fail alike. tokenizer.json is parsed with
// nlohmann::json; every shape it might have that we do not support (another model type, a
// normalizer, a pre-tokenizer other than the SmolLM2 / Llama-3 / GPT-2 forms) is rejected by
// name rather than tokenized differently from the reference.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "runtime/config/read_file.h"
#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse {
namespace tokenizer_detail {

void add_conventional_eos_ids(TokenizerData& data) {
  static const char* const kEndOfTurn[] = {"<|eot_id|>",   "<|eom_id|>",    "<|end_of_text|>",
                                           "<|im_end|>",   "<|endoftext|>", "<|end|>",
                                           "<end_of_turn>"};
  if (data.token_types.size() != data.tokens.size()) return;
  for (size_t id = 0; id < data.tokens.size(); ++id) {
    if (data.token_types[id] != 3) continue;
    for (const char* name : kEndOfTurn) {
      if (data.tokens[id] != name || static_cast<int>(id) == data.eos_id) continue;
      auto& extra = data.extra_eos_ids;
      if (std::find(extra.begin(), extra.end(), static_cast<int>(id)) == extra.end()) {
        extra.push_back(static_cast<int>(id));
      }
    }
  }
}

}  // namespace tokenizer_detail

namespace {

using nlohmann::json;

Tokenizer build(TokenizerData data, const std::string& origin) {
  tokenizer_detail::add_conventional_eos_ids(data);
  try {
    return Tokenizer(std::move(data));
  } catch (const Error& e) {
    PF_THROW("{}: {}", origin, e.what());
  }
}

// A short rendering of a JSON value for error messages.
std::string brief(const json& value) {
  std::string text = value.dump();
  if (text.size() > 160) text = text.substr(0, 160) + "...";
  return text;
}

bool flag(const json& object, const char* key, bool fallback) {
  if (!object.contains(key) || object[key].is_null()) return fallback;
  return object[key].get<bool>();
}

// HF pre_tokenizer -> the name of the equivalent PreTokenizer, or "" when unsupported.
std::string pre_tokenizer_name(const json& pre) {
  if (!pre.is_object()) return "";
  const std::string type = pre.value("type", "");
  auto byte_level = [](const json& p, bool use_regex) {
    return p.is_object() && p.value("type", "") == "ByteLevel" &&
           !flag(p, "add_prefix_space", false) && flag(p, "use_regex", true) == use_regex;
  };
  if (byte_level(pre, true)) return "gpt2";
  if (type != "Sequence" || !pre.contains("pretokenizers")) return "";
  const json& seq = pre["pretokenizers"];
  if (!seq.is_array() || seq.size() != 2) return "";
  const json& first = seq[0];
  if (!first.is_object()) return "";
  if (first.value("type", "") == "Digits" && flag(first, "individual_digits", false) &&
      byte_level(seq[1], true)) {
    return "smollm";
  }
  if (first.value("type", "") == "Split" && first.contains("pattern") &&
      first["pattern"].is_object() && first["pattern"].contains("Regex") &&
      first["pattern"]["Regex"].is_string() &&
      first["pattern"]["Regex"].get<std::string>() ==
          tokenizer_detail::PreTokenizer::llama3_pattern() &&
      first.value("behavior", "") == "Isolated" && !flag(first, "invert", false) &&
      byte_level(seq[1], false)) {
    return "llama-bpe";
  }
  return "";
}

int32_t json_id(const json& value, const std::string& what) {
  PF_CHECK(value.is_number_integer(), "{} is not an integer id: {}", what, brief(value));
  const int64_t id = value.get<int64_t>();
  PF_CHECK(id >= 0 && id < std::numeric_limits<int32_t>::max(), "{} = {} is not a valid id", what,
           id);
  return static_cast<int32_t>(id);
}

// bos_token / eos_token of tokenizer_config.json: a string or {"content": ...}; -1 when absent.
int special_id(const json& config, const char* key,
               const std::unordered_map<std::string, int>& ids) {
  if (!config.contains(key) || config[key].is_null()) return -1;
  const json& value = config[key];
  std::string text;
  if (value.is_string()) {
    text = value.get<std::string>();
  } else if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    text = value["content"].get<std::string>();
  } else {
    PF_THROW("tokenizer_config.json: {} is neither a string nor {{\"content\": ...}}: {}", key,
             brief(value));
  }
  auto it = ids.find(text);
  PF_CHECK(it != ids.end(), "tokenizer_config.json: {} '{}' is not in the vocabulary", key, text);
  return it->second;
}

std::string chat_template_of(const json& config) {
  if (!config.contains("chat_template") || config["chat_template"].is_null()) return "";
  const json& value = config["chat_template"];
  if (value.is_string()) return value.get<std::string>();
  // Several named templates: [{"name": "default", "template": "..."}, ...].
  PF_CHECK(value.is_array(), "tokenizer_config.json: chat_template is neither a string nor a list");
  std::string first;
  for (const json& entry : value) {
    PF_CHECK(entry.is_object() && entry.contains("template") && entry["template"].is_string(),
             "tokenizer_config.json: chat_template entry without a 'template' string: {}",
             brief(entry));
    if (first.empty()) first = entry["template"].get<std::string>();
    if (entry.value("name", "") == "default") return entry["template"].get<std::string>();
  }
  return first;
}

TokenizerData parse_tokenizer_json(std::string_view tokenizer_json, std::string_view config_json) {
  const json root = json::parse(tokenizer_json);
  PF_CHECK(root.is_object(), "the top level is not an object");
  PF_CHECK(root.contains("model") && root["model"].is_object(), "no 'model' object");
  const json& model = root["model"];
  PF_CHECK(model.contains("type") && model["type"].is_string(), "model.type is missing");
  const std::string model_type = model["type"].get<std::string>();
  PF_CHECK(model_type == "BPE", "model.type is '{}'; parafuse supports only byte-level 'BPE'",
           model_type);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    PF_CHECK(!model.contains(key) || model[key].is_null() ||
                 (model[key].is_string() && model[key].get<std::string>().empty()),
             "model.{} = {} is not supported (byte-level BPE has none)", key, brief(model[key]));
  }
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    PF_THROW("normalizer {} is not supported (byte-level BPE models have none)",
             brief(root["normalizer"]));
  }

  TokenizerData data;
  data.pre = pre_tokenizer_name(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json());
  PF_CHECK(!data.pre.empty(),
           "pre_tokenizer {} is not supported (supported: ByteLevel as GPT-2; "
           "Sequence[Digits(individual_digits), ByteLevel] as SmolLM2; Sequence[Split(Llama-3 "
           "regex), ByteLevel(use_regex=false)] as Llama-3)",
           brief(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json()));
  data.ignore_merges = flag(model, "ignore_merges", false);

  PF_CHECK(model.contains("vocab") && model["vocab"].is_object(), "model.vocab is not an object");
  const json& vocab = model["vocab"];
  const json empty_array = json::array();
  const json& added = root.contains("added_tokens") && !root["added_tokens"].is_null()
                          ? root["added_tokens"]
                          : empty_array;
  PF_CHECK(added.is_array(), "added_tokens is not a list");

  // Ids must cover 0..n-1 without holes; n can be at most the number of entries.
  const size_t max_entries = vocab.size() + added.size();
  std::vector<std::string> tokens(max_entries);
  std::vector<bool> present(max_entries, false);
  std::vector<int> types(max_entries, 1);
  std::vector<int> source(max_entries, 0);  // 1: model.vocab, 2: added_tokens
  size_t n = 0;
  auto place = [&](int32_t id, const std::string& text, int type, const std::string& what) {
    PF_CHECK(static_cast<size_t>(id) < max_entries,
             "{} has id {}, but there are only {} tokens: ids must run from 0 without holes", what,
             id, max_entries);
    const int from = type == 1 ? 1 : 2;
    PF_CHECK(source[id] != from, "{} has id {}, which '{}' already has", what, id, tokens[id]);
    source[id] = from;
    tokens[id] = text;
    present[id] = true;
    types[id] = type;
    n = std::max(n, static_cast<size_t>(id) + 1);
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    place(json_id(it.value(), "model.vocab['" + it.key() + "']"), it.key(), 1,
          "model.vocab['" + it.key() + "']");
  }
  for (size_t i = 0; i < added.size(); ++i) {
    const json& entry = added[i];
    const std::string what = "added_tokens[" + std::to_string(i) + "]";
    PF_CHECK(entry.is_object() && entry.contains("id") && entry.contains("content") &&
                 entry["content"].is_string(),
             "{} needs an 'id' and a 'content' string: {}", what, brief(entry));
    // Added tokens are matched verbatim before pre-tokenization; special ones are "control"
    // (skipped by decode(skip_special)), the others "user-defined".
    place(json_id(entry["id"], what + ".id"), entry["content"].get<std::string>(),
          flag(entry, "special", false) ? 3 : 4, what);
  }
  PF_CHECK(n > 0, "model.vocab is empty");
  for (size_t id = 0; id < n; ++id) {
    PF_CHECK(present[id], "no token has id {}: ids must run from 0 to {} without holes", id, n - 1);
  }
  tokens.resize(n);
  types.resize(n);
  data.tokens = std::move(tokens);
  data.token_types = std::move(types);

  PF_CHECK(model.contains("merges") && model["merges"].is_array(), "model.merges is not a list");
  const json& merges = model["merges"];
  data.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    if (m.is_string()) {
      data.merges.push_back(m.get<std::string>());
      continue;
    }
    PF_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
             "model.merges[{}] is neither \"left right\" nor [\"left\", \"right\"]: {}", i,
             brief(m));
    const std::string left = m[0].get<std::string>();
    const std::string right = m[1].get<std::string>();
    PF_CHECK(left.find(' ') == std::string::npos && right.find(' ') == std::string::npos,
             "model.merges[{}] has a token with a space, which byte-level BPE never has: {}", i,
             brief(m));
    data.merges.push_back(left + " " + right);
  }

  if (!config_json.empty()) {
    const json config = json::parse(config_json);
    PF_CHECK(config.is_object(), "tokenizer_config.json: the top level is not an object");
    std::unordered_map<std::string, int> ids;
    for (size_t id = 0; id < data.tokens.size(); ++id) {
      ids.emplace(data.tokens[id], static_cast<int>(id));
    }
    data.bos_id = special_id(config, "bos_token", ids);
    data.eos_id = special_id(config, "eos_token", ids);
    data.add_bos = flag(config, "add_bos_token", false);
    data.chat_template = chat_template_of(config);
  }
  return data;
}


}  // namespace

Tokenizer Tokenizer::from_data(TokenizerData data, const std::string& origin) {
  return build(std::move(data), origin);
}

Tokenizer Tokenizer::from_hf_json_text(std::string_view tokenizer_json,
                                       std::string_view tokenizer_config_json,
                                       const std::string& origin) {
  TokenizerData data;
  try {
    data = parse_tokenizer_json(tokenizer_json, tokenizer_config_json);
  } catch (const nlohmann::json::exception& e) {
    PF_THROW("{}: {}", origin, e.what());
  } catch (const Error& e) {
    PF_THROW("{}: {}", origin, e.what());
  }
  return build(std::move(data), origin);
}

Tokenizer Tokenizer::from_hf_json(const std::string& tokenizer_json) {
  namespace fs = std::filesystem;
  const fs::path path(tokenizer_json);
  const std::string text = read_file(path.string(), "tokenizer file");
  const fs::path dir = path.parent_path();
  std::error_code ec;
  std::string config;
  if (fs::is_regular_file(dir / "tokenizer_config.json", ec)) {
    config = read_file((dir / "tokenizer_config.json").string(), "tokenizer file");
  }
  Tokenizer tokenizer = from_hf_json_text(text, config, path.string());
  // Newer HF checkpoints keep the template in its own file.
  if (tokenizer.impl_->data.chat_template.empty() &&
      fs::is_regular_file(dir / "chat_template.jinja", ec)) {
    auto& impl = *tokenizer.impl_;
    impl.data.chat_template = read_file((dir / "chat_template.jinja").string(), "chat template");
    impl.chat = tokenizer_detail::detect_chat_template(
        impl.data.chat_template, impl.token_to_id.count("<|im_start|>") != 0,
        impl.token_to_id.count("<|start_header_id|>") != 0);
  }
  return tokenizer;
}

}  // namespace parafuse

// One strict reader for parafuse's config-like files: the YAML run config (launcher/run_config),
// YAML fusion plans (runtime/fusion) and HF config.json (runtime/model).
//
// The text is parsed once, from the parse events of yaml-cpp or nlohmann, into one tree that keeps
// what a message needs: the 1-based line of every YAML key and value, the key path of every JSON
// value. Keys given twice are refused while the tree is built (yaml-cpp's and nlohmann's own
// trees keep both or the last), and the tree is bounded in depth and size, YAML aliases
// included, so no input makes the reader recurse or grow without end.
// The caller then asks for each key it reads, with the value's rule from value_rules.h:
//
//   const ConfigDocument doc = ConfigDocument::from_yaml(text, "x.yaml", UnknownKeys::Refuse);
//   const ConfigMap top = doc.root().map();
//   if (auto tp = top.get("tp")) config.tp = int(tp->integer(kPositiveInt));
//   doc.finish();  // the keys nobody asked for: "unknown key 'tpp' (did you mean 'tp'?)"
//
// so the list of known keys is the code that reads them, never a second table that drifts.
// Every problem is one parafuse::Error naming the file and, for YAML, the line
// ("x.yaml:3: 'parallel.tp' must be at least 1, got '0'"), for JSON the key path
// ("config.json: block_configs[3].ffn.ffn_mult must be a number, got string \"x\""). No yaml-cpp
// or nlohmann exception leaves the reader.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/config/value_rules.h"  // IntRule, NumberRule

namespace parafuse {

// What finish() does with a key that nobody asked for.
enum class UnknownKeys {
  // Every such key is an error, with a did-you-mean and the known keys (run YAML, fusion plans).
  Refuse,
  // Only a near-miss of a known key is an error ("num_attention_head"); other keys are accepted,
  // and keys starting with '_' always are. For HF config.json, which carries many keys parafuse
  // has no use for (torch_dtype, transformers_version, ...).
  RefuseNearMisses,
};

struct ConfigNode;  // the parsed tree (config_reader.cpp)
class ConfigDocument;
class ConfigMap;

// One value of a document, by reference into it (the document must outlive it). A YAML scalar
// takes the type it is read as ("2" is an integer, a number or text); a JSON value must have it.
class ConfigValue {
 public:
  // "parallel.tp", "block_configs[3].ffn.ffn_mult", "" for the top level.
  const std::string& path() const;
  // "x.yaml:3" (YAML: the value's line, or its key's for an empty or multi-line value) or
  // "config.json".
  std::string where() const;
  // YAML: a key with no value ("tp:"), an empty item ("-"), an empty document. JSON: a null list
  // item (a null map value is absent).
  bool is_null() const;
  bool is_list() const;
  bool is_map() const;

  int64_t integer(const IntRule& rule) const;
  double number(const NumberRule& rule) const;
  bool boolean() const;
  // A non-empty string; `what` completes "must be ...": "a fusion plan file".
  std::string text(std::string_view what) const;
  // One of `choices` ("must be one of mpi, ucx, got 'tcp'", with a did-you-mean).
  std::string choice(const std::vector<std::string>& choices) const;
  // The items of a list; a YAML key with no value is an empty list. `what` completes "must be
  // ...".
  std::vector<ConfigValue> list(std::string_view what = "a list") const;
  // The keys of a map; a YAML key with no value (or an empty document) is an empty map. `what`
  // completes "must be ..."; empty: "a map" (YAML) or "a JSON object".
  ConfigMap map(std::string_view what = {}) const;

  // How messages show the value: "'0'", "a list", "nothing" (YAML); "-3", "string \"x\"",
  // "an array" (JSON).
  std::string shown() const;
  // Throws "{where}: {name} {problem}", name being 'parallel.tp' (YAML), block_configs[3].ffn
  // (JSON) or "the top level": for checks only the caller can make.
  [[noreturn]] void fail(std::string_view problem) const;

 private:
  friend class ConfigDocument;
  friend class ConfigMap;
  ConfigValue(const ConfigDocument& document, const ConfigNode& node)
      : document_(&document), node_(&node) {}
  [[noreturn]] void fail_type(std::string_view expected) const;
  bool is_empty_yaml_value() const;

  const ConfigDocument* document_;
  const ConfigNode* node_;
};

// The keys of one map. Each get/require/ignore marks its key as known; ConfigDocument::finish()
// reports the keys of every map read this way that nobody asked for.
class ConfigMap {
 public:
  // The value of `key`; nullopt when absent (or JSON null, which HF writes for unset keys).
  std::optional<ConfigValue> get(std::string_view key) const;
  // The same, but absence is an error: "required key 'block_configs[0].ffn.ffn_mult' is
  // missing" (or, when a key present is a typo of it, that key is reported as unknown).
  ConfigValue require(std::string_view key) const;
  // Keys known to be of no use here (read by nobody on purpose); never unknown.
  void ignore(std::initializer_list<std::string_view> keys) const;
  // The map as a value, for fail() and where().
  const ConfigValue& value() const { return value_; }

 private:
  friend class ConfigValue;
  explicit ConfigMap(const ConfigValue& value) : value_(value) {}
  ConfigValue value_;
};

class ConfigDocument {
 public:
  // `origin` names the text in messages ("configs/x.yaml", "config.json"). YAML: one document;
  // empty text (or only comments) is an empty document whose root is_null().
  static ConfigDocument from_yaml(const std::string& text, std::string origin,
                                  UnknownKeys unknown_keys = UnknownKeys::Refuse);
  static ConfigDocument from_json(const std::string& text, std::string origin,
                                  UnknownKeys unknown_keys);

  ConfigDocument(ConfigDocument&&) noexcept;
  ConfigDocument& operator=(ConfigDocument&&) noexcept;
  ~ConfigDocument();

  ConfigValue root() const;
  // Call once everything is read: throws on the first key (in document order) of a map read
  // through ConfigValue::map() that nobody asked for and the policy refuses.
  void finish() const;

  const std::string& origin() const { return origin_; }
  bool is_yaml() const { return yaml_; }

 private:
  ConfigDocument(std::unique_ptr<ConfigNode> root, std::string origin, bool yaml,
                 UnknownKeys unknown_keys);
  friend class ConfigValue;
  friend class ConfigMap;

  std::unique_ptr<ConfigNode> root_;
  std::string origin_;
  bool yaml_;
  UnknownKeys unknown_keys_;
};

}  // namespace parafuse

// The checked reads over the parsed tree (config_tree.h builds it).
#include "runtime/config/config_reader.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"
#include "kernels/core/suggest.h"  // closest_match, did_you_mean
#include "runtime/config/config_tree.h"

namespace parafuse {

using namespace config_detail;

namespace {

using Kind = ConfigNode::Kind;

std::string json_quoted(std::string_view text) {
  // Invalid UTF-8 cannot come from the parser; `replace` keeps dump() from throwing anyway.
  return nlohmann::json(std::string(text))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

// ---- ConfigDocument -------------------------------------------------------------------------

ConfigDocument::ConfigDocument(std::unique_ptr<ConfigNode> root, std::string origin, bool yaml,
                               UnknownKeys unknown_keys)
    : root_(std::move(root)),
      origin_(std::move(origin)),
      yaml_(yaml),
      unknown_keys_(unknown_keys) {}
ConfigDocument::ConfigDocument(ConfigDocument&&) noexcept = default;
ConfigDocument& ConfigDocument::operator=(ConfigDocument&&) noexcept = default;
ConfigDocument::~ConfigDocument() = default;

ConfigDocument ConfigDocument::from_yaml(const std::string& text, std::string origin,
                                         UnknownKeys unknown_keys) {
  auto root = std::make_unique<ConfigNode>(parse_yaml_tree(text, origin));
  return ConfigDocument(std::move(root), std::move(origin), true, unknown_keys);
}

ConfigDocument ConfigDocument::from_json(const std::string& text, std::string origin,
                                         UnknownKeys unknown_keys) {
  auto root = std::make_unique<ConfigNode>(parse_json_tree(text, origin));
  return ConfigDocument(std::move(root), std::move(origin), false, unknown_keys);
}

ConfigValue ConfigDocument::root() const {
  return ConfigValue(*this, *root_);
}

namespace {

// "x.yaml:5: unknown key 'tpp' in 'parallel' (did you mean 'tp'?) (known keys: tp, pp)". The
// known keys are listed where every key is known (Refuse) and all have been asked for.
[[noreturn]] void throw_unknown_key(const ConfigNode& map, size_t entry, const std::string& origin,
                                    bool yaml, bool list_known) {
  const std::string& key = map.keys[entry];
  const int line = map.key_lines[entry];
  const std::string where = line == 0 ? origin : fmt::format("{}:{}", origin, line);
  std::string known;
  if (list_known)
    known = map.asked.empty() ? " (no keys are read here)"
                              : fmt::format(" (known keys: {})", fmt::join(map.asked, ", "));
  PF_THROW("{}: unknown key '{}'{}{}{}", where, clipped(key), in_map(map.path, yaml),
           did_you_mean(key, map.asked), known);
}

// Whether `policy` lets entry `entry` of `map` go unread.
bool unread_key_is_fine(const ConfigNode& map, size_t entry, bool yaml, UnknownKeys policy) {
  if (!yaml && map.items[entry].kind == Kind::Null) return true;  // JSON null: absent
  if (policy == UnknownKeys::Refuse) return false;
  const std::string& key = map.keys[entry];
  return key.rfind('_', 0) == 0 || closest_match(key, map.asked).empty();
}

void check_unread_keys(const ConfigNode& node, const std::string& origin, bool yaml,
                       UnknownKeys policy) {
  const bool check = node.kind == Kind::Map && node.opened;
  for (size_t i = 0; i < node.items.size(); ++i) {
    if (check && !node.entry_asked[i] && !unread_key_is_fine(node, i, yaml, policy))
      throw_unknown_key(node, i, origin, yaml, policy == UnknownKeys::Refuse);
    check_unread_keys(node.items[i], origin, yaml, policy);
  }
}

}  // namespace

void ConfigDocument::finish() const {
  check_unread_keys(*root_, origin_, yaml_, unknown_keys_);
}

// ---- ConfigValue ----------------------------------------------------------------------------

const std::string& ConfigValue::path() const {
  return node_->path;
}

std::string ConfigValue::where() const {
  return document_->yaml_ && node_->line != 0
             ? fmt::format("{}:{}", document_->origin_, node_->line)
             : document_->origin_;
}

bool ConfigValue::is_null() const {
  return node_->kind == Kind::Null;
}
bool ConfigValue::is_list() const {
  return node_->kind == Kind::List;
}
bool ConfigValue::is_map() const {
  return node_->kind == Kind::Map;
}

std::string ConfigValue::shown() const {
  const std::string& text = node_->text;
  switch (node_->kind) {
    case Kind::Null:
      return document_->yaml_ ? "nothing" : "null";
    case Kind::Text:
      return fmt::format("'{}'", clipped(text));
    case Kind::String:
      return "string " + json_quoted(clipped(text));
    case Kind::Integer:
    case Kind::Number:
      return "number " + clipped(text);
    case Kind::Boolean:
      return "boolean " + text;
    case Kind::List:
      return document_->yaml_ ? "a list" : "an array";
    case Kind::Map:
      return document_->yaml_ ? "a map" : "an object";
  }
  return "?";
}

void ConfigValue::fail(std::string_view problem) const {
  const std::string& path = node_->path;
  const std::string name = path.empty()       ? std::string("the top level")
                           : document_->yaml_ ? fmt::format("'{}'", path)
                                              : path;
  PF_THROW("{}: {} {}", where(), name, problem);
}

void ConfigValue::fail_type(std::string_view expected) const {
  fail(fmt::format("must be {}, got {}", expected, shown()));
}

int64_t ConfigValue::integer(const IntRule& rule) const {
  const Kind kind = node_->kind;
  if (kind == Kind::Text || kind == Kind::Integer) {
    const std::string& text = node_->text;
    const std::string problem =
        kind == Kind::Text ? int_problem(text, rule) : int_problem(text, rule, clipped(text));
    if (!problem.empty()) fail(problem);
    return *parse_int(text);
  }
  fail_type(fmt::format("an integer ({})", rule.describe()));
}

double ConfigValue::number(const NumberRule& rule) const {
  const Kind kind = node_->kind;
  if (kind == Kind::Text || kind == Kind::Integer || kind == Kind::Number) {
    const std::string& text = node_->text;
    const std::string problem =
        kind == Kind::Text ? number_problem(text, rule) : number_problem(text, rule, clipped(text));
    if (!problem.empty()) fail(problem);
    return *parse_number(text);
  }
  const bool bounded = rule.min || rule.max;
  fail_type(bounded ? fmt::format("a number ({})", rule.describe()) : "a number");
}

bool ConfigValue::boolean() const {
  const std::string& text = node_->text;
  if (node_->kind == Kind::Boolean) return text == "true";
  if (node_->kind == Kind::Text) {  // YAML 1.2 core schema
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  fail_type("true or false");
}

std::string ConfigValue::text(std::string_view what) const {
  const bool is_text = node_->kind == Kind::Text || node_->kind == Kind::String;
  if (!is_text || node_->text.empty()) fail_type(what);
  return node_->text;
}

std::string ConfigValue::choice(const std::vector<std::string>& choices) const {
  const std::string what = fmt::format("one of {}", fmt::join(choices, ", "));
  const std::string value = text(what);
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    const std::string got =
        document_->yaml_ ? fmt::format("'{}'", clipped(value)) : json_quoted(clipped(value));
    fail(fmt::format("must be {}, got {}{}", what, got, did_you_mean(value, choices)));
  }
  return value;
}

// "key:" with nothing after it (or an empty document) is an empty list or map; a bare "-" item
// is more likely a slip, and stays "nothing".
bool ConfigValue::is_empty_yaml_value() const {
  return document_->yaml_ && node_->kind == Kind::Null && !node_->list_item;
}

std::vector<ConfigValue> ConfigValue::list(std::string_view what) const {
  std::vector<ConfigValue> items;
  if (is_empty_yaml_value()) return items;
  if (node_->kind != Kind::List) fail_type(what);
  for (const ConfigNode& item : node_->items) items.push_back(ConfigValue(*document_, item));
  return items;
}

ConfigMap ConfigValue::map(std::string_view what) const {
  if (node_->kind != Kind::Map && !is_empty_yaml_value()) {
    if (!what.empty()) fail_type(what);
    fail_type(document_->yaml_ ? "a map" : "a JSON object");
  }
  node_->opened = true;
  node_->entry_asked.resize(node_->items.size(), 0);
  return ConfigMap(*this);
}

// ---- ConfigMap ------------------------------------------------------------------------------

std::optional<ConfigValue> ConfigMap::get(std::string_view key) const {
  const ConfigNode& map = *value_.node_;
  if (std::find(map.asked.begin(), map.asked.end(), key) == map.asked.end())
    map.asked.emplace_back(key);
  const auto found = std::find(map.keys.begin(), map.keys.end(), key);
  if (found == map.keys.end()) return std::nullopt;
  const size_t entry = size_t(found - map.keys.begin());
  map.entry_asked[entry] = 1;
  const ConfigNode& node = map.items[entry];
  if (node.kind == Kind::Null && !value_.document_->yaml_) return std::nullopt;  // JSON null
  return ConfigValue(*value_.document_, node);
}

ConfigValue ConfigMap::require(std::string_view key) const {
  if (std::optional<ConfigValue> value = get(key)) return *value;
  // A key present that is a typo of the missing one says more than "missing".
  const ConfigNode& map = *value_.node_;
  const ConfigDocument& document = *value_.document_;
  for (size_t i = 0; i < map.keys.size(); ++i) {
    const bool json_null = !document.yaml_ && map.items[i].kind == Kind::Null;
    if (map.entry_asked[i] || json_null || map.keys[i].rfind('_', 0) == 0) continue;
    if (!closest_match(map.keys[i], {std::string(key)}).empty())
      throw_unknown_key(map, i, document.origin_, document.yaml_, false);  // not all asked yet
  }
  const std::string where = map.path.empty() ? document.origin_ : value_.where();
  PF_THROW("{}: required key '{}' is missing", where, child_path(map.path, key));
}

void ConfigMap::ignore(std::initializer_list<std::string_view> keys) const {
  for (std::string_view key : keys) (void)get(key);
}

}  // namespace parafuse

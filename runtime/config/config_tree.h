// Internal to runtime/config: the tree a YAML or JSON document is parsed into, its two builders
// (yaml-cpp and nlohmann parse events), and the message helpers both halves of the reader share.
// Callers use config_reader.h.
//
// Both builders work from parse events and bound what they build (nesting depth, value count,
// characters), so a hostile file cannot recurse the reader off its stack or expand YAML aliases
// without end; everything after the builders walks a tree of that bounded depth.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace parafuse {

// One value. A map keeps its keys in document order, each with its line (YAML).
struct ConfigNode {
  enum class Kind {
    Null,     // YAML: an empty value; JSON: null
    Text,     // YAML scalar: typed by whoever reads it
    String,   // JSON
    Integer,  // JSON, `text` as written
    Number,   // JSON, `text` as written
    Boolean,  // JSON, `text` "true" or "false"
    List,
    Map,
  };
  Kind kind = Kind::Null;
  std::string text;
  std::string path;  // "parallel.tp", "block_configs[3].ffn"; "" for the root
  int line = 0;      // 1-based (YAML); 0: not known (JSON)
  bool list_item = false;
  std::vector<ConfigNode> items;  // List: the items; Map: the values
  std::vector<std::string> keys;  // Map
  std::vector<int> key_lines;     // Map (YAML)

  // What the reader did with a map: read through ConfigValue::map(), the keys asked for (in
  // the order asked: the "known keys" of messages), and which entries were asked for.
  mutable bool opened = false;
  mutable std::vector<std::string> asked;
  mutable std::vector<char> entry_asked;
};

namespace config_detail {

// The parsed document; throws one parafuse::Error naming `origin` (and the line, for YAML).
// Empty YAML text is a Null root. Keys given twice are refused here.
ConfigNode parse_yaml_tree(const std::string& text, const std::string& origin);
ConfigNode parse_json_tree(const std::string& text, const std::string& origin);

// At most 40 characters of a key or value, for messages.
std::string clipped(std::string_view text);
// "parallel" + "tp" -> "parallel.tp"; "" + "model" -> "model".
std::string child_path(const std::string& parent, std::string_view key);
// " at the top level" / " in 'parallel'" (YAML), "" / " in block_configs[0]" (JSON): the map a
// key is in, for messages.
std::string in_map(const std::string& path, bool yaml);
// nlohmann's "[json.exception.parse_error.101] parse error ..." without the bracketed id.
std::string strip_json_exception_id(const std::string& what);

}  // namespace config_detail
}  // namespace parafuse

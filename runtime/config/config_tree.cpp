// The two tree builders of the config reader (see config_tree.h).
#include "runtime/config/config_tree.h"

#include <map>
#include <unordered_map>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>  // YAML::Parser, YAML::Exception
#include <nlohmann/json.hpp>

#include "kernels/core/error.h"

namespace parafuse {
namespace config_detail {

constexpr size_t kShownChars = 40;

std::string clipped(std::string_view text) {
  return text.size() <= kShownChars ? std::string(text)
                                    : std::string(text.substr(0, kShownChars - 3)) + "...";
}

std::string child_path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : fmt::format("{}.{}", parent, key);
}

std::string in_map(const std::string& path, bool yaml) {
  if (path.empty()) return yaml ? " at the top level" : "";
  return yaml ? fmt::format(" in '{}'", path) : " in " + path;
}

std::string strip_json_exception_id(const std::string& what) {
  if (what.rfind("[json.exception.", 0) == 0) {
    const size_t end = what.find("] ");
    if (end != std::string::npos) return what.substr(end + 2);
  }
  return what;
}

namespace {

using Kind = ConfigNode::Kind;

constexpr int kMaxDepth = 64;          // block_configs[3].ffn.ffn_mult is 4
constexpr size_t kMaxValues = 200000;  // a 160-block config.json holds about 3000
// Characters of paths and scalars together: YAML aliases repeat a subtree, long keys and all,
// without repeating its text (a 160-block config.json holds about 150 KB).
constexpr size_t kMaxChars = size_t(32) << 20;

// ---- building the tree ----------------------------------------------------------------------

// What both builders share: the lists and maps still open, each value's path and line, keys
// given twice, anchored values (YAML), and the bounds.
class TreeBuilder {
 public:
  ConfigNode take_root() { return std::move(root_); }

 protected:
  TreeBuilder(const std::string& origin, bool yaml) : origin_(origin), yaml_(yaml) {}

  std::string where(int line) const {
    return line == 0 ? origin_ : fmt::format("{}:{}", origin_, line);
  }
  std::string in_open_map() const { return in_map(open_.back().node.path, yaml_); }
  bool expecting_key() const {
    return !open_.empty() && open_.back().node.kind == Kind::Map && !open_.back().has_key;
  }

  void take_key(std::string name, int line) {
    Frame& map = open_.back();
    if (const auto seen = map.first_line.find(name); seen != map.first_line.end()) {
      const std::string first = yaml_ ? fmt::format(" (first on line {})", seen->second) : "";
      PF_THROW("{}: key '{}'{} is given twice{}", where(line), clipped(name), in_open_map(), first);
    }
    map.first_line.emplace(name, line);
    map.key = std::move(name);
    map.key_line = line;
    map.has_key = true;
  }

  // A new value at the current place, with its path and line. A scalar is where it is; an
  // empty value, or a list or map under a key, is placed at the key (yaml-cpp marks an empty
  // value where the next token starts, and a block list where its first item is); an empty
  // list item has no line of its own that can be trusted.
  ConfigNode make(Kind kind, int own_line) {
    PF_CHECK(++values_ <= kMaxValues, "{}: more than {} values{}", origin_, kMaxValues,
             yaml_ ? " (YAML aliases?)" : "");
    ConfigNode node;
    node.kind = kind;
    node.line = own_line;
    if (!open_.empty()) {
      const Frame& parent = open_.back();
      if (parent.node.kind == Kind::Map) {
        node.path = child_path(parent.node.path, parent.key);
        if (kind != Kind::Text && parent.key_line != 0) node.line = parent.key_line;
      } else {
        node.path = fmt::format("{}[{}]", parent.node.path, parent.node.items.size());
        node.list_item = true;
        if (kind == Kind::Null) node.line = 0;
      }
    }
    count_chars(node.path.size());
    return node;
  }

  void count_chars(size_t n) {
    chars_ += n;
    PF_CHECK(chars_ <= kMaxChars, "{}: more than {} MB of keys and values{}", origin_,
             kMaxChars >> 20, yaml_ ? " (YAML aliases?)" : "");
  }

  void add(ConfigNode&& node, size_t anchor = 0) {
    if (anchor != 0) anchors_[anchor] = node;
    if (open_.empty()) {
      root_ = std::move(node);
      return;
    }
    Frame& parent = open_.back();
    if (parent.node.kind == Kind::Map) {
      parent.node.keys.push_back(std::move(parent.key));
      parent.node.key_lines.push_back(parent.key_line);
      parent.has_key = false;
    }
    parent.node.items.push_back(std::move(node));
  }

  void open(Kind kind, int own_line, size_t anchor = 0) {
    PF_CHECK(open_.size() < size_t(kMaxDepth), "{}: values nested deeper than {} levels",
             where(own_line), kMaxDepth);
    Frame frame;
    frame.node = make(kind, own_line);
    frame.anchor = anchor;
    open_.push_back(std::move(frame));
  }

  void close() {
    Frame frame = std::move(open_.back());
    open_.pop_back();
    add(std::move(frame.node), frame.anchor);
  }

  struct Frame {
    ConfigNode node;
    size_t anchor = 0;
    bool has_key = false;  // Map: a key was read, its value is next
    std::string key;
    int key_line = 0;
    std::unordered_map<std::string, int> first_line;  // Map: key -> line of its first appearance
  };

  const std::string& origin_;
  const bool yaml_;
  std::vector<Frame> open_;
  std::unordered_map<size_t, ConfigNode> anchors_;  // YAML: finished anchored values
  ConfigNode root_;
  size_t values_ = 0;
  size_t chars_ = 0;
};

// yaml-cpp's parse events rather than its YAML::Node: the events carry the mark of every key
// and value, a document count YAML::LoadAll cannot give (it loops for ever on a stray ',' where
// a document starts: the parser stops making progress), and an alias copies a finished value,
// so a value can never contain itself.
class YamlTreeBuilder final : public TreeBuilder, public YAML::EventHandler {
 public:
  YamlTreeBuilder(const std::string& text, const std::string& origin)
      : TreeBuilder(origin, true), text_(text) {}

  void parse() {
    std::istringstream in(text_);
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(*this)) {
    }
    PF_CHECK(documents_ <= 1,
             "{}: holds {} YAML documents (separated by '---'); the file is one document", origin_,
             documents_);
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    // A document that starts where the last one did consumed nothing: the parser is stuck.
    const bool stuck = documents_ > 0 && mark.pos == last_document_pos_;
    if (stuck || documents_ > text_.size()) {
      const char c = size_t(mark.pos) < text_.size() ? text_[size_t(mark.pos)] : ' ';
      PF_THROW("{}:{}: invalid YAML (column {}): unexpected '{}'", origin_, mark.line + 1,
               mark.column + 1, c);
    }
    last_document_pos_ = mark.pos;
    ++documents_;
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (later_document()) return;
    if (expecting_key())
      PF_THROW("{}: keys{} must be plain names, got nothing", where(line(mark)), in_open_map());
    add(make(Kind::Null, line(mark)), anchor);
  }

  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& value) override {
    if (later_document()) return;
    if (expecting_key()) {
      take_key(value, line(mark));
      if (anchor != YAML::NullAnchor) anchors_[anchor] = text_node(value);
      return;
    }
    ConfigNode node = make(Kind::Text, line(mark));
    count_chars(value.size());
    node.text = value;
    add(std::move(node), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (later_document()) return;
    const auto found = anchors_.find(anchor);
    if (found == anchors_.end())  // the parser knows the anchor: its value is still open
      PF_THROW("{}: an alias refers to a value that contains it", where(line(mark)));
    const ConfigNode source = found->second;  // a copy: anchors_ may grow below
    if (expecting_key()) {
      if (source.kind != Kind::Text)
        PF_THROW("{}: keys{} must be plain names, got an alias of a list or map", where(line(mark)),
                 in_open_map());
      take_key(source.text, line(mark));
      return;
    }
    ConfigNode node = make(source.kind, line(mark));
    copy_contents(source, node, int(open_.size()));
    add(std::move(node));
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    if (!later_document()) open_container(Kind::List, mark, anchor);
  }
  void OnSequenceEnd() override {
    if (!later_document()) close();
  }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    if (!later_document()) open_container(Kind::Map, mark, anchor);
  }
  void OnMapEnd() override {
    if (!later_document()) close();
  }

 private:
  static int line(const YAML::Mark& mark) { return mark.is_null() ? 0 : mark.line + 1; }
  bool later_document() const { return documents_ > 1; }

  static ConfigNode text_node(const std::string& text) {
    ConfigNode node;
    node.kind = Kind::Text;
    node.text = text;
    return node;
  }

  void open_container(Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
    if (expecting_key()) {
      PF_THROW("{}: keys{} must be plain names, got {}", where(line(mark)), in_open_map(),
               kind == Kind::List ? "a list" : "a map");
    }
    open(kind, line(mark), anchor);
  }

  // An aliased value's contents, placed under `node` (already at the alias's path). Its values
  // keep the lines they were written on.
  void copy_contents(const ConfigNode& source, ConfigNode& node, int depth) {
    PF_CHECK(depth <= kMaxDepth, "{}: values nested deeper than {} levels", origin_, kMaxDepth);
    count_chars(source.text.size());
    node.text = source.text;
    node.keys = source.keys;
    node.key_lines = source.key_lines;
    for (size_t i = 0; i < source.items.size(); ++i) {
      PF_CHECK(++values_ <= kMaxValues, "{}: more than {} values (YAML aliases?)", origin_,
               kMaxValues);
      const ConfigNode& item = source.items[i];
      ConfigNode copy;
      copy.kind = item.kind;
      copy.line = item.line;
      copy.list_item = source.kind == Kind::List;
      copy.path = copy.list_item ? fmt::format("{}[{}]", node.path, i)
                                 : child_path(node.path, source.keys[i]);
      count_chars(copy.path.size());
      copy_contents(item, copy, depth + 1);
      node.items.push_back(std::move(copy));
    }
  }

  const std::string& text_;
  size_t documents_ = 0;
  int last_document_pos_ = -1;
};

// nlohmann's SAX events rather than its DOM: a key given twice is seen (the DOM keeps the last
// one silently), and a number keeps the text it was written as.
class JsonTreeBuilder final : public TreeBuilder, public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit JsonTreeBuilder(const std::string& origin) : TreeBuilder(origin, false) {}

  bool null() override { return scalar(Kind::Null, "null"); }
  bool boolean(bool value) override { return scalar(Kind::Boolean, value ? "true" : "false"); }
  bool number_integer(number_integer_t value) override {
    return scalar(Kind::Integer, std::to_string(value));
  }
  bool number_unsigned(number_unsigned_t value) override {
    return scalar(Kind::Integer, std::to_string(value));
  }
  bool number_float(number_float_t, const string_t& as_written) override {
    return scalar(Kind::Number, as_written);
  }
  bool string(string_t& value) override { return scalar(Kind::String, std::move(value)); }
  bool binary(binary_t&) override { PF_THROW("{}: invalid JSON: a binary value", origin_); }

  bool start_object(std::size_t) override {
    open(Kind::Map, 0);
    return true;
  }
  bool key(string_t& name) override {
    take_key(std::move(name), 0);
    return true;
  }
  bool end_object() override {
    close();
    return true;
  }
  bool start_array(std::size_t) override {
    open(Kind::List, 0);
    return true;
  }
  bool end_array() override {
    close();
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    PF_THROW("{}: invalid JSON: {}", origin_, strip_json_exception_id(e.what()));
  }

 private:
  bool scalar(Kind kind, std::string text) {
    ConfigNode node = make(kind, 0);
    count_chars(text.size());
    node.text = std::move(text);
    add(std::move(node));
    return true;
  }
};

}  // namespace

ConfigNode parse_yaml_tree(const std::string& text, const std::string& origin) {
  YamlTreeBuilder builder(text, origin);
  try {
    builder.parse();
  } catch (const Error&) {
    throw;
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) PF_THROW("{}: invalid YAML: {}", origin, e.msg);
    PF_THROW("{}:{}: invalid YAML (column {}): {}", origin, e.mark.line + 1, e.mark.column + 1,
             e.msg);
  } catch (const std::exception& e) {  // yaml-cpp is not known to throw others; make sure
    PF_THROW("{}: invalid YAML: {}", origin, e.what());
  }
  return builder.take_root();
}

ConfigNode parse_json_tree(const std::string& text, const std::string& origin) {
  JsonTreeBuilder builder(origin);
  try {
    // Errors are thrown from the builder's callbacks, parse errors included (parse_error).
    nlohmann::json::sax_parse(text, &builder);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // sax_parse is not known to throw; make sure
    PF_THROW("{}: invalid JSON: {}", origin, strip_json_exception_id(e.what()));
  }
  return builder.take_root();
}

}  // namespace config_detail
}  // namespace parafuse

// The config reader as a user meets it through any file read with it: each mistake in YAML or
// JSON is one Error with the file and line (YAML) or key path (JSON), the unknown-key policies
// (strict; config.json's near misses and '_' notes), JSON null as absent, keys given twice,
// malformed text, and that no prefix of a valid document gets anything but an Error out.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/config/config_reader.h"
#include "runtime/config/value_rules.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// A small schema in the shape of the run config, read the way its reader reads:
//   name: text (required)   parallel: {tp: int >= 1, pp: int >= 1, transport: mpi|ucx}
//   ratio: number in (0, 1]  enabled: bool   ids: list of int >= 0   groups: list of lists
struct Schema {
  std::string name;
  int tp = 1, pp = 1;
  std::string transport = "mpi";
  double ratio = 1;
  bool enabled = false;
  std::vector<int> ids;
  std::vector<std::vector<int>> groups;
};

const IntRule kId{0, kIntMax};

Schema read_schema(const ConfigDocument& doc) {
  Schema s;
  const ConfigMap top = doc.root().map();
  s.name = top.require("name").text("a name");
  if (auto parallel = top.get("parallel")) {
    const ConfigMap p = parallel->map();
    if (auto v = p.get("tp")) s.tp = int(v->integer(kPositiveInt));
    if (auto v = p.get("pp")) s.pp = int(v->integer(kPositiveInt));
    if (auto v = p.get("transport")) s.transport = v->choice({"mpi", "ucx"});
  }
  if (auto v = top.get("ratio")) s.ratio = v->number(kProbability);
  if (auto v = top.get("enabled")) s.enabled = v->boolean();
  if (auto v = top.get("ids"))
    for (const ConfigValue& id : v->list()) s.ids.push_back(int(id.integer(kId)));
  if (auto v = top.get("groups")) {
    for (const ConfigValue& group : v->list("a list of groups")) {
      s.groups.emplace_back();
      for (const ConfigValue& id : group.list("a list of ids"))
        s.groups.back().push_back(int(id.integer(kId)));
    }
  }
  doc.finish();
  return s;
}

Schema read_yaml(const std::string& text) {
  return read_schema(ConfigDocument::from_yaml(text, "x.yaml", UnknownKeys::Refuse));
}
Schema read_json(const std::string& text, UnknownKeys policy = UnknownKeys::Refuse) {
  return read_schema(ConfigDocument::from_json(text, "x.json", policy));
}
std::string yaml_error(const std::string& text) {
  return error_of([&] { read_yaml(text); });
}
std::string json_error(const std::string& text, UnknownKeys policy = UnknownKeys::Refuse) {
  return error_of([&] { read_json(text, policy); });
}

const char* kFullYaml = R"(# every key
name: demo
parallel:
  tp: 2
  pp: 3
  transport: ucx
ratio: 0.5
enabled: true
ids: [0, 4, 9]
groups:
  - [1, 2]
  - [5, 6, 7]
)";

const char* kFullJson = R"({"name": "demo", "parallel": {"tp": 2, "pp": 3, "transport": "ucx"},
  "ratio": 0.5, "enabled": true, "ids": [0, 4, 9], "groups": [[1, 2], [5, 6, 7]]})";

void expect_full(const Schema& s) {
  EXPECT_EQ(s.name, "demo");
  EXPECT_EQ(s.tp, 2);
  EXPECT_EQ(s.pp, 3);
  EXPECT_EQ(s.transport, "ucx");
  EXPECT_EQ(s.ratio, 0.5);
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.ids, (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(s.groups, (std::vector<std::vector<int>>{{1, 2}, {5, 6, 7}}));
}

// ---- YAML ------------------------------------------------------------------------------------

TEST(ConfigReaderYaml, ReadsEveryKindOfValue) {
  expect_full(read_yaml(kFullYaml));
}

TEST(ConfigReaderYaml, ValuesKnowTheirPathAndLine) {
  const ConfigDocument doc = ConfigDocument::from_yaml(kFullYaml, "x.yaml");
  const ConfigMap top = doc.root().map();
  const ConfigValue tp = *top.require("parallel").map().get("pp");
  EXPECT_EQ(tp.path(), "parallel.pp");
  EXPECT_EQ(tp.where(), "x.yaml:5");
  const ConfigValue group = top.require("groups").list()[1];
  EXPECT_EQ(group.path(), "groups[1]");
  EXPECT_EQ(group.list()[2].path(), "groups[1][2]");
  EXPECT_EQ(group.where(), "x.yaml:12");
  EXPECT_EQ(error_of([&] { group.fail("is not allowed here"); }),
            "x.yaml:12: 'groups[1]' is not allowed here");
  EXPECT_EQ(error_of([&] { doc.root().fail("is odd"); }), "x.yaml:2: the top level is odd");
}

TEST(ConfigReaderYaml, UnknownKeyWithDidYouMeanAndKnownKeys) {
  EXPECT_EQ(yaml_error("name: a\n\nparallel:\n  tp: 2\n  tpp: 3\n"),
            "x.yaml:5: unknown key 'tpp' in 'parallel' (did you mean 'tp'?) (known keys: tp, pp, "
            "transport)");
  EXPECT_EQ(yaml_error("name: a\nratoi: 0.5\n"),
            "x.yaml:2: unknown key 'ratoi' at the top level (did you mean 'ratio'?) (known keys: "
            "name, parallel, ratio, enabled, ids, groups)");
  // Nothing close: no guess, still the list.
  EXPECT_EQ(yaml_error("name: a\nserve:\n  port: 8000\n"),
            "x.yaml:2: unknown key 'serve' at the top level (known keys: name, parallel, ratio, "
            "enabled, ids, groups)");
  // An unknown key is reported even when its section is empty, and the first one in the file.
  EXPECT_EQ(yaml_error("name: a\nfoo:\nbar: 1\n"),
            "x.yaml:2: unknown key 'foo' at the top level (known keys: name, parallel, ratio, "
            "enabled, ids, groups)");
}

TEST(ConfigReaderYaml, WrongTypeSaysWhatWasExpectedAndWhatCame) {
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp: two\n"),
            "x.yaml:3: 'parallel.tp' must be an integer (at least 1), got 'two'");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp: [1, 2]\n"),
            "x.yaml:3: 'parallel.tp' must be an integer (at least 1), got a list");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp:\n"),
            "x.yaml:3: 'parallel.tp' must be an integer (at least 1), got nothing");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  pp: 2.5\n"),
            "x.yaml:3: 'parallel.pp' must be an integer (at least 1), got '2.5'");
  EXPECT_EQ(yaml_error("name: {first: a}\n"), "x.yaml:1: 'name' must be a name, got a map");
  EXPECT_EQ(yaml_error("name: a\nparallel: 4\n"), "x.yaml:2: 'parallel' must be a map, got '4'");
  EXPECT_EQ(yaml_error("name: a\nratio: fast\n"),
            "x.yaml:2: 'ratio' must be a number (in (0, 1]), got 'fast'");
  EXPECT_EQ(yaml_error("name: a\nenabled: yes please\n"),
            "x.yaml:2: 'enabled' must be true or false, got 'yes please'");
  EXPECT_EQ(yaml_error("name: a\nids: 3\n"), "x.yaml:2: 'ids' must be a list, got '3'");
  EXPECT_EQ(yaml_error("name: a\ngroups:\n  - [1, 2]\n  - 3\n"),
            "x.yaml:4: 'groups[1]' must be a list of ids, got '3'");
  EXPECT_EQ(yaml_error("name: a\ngroups:\n  - [1, x]\n"),
            "x.yaml:3: 'groups[0][1]' must be an integer (at least 0), got 'x'");
  EXPECT_EQ(yaml_error("- a\n- b\n"), "x.yaml:1: the top level must be a map, got a list");
}

TEST(ConfigReaderYaml, OutOfRangeIsWordedByTheRule) {
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp: 0\n"),
            "x.yaml:3: 'parallel.tp' must be at least 1, got '0'");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp: 99999999999\n"),
            "x.yaml:3: 'parallel.tp' must be at most 2147483647, got '99999999999'");
  EXPECT_EQ(yaml_error("name: a\nratio: 0\n"), "x.yaml:2: 'ratio' must be in (0, 1], got '0'");
  EXPECT_EQ(yaml_error("name: a\nratio: .inf\n"),
            "x.yaml:2: 'ratio' must be a number (in (0, 1]), got '.inf'");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  transport: tcp\n"),
            "x.yaml:3: 'parallel.transport' must be one of mpi, ucx, got 'tcp'");
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  transport: uxc\n"),
            "x.yaml:3: 'parallel.transport' must be one of mpi, ucx, got 'uxc' (did you mean "
            "'ucx'?)");
  EXPECT_EQ(yaml_error("name: a\nids: [1, -2]\n"),
            "x.yaml:2: 'ids[1]' must be at least 0, got '-2'");
}

TEST(ConfigReaderYaml, MissingRequiredKey) {
  EXPECT_EQ(yaml_error("parallel:\n  tp: 2\n"), "x.yaml: required key 'name' is missing");
  EXPECT_EQ(yaml_error(""), "x.yaml: required key 'name' is missing");
  // A key present that is a typo of the missing one is what the user needs to hear about.
  EXPECT_EQ(yaml_error("nmae: a\n"),
            "x.yaml:1: unknown key 'nmae' at the top level (did you mean 'name'?)");
  const ConfigDocument doc = ConfigDocument::from_yaml("section:\n  alpha: 1\n", "x.yaml");
  EXPECT_EQ(error_of([&] { doc.root().map().require("section").map().require("omega"); }),
            "x.yaml:1: required key 'section.omega' is missing");
}

TEST(ConfigReaderYaml, KeyGivenTwice) {
  EXPECT_EQ(yaml_error("name: a\nparallel:\n  tp: 2\n  pp: 1\n  tp: 4\n"),
            "x.yaml:5: key 'tp' in 'parallel' is given twice (first on line 3)");
  EXPECT_EQ(yaml_error("name: a\nname: b\n"),
            "x.yaml:2: key 'name' at the top level is given twice (first on line 1)");
}

TEST(ConfigReaderYaml, EmptyValuesAndDocuments) {
  // An empty section is all defaults, an empty list is empty.
  const Schema s = read_yaml("name: a\nparallel:\n  # tp: 4\nids:\ngroups: []\n");
  EXPECT_EQ(s.tp, 1);
  EXPECT_TRUE(s.ids.empty());
  EXPECT_TRUE(s.groups.empty());
  for (const char* text : {"", "\n", "# only a comment\n", "---\n"}) {
    const ConfigDocument doc = ConfigDocument::from_yaml(text, "x.yaml");
    EXPECT_TRUE(doc.root().is_null()) << text;
    EXPECT_FALSE(doc.root().map().get("anything").has_value());
    EXPECT_NO_THROW(doc.finish());
  }
  // A YAML null is a value (nothing), not an absent key.
  EXPECT_EQ(yaml_error("name:\n"), "x.yaml:1: 'name' must be a name, got nothing");
  EXPECT_EQ(yaml_error("name: ~\n"), "x.yaml:1: 'name' must be a name, got nothing");
  EXPECT_EQ(yaml_error("name: ''\n"), "x.yaml:1: 'name' must be a name, got ''");
}

TEST(ConfigReaderYaml, MalformedTextGivesTheParserMessageAndLine) {
  EXPECT_EQ(yaml_error("name: a\nids: [1, 2\n"),
            "x.yaml:3: invalid YAML (column 1): end of sequence flow not found");
  EXPECT_THAT(yaml_error("name: a\n  tp: 2\n"), StartsWith("x.yaml:2: invalid YAML (column"));
  EXPECT_THAT(yaml_error("a: b\n---\nc: d\n"),
              StartsWith("x.yaml: holds 2 YAML documents (separated by '---')"));
  EXPECT_EQ(yaml_error("? [a, b]\n: c\n"),
            "x.yaml:1: keys at the top level must be plain names, got a list");
  EXPECT_THAT(yaml_error("name: a\n- b\n"), StartsWith("x.yaml:2: invalid YAML (column 1)"));
  // A stray ',' where a document starts: yaml-cpp's own LoadAll loops for ever on it.
  EXPECT_EQ(yaml_error("# comment\n, name: a\n"),
            "x.yaml:2: invalid YAML (column 1): unexpected ','");
}

TEST(ConfigReaderYaml, NestingAndAliasesAreBounded) {
  std::string deep = "name: a\nids: ";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  EXPECT_THAT(yaml_error(deep + "\n"), HasSubstr("nested deeper than 64 levels"));
  // Each line doubles the values of the one before: 2^30 if expanded.
  std::string bomb = "a0: &a0 [x, x]\n";
  for (int i = 1; i <= 30; ++i) bomb += fmt::format("a{}: &a{} [*a{}, *a{}]\n", i, i, i - 1, i - 1);
  EXPECT_THAT(error_of([&] { ConfigDocument::from_yaml(bomb, "x.yaml"); }),
              HasSubstr("x.yaml: more than 200000 values"));
  // Few values, but long keys repeated along every path.
  const std::string key(1000, 'k');
  std::string long_paths = "a0: &a0 {" + key + ": x}\n";
  for (int i = 1; i <= 20; ++i)
    long_paths += fmt::format("a{}: &a{} {{{}: [*a{}, *a{}]}}\n", i, i, key, i - 1, i - 1);
  EXPECT_THAT(error_of([&] { ConfigDocument::from_yaml(long_paths, "x.yaml"); }),
              HasSubstr("x.yaml: more than 32 MB of keys and values"));
  // A value that contains itself.
  EXPECT_EQ(error_of([] { ConfigDocument::from_yaml("a: &a [*a]\n", "x.yaml"); }),
            "x.yaml:1: an alias refers to a value that contains it");
}

TEST(ConfigReaderYaml, AliasesAreCopiesReadAtTheirPlace) {
  const Schema s = read_yaml("name: &n demo\nids: &ids [1, 2]\ngroups: [*ids, *ids]\n");
  EXPECT_EQ(s.groups, (std::vector<std::vector<int>>{{1, 2}, {1, 2}}));
  // A mistake inside an aliased value names the place it is read at, and the line it is on.
  EXPECT_EQ(yaml_error("name: a\nbad: &b [1, x]\nids: *b\n"),
            "x.yaml:2: 'ids[1]' must be an integer (at least 0), got 'x'");
  EXPECT_EQ(yaml_error("name: a\nk: &k ids\n*k : [3]\n"),
            "x.yaml:2: unknown key 'k' at the top level (known keys: name, parallel, ratio, "
            "enabled, ids, groups)");
}

TEST(ConfigReaderYaml, FinishChecksOnlyMapsThatWereRead) {
  // A section nobody opened as a map (asked for, then left alone) is not checked key by key.
  const ConfigDocument doc = ConfigDocument::from_yaml("notes:\n  anything: 1\n", "x.yaml");
  const ConfigMap top = doc.root().map();
  top.ignore({"notes"});
  EXPECT_NO_THROW(doc.finish());
}

// ---- JSON ------------------------------------------------------------------------------------

TEST(ConfigReaderJson, ReadsEveryKindOfValue) {
  expect_full(read_json(kFullJson));
}

TEST(ConfigReaderJson, ErrorsNameTheKeyPath) {
  const std::string text = R"({"block_configs": [{}, {}, {}, {"ffn": {"ffn_mult": "x"}}]})";
  const ConfigDocument doc = ConfigDocument::from_json(text, "config.json", UnknownKeys::Refuse);
  const ConfigValue block = doc.root().map().require("block_configs").list()[3];
  const ConfigValue mult = block.map().require("ffn").map().require("ffn_mult");
  EXPECT_EQ(mult.path(), "block_configs[3].ffn.ffn_mult");
  EXPECT_EQ(mult.where(), "config.json");
  EXPECT_EQ(error_of([&] { mult.number(NumberRule{}); }),
            "config.json: block_configs[3].ffn.ffn_mult must be a number, got string \"x\"");
  EXPECT_EQ(error_of([&] { block.map().require("attention"); }),
            "config.json: required key 'block_configs[3].attention' is missing");
}

TEST(ConfigReaderJson, WrongTypeSaysTheJsonType) {
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tp": "2"}})"),
            "x.json: parallel.tp must be an integer (at least 1), got string \"2\"");
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tp": 2.5}})"),
            "x.json: parallel.tp must be an integer (at least 1), got number 2.5");
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tp": true}})"),
            "x.json: parallel.tp must be an integer (at least 1), got boolean true");
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": [1]})"),
            "x.json: parallel must be a JSON object, got an array");
  EXPECT_EQ(json_error(R"({"name": 7})"), "x.json: name must be a name, got number 7");
  EXPECT_EQ(json_error(R"({"name": "a", "ids": {"a": 1}})"),
            "x.json: ids must be a list, got an object");
  EXPECT_EQ(json_error(R"({"name": "a", "ids": [1, null]})"),
            "x.json: ids[1] must be an integer (at least 0), got null");
  EXPECT_EQ(json_error(R"({"name": "a", "enabled": "yes"})"),
            "x.json: enabled must be true or false, got string \"yes\"");
  EXPECT_EQ(json_error("[1, 2]"), "x.json: the top level must be a JSON object, got an array");
}

TEST(ConfigReaderJson, OutOfRangeShowsTheNumberAsWritten) {
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tp": -576}})"),
            "x.json: parallel.tp must be at least 1, got -576");
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tp": 18446744073709551615}})"),
            "x.json: parallel.tp must be at most 2147483647, got 18446744073709551615");
  EXPECT_EQ(json_error(R"({"name": "a", "ratio": 1.5e0})"),
            "x.json: ratio must be in (0, 1], got 1.5e0");
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"transport": "tcp"}})"),
            "x.json: parallel.transport must be one of mpi, ucx, got \"tcp\"");
  // A cap at or above INT_MAX is a sanity limit: "at least 1" until a value hits it.
  const ConfigDocument doc =
      ConfigDocument::from_json(R"({"a": 0, "b": 2000000000000})", "x.json", UnknownKeys::Refuse);
  const IntRule size{1, int64_t(1) << 40};
  EXPECT_EQ(error_of([&] { doc.root().map().require("a").integer(size); }),
            "x.json: a must be at least 1, got 0");
  EXPECT_EQ(error_of([&] { doc.root().map().require("b").integer(size); }),
            "x.json: b must be at most 1099511627776, got 2000000000000");
}

TEST(ConfigReaderJson, StrictPolicyRefusesEveryUnknownKey) {
  EXPECT_EQ(json_error(R"({"name": "a", "parallel": {"tpp": 2}})"),
            "x.json: unknown key 'tpp' in parallel (did you mean 'tp'?) (known keys: tp, pp, "
            "transport)");
  EXPECT_EQ(json_error(R"({"name": "a", "torch_dtype": "bfloat16"})"),
            "x.json: unknown key 'torch_dtype' (known keys: name, parallel, ratio, enabled, ids, "
            "groups)");
}

// config.json's policy: a typo of a key that is read is refused; other keys (HF has many we do
// not read) and '_' notes are accepted.
TEST(ConfigReaderJson, NearMissPolicyRefusesOnlyTypos) {
  const auto near_miss = UnknownKeys::RefuseNearMisses;
  const auto read = [&](const std::string& text) {
    const ConfigDocument doc = ConfigDocument::from_json(text, "config.json", near_miss);
    const ConfigMap top = doc.root().map();
    (void)top.get("num_attention_heads");
    (void)top.get("hidden_size");
    if (auto block = top.get("block")) (void)block->map().get("ffn_mult");
    doc.finish();
  };
  EXPECT_EQ(error_of([&] { read(R"({"num_attention_head": 8})"); }),
            "config.json: unknown key 'num_attention_head' (did you mean 'num_attention_heads'?)");
  EXPECT_EQ(error_of([&] { read(R"({"block": {"ffn_mul": 2}})"); }),
            "config.json: unknown key 'ffn_mul' in block (did you mean 'ffn_mult'?)");
  EXPECT_NO_THROW(read(R"({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16",
                          "transformers_version": "4.45.0", "use_cache": true, "auto_map": {
                          "AutoConfig": "x"}, "block": {"sparsify_later": 1}})"));
  // '_' notes are accepted even when they look like a key that is read.
  EXPECT_NO_THROW(read(R"({"_hidden_size": 1, "_reconstructed": {"from": "gguf"}})"));
  // null is absent: a null near miss is no key at all.
  EXPECT_NO_THROW(read(R"({"num_attention_head": null})"));
  // A missing required key with a typo of it present names the typo.
  const ConfigDocument doc =
      ConfigDocument::from_json(R"({"hiden_size": 4})", "config.json", near_miss);
  EXPECT_EQ(error_of([&] { doc.root().map().require("hidden_size"); }),
            "config.json: unknown key 'hiden_size' (did you mean 'hidden_size'?)");
}

TEST(ConfigReaderJson, NullCountsAsAbsent) {
  const ConfigDocument doc = ConfigDocument::from_json(R"({"a": null, "b": 1, "list": [null]})",
                                                       "config.json", UnknownKeys::Refuse);
  const ConfigMap top = doc.root().map();
  EXPECT_FALSE(top.get("a").has_value());
  EXPECT_TRUE(top.get("b").has_value());
  EXPECT_EQ(error_of([&] { top.require("a"); }), "config.json: required key 'a' is missing");
  EXPECT_TRUE(top.require("list").list()[0].is_null());
  // Under the strict policy an unread null key is still absent, not unknown.
  const ConfigDocument strict =
      ConfigDocument::from_json(R"({"b": 1, "unused": null})", "c.json", UnknownKeys::Refuse);
  (void)strict.root().map().get("b");
  EXPECT_NO_THROW(strict.finish());
}

TEST(ConfigReaderJson, KeyGivenTwice) {
  EXPECT_EQ(json_error(R"({"name": "a", "name": "b"})"), "x.json: key 'name' is given twice");
  EXPECT_EQ(json_error(R"({"name": "a", "groups": [], "parallel": {"tp": 1, "tp": 2}})"),
            "x.json: key 'tp' in parallel is given twice");
  EXPECT_EQ(error_of([] {
              ConfigDocument::from_json(R"({"b": [{"x": {"k": 1, "k": null}}]})", "c.json",
                                        UnknownKeys::RefuseNearMisses);
            }),
            "c.json: key 'k' in b[0].x is given twice");
}

TEST(ConfigReaderJson, MalformedTextGivesTheParserPosition) {
  EXPECT_EQ(json_error(R"({"name": "a", )"),
            "x.json: invalid JSON: parse error at line 1, column 15: syntax error while parsing "
            "object key - unexpected end of input; expected string literal");
  EXPECT_THAT(json_error(""), StartsWith("x.json: invalid JSON: parse error at line 1, column 1"));
  EXPECT_THAT(json_error("{\"name\": \"a\"} trailing"),
              StartsWith("x.json: invalid JSON: parse error at line 1, column 17"));
  EXPECT_THAT(json_error("{\n\"name\": \"a\",\n\"ratio\": 1e400}"),
              StartsWith("x.json: invalid JSON: number overflow parsing '1e400'"));
  EXPECT_THAT(json_error("{\"name\": \"\xff\"}"), StartsWith("x.json: invalid JSON: parse error"));
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "[";
  EXPECT_EQ(json_error(deep), "x.json: values nested deeper than 64 levels");
}

// ---- both ------------------------------------------------------------------------------------

// Every prefix of a valid document either reads or gives one parafuse::Error: never another
// exception, a crash or a sanitizer report (the asan preset runs this too).
TEST(ConfigReader, TruncationsOfAValidDocumentNeverCrash) {
  const auto check_prefixes = [](const std::string& full, bool yaml) {
    int read = 0, refused = 0;
    for (size_t n = 0; n <= full.size(); ++n) {
      const std::string prefix = full.substr(0, n);
      try {
        yaml ? read_yaml(prefix) : read_json(prefix);
        ++read;
      } catch (const Error& e) {
        EXPECT_THAT(e.what(), StartsWith(yaml ? "x.yaml" : "x.json")) << n;
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "prefix of " << n << " bytes: " << typeid(e).name() << ": " << e.what();
      }
    }
    EXPECT_GT(refused, 0);
    return read;
  };
  EXPECT_GT(check_prefixes(kFullYaml, true), 0);   // e.g. cut after a complete line
  EXPECT_EQ(check_prefixes(kFullJson, false), 1);  // only the whole document
}

}  // namespace
}  // namespace parafuse

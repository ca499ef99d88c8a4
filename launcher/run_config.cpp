// Reading the run config from YAML and from flags, with one set of rules for both.
//
// Each value rule (positive integer, port, number in (0, 1], one of a list) is written once and
// used three times: by the YAML reader (message with file and 1-based line), by the CLI11
// validators of the flags (message with the flag), and by check_run_config (message with the
// key). The YAML reader walks every key of every map itself instead of looking keys up, so it
// sees the keys it does not know, and keys given twice (yaml-cpp keeps both silently).
#include "launcher/run_config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <yaml-cpp/yaml.h>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

// ---- value rules, shared by YAML, flags and check_run_config ------------------------------

struct IntRule {
  int64_t min, max;
  const char* what;  // completes "must be ...": "a positive integer"
  bool accepts(int64_t v) const { return v >= min && v <= max; }
};
constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr IntRule kPositiveInt{1, kIntMax, "a positive integer"};
constexpr IntRule kNonNegativeInt{0, kIntMax, "a non-negative integer"};
constexpr IntRule kPositiveInt64{1, kInt64Max, "a positive integer"};
constexpr IntRule kBlockIndex{0, kIntMax, "a block index (a non-negative integer)"};
constexpr IntRule kPort{1, 65535, "a port number from 1 to 65535"};

struct NumberRule {
  bool (*accepts)(double);
  const char* what;
};
constexpr NumberRule kNonNegativeNumber{[](double v) { return v >= 0; }, "a number >= 0"};
constexpr NumberRule kProbability{[](double v) { return v > 0 && v <= 1; }, "a number in (0, 1]"};
constexpr NumberRule kSeconds{[](double v) { return v > 0; }, "a positive number of seconds"};

const std::vector<std::string> kTransports = {"mpi", "ucx"};
const std::vector<std::string> kBackends = {"cpu", "cuda"};
const std::vector<std::string> kDtypes = {"auto", "f32", "bf16"};

bool is_one_of(const std::string& v, const std::vector<std::string>& choices) {
  return std::find(choices.begin(), choices.end(), v) != choices.end();
}

// Decimal integer, optional sign, nothing else ("2", "+2", "-1"; not "2.0", "two", "0x2").
std::optional<int64_t> parse_int(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// A finite decimal number ("0.7", "1e-3", "60", "+2"); not ".inf", ".nan" or "fast".
std::optional<double> parse_number(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v))
    return std::nullopt;
  return v;
}

// Empty when `pp_split` fits `pp`, else what is wrong with it (no key name: callers add it).
std::string pp_split_problem(const std::vector<int>& split, int pp) {
  if (split.empty()) return {};  // balanced by cost
  if (split.front() != 0)
    return fmt::format("must start at 0 (the first stage owns block 0), got [{}]",
                       fmt::join(split, ", "));
  for (size_t i = 1; i < split.size(); ++i)
    if (split[i] <= split[i - 1])
      return fmt::format("must be strictly increasing (a stage owns at least one block), got [{}]",
                         fmt::join(split, ", "));
  if (int(split.size()) != pp)
    return fmt::format("has {} entries ([{}]) but pp is {}: give the first block of each stage",
                       split.size(), fmt::join(split, ", "), pp);
  return {};
}

// ---- YAML ----------------------------------------------------------------------------------

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// "'two'", "a list", "a map", "nothing": what a value was, for "got ..." in messages.
std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  return "nothing";
}

// One value in the file: the node, its dotted key and where to point the user.
class YamlValue {
 public:
  YamlValue(const YAML::Node& node, std::string path, const std::string& origin,
            const YAML::Mark& key_mark)
      : node_(node), path_(std::move(path)), origin_(origin), key_mark_(key_mark) {}

  const YAML::Node& node() const { return node_; }
  const std::string& path() const { return path_; }

  // "configs/x.yaml:3" for `node`, or for the key when the node is empty ("tp:" alone: yaml-cpp
  // places the empty value where the next token starts, often the next line) or unplaced.
  std::string where(const YAML::Node& node) const {
    const YAML::Mark mark = node.IsNull() || node.Mark().is_null() ? key_mark_ : node.Mark();
    return mark.is_null() ? origin_ : fmt::format("{}:{}", origin_, mark.line + 1);
  }

  std::string key_where() const {
    return key_mark_.is_null() ? origin_ : fmt::format("{}:{}", origin_, key_mark_.line + 1);
  }

  [[noreturn]] void fail_expected(const std::string& what) const { fail_expected(node_, what); }
  [[noreturn]] void fail_expected(const YAML::Node& node, const std::string& what) const {
    PF_THROW("{}: '{}' must be {}, got {}", where(node), path_, what, describe(node));
  }

  int64_t integer(const IntRule& rule) const { return integer(node_, rule); }
  int64_t integer(const YAML::Node& node, const IntRule& rule) const {
    const auto v = node.IsScalar() ? parse_int(node.Scalar()) : std::nullopt;
    if (!v || !rule.accepts(*v)) fail_expected(node, rule.what);
    return *v;
  }

  double number(const NumberRule& rule) const {
    const auto v = node_.IsScalar() ? parse_number(node_.Scalar()) : std::nullopt;
    if (!v || !rule.accepts(*v)) fail_expected(rule.what);
    return *v;
  }

  std::string text(const char* what) const {
    if (!node_.IsScalar() || node_.Scalar().empty()) fail_expected(what);
    return node_.Scalar();
  }

  std::string choice(const std::vector<std::string>& choices) const {
    const std::string what = fmt::format("one of {}", fmt::join(choices, ", "));
    const std::string v = text(what.c_str());
    if (!is_one_of(v, choices)) fail_expected(what);
    return v;
  }

 private:
  YAML::Node node_;
  std::string path_;
  const std::string& origin_;
  YAML::Mark key_mark_;
};

using KeyReader = std::function<void(const YamlValue&)>;
using KeyTable = std::vector<std::pair<std::string, KeyReader>>;

// Reads each key of `map` (the top level when `section` is empty) with its reader from `keys`;
// unknown and repeated keys are errors.
void read_keys(const YamlValue& map_value, const std::string& section, const KeyTable& keys,
               const std::string& origin) {
  const YAML::Node& map = map_value.node();
  std::vector<std::string> known;
  for (const auto& [name, reader] : keys) known.push_back(name);
  const std::string in = section.empty() ? "at the top level" : fmt::format("in '{}'", section);
  if (map.IsNull()) return;  // "batch:" with every key commented out: all defaults
  if (!map.IsMap())
    PF_THROW("{}: '{}' must be a map of keys ({}), got {}", map_value.where(map), section,
             fmt::join(known, ", "), describe(map));

  std::map<std::string, int> first_line;  // key -> 1-based line of its first appearance
  for (auto it = map.begin(); it != map.end(); ++it) {
    const YAML::Node key = it->first;  // copies: the iterator hands out temporaries
    const YAML::Node value = it->second;
    const YAML::Mark key_mark = key.Mark();
    const std::string where =
        key_mark.is_null() ? origin : fmt::format("{}:{}", origin, key_mark.line + 1);
    if (!key.IsScalar())
      PF_THROW("{}: keys {} must be plain names ({}), got {}", where, in, fmt::join(known, ", "),
               describe(key));
    const std::string& name = key.Scalar();
    const auto entry =
        std::find_if(keys.begin(), keys.end(), [&](const auto& k) { return k.first == name; });
    if (entry == keys.end()) {
      std::string hint;  // one or two typos, fewer for short keys: "tpp" -> "tp"
      const size_t typos = std::clamp<size_t>(name.size() / 3, 1, 2);
      for (const std::string& k : known)
        if (edit_distance(name, k) <= typos) {
          hint = fmt::format(" (did you mean '{}'?)", k);
          break;
        }
      PF_THROW("{}: unknown key '{}' {}{} (known keys: {})", where, name, in, hint,
               fmt::join(known, ", "));
    }
    const int line = key_mark.line + 1;
    if (const auto seen = first_line.find(name); seen != first_line.end())
      PF_THROW("{}: key '{}' {} is given twice (first on line {})", where, name, in, seen->second);
    first_line.emplace(name, line);
    const std::string path = section.empty() ? name : section + "." + name;
    entry->second(YamlValue(value, path, origin, key_mark));
  }
}

RunConfig read_document(const YAML::Node& root, const std::string& origin) {
  RunConfig c;
  const YAML::Mark no_mark = YAML::Mark::null_mark();
  if (!root.IsNull() && !root.IsMap())
    PF_THROW("{}: the top level must be a map of keys like 'model:' and 'parallel:', got {}",
             YamlValue(root, "", origin, no_mark).where(root), describe(root));

  std::string pp_split_where = origin;  // "configs/x.yaml:5" once pp_split is read
  const KeyTable parallel = {
      {"tp", [&](const YamlValue& v) { c.tp = int(v.integer(kPositiveInt)); }},
      {"pp", [&](const YamlValue& v) { c.pp = int(v.integer(kPositiveInt)); }},
      {"transport", [&](const YamlValue& v) { c.transport = v.choice(kTransports); }},
      {"pp_split",
       [&](const YamlValue& v) {
         pp_split_where = v.key_where();
         if (!v.node().IsSequence()) v.fail_expected("a list of block indices like [0, 10, 22]");
         c.pp_split.clear();
         for (const YAML::Node& item : v.node())
           c.pp_split.push_back(int(v.integer(item, kBlockIndex)));
       }},
  };
  const KeyTable batch = {
      {"max_batch_tokens",
       [&](const YamlValue& v) { c.batch.max_batch_tokens = v.integer(kPositiveInt64); }},
      {"max_sequences",
       [&](const YamlValue& v) { c.batch.max_sequences = int(v.integer(kPositiveInt)); }},
      {"kv_cache_tokens",
       [&](const YamlValue& v) { c.batch.kv_cache_tokens = v.integer(kPositiveInt64); }},
      {"page_size", [&](const YamlValue& v) { c.batch.page_size = v.integer(kPositiveInt64); }},
      {"micro_batches",
       [&](const YamlValue& v) { c.batch.micro_batches = int(v.integer(kNonNegativeInt)); }},
  };
  const KeyTable sampling = {
      {"temperature",
       [&](const YamlValue& v) { c.sampling.temperature = float(v.number(kNonNegativeNumber)); }},
      {"top_k", [&](const YamlValue& v) { c.sampling.top_k = int(v.integer(kNonNegativeInt)); }},
      {"top_p", [&](const YamlValue& v) { c.sampling.top_p = float(v.number(kProbability)); }},
      {"seed",
       [&](const YamlValue& v) {
         c.sampling.seed = uint64_t(v.integer({0, kInt64Max, "a non-negative integer"}));
       }},
      {"max_tokens",
       [&](const YamlValue& v) { c.sampling.max_tokens = int(v.integer(kPositiveInt)); }},
  };
  const KeyTable timeouts = {
      {"collective_seconds",
       [&](const YamlValue& v) { c.timeouts.collective_seconds = v.number(kSeconds); }},
      {"transport_seconds",
       [&](const YamlValue& v) { c.timeouts.transport_seconds = v.number(kSeconds); }},
  };
  const KeyTable serve = {
      {"host", [&](const YamlValue& v) { c.serve.host = v.text("a host name or address"); }},
      {"port", [&](const YamlValue& v) { c.serve.port = int(v.integer(kPort)); }},
  };
  const auto section = [&origin](const std::string& name, const KeyTable& keys) {
    return [&origin, name, keys = &keys](const YamlValue& v) { read_keys(v, name, *keys, origin); };
  };
  const KeyTable top = {
      {"model",
       [&](const YamlValue& v) {
         c.model = v.text("a model path (HF folder, .gguf file or synthetic:CONFIG.json)");
       }},
      {"parallel", section("parallel", parallel)},
      {"backend", [&](const YamlValue& v) { c.backend = v.choice(kBackends); }},
      {"dtype", [&](const YamlValue& v) { c.dtype = v.choice(kDtypes); }},
      {"threads", [&](const YamlValue& v) { c.threads = int(v.integer(kNonNegativeInt)); }},
      {"fusion_plan",
       [&](const YamlValue& v) { c.fusion_plan = v.text("a fusion plan file (parafuse plan)"); }},
      {"batch", section("batch", batch)},
      {"sampling", section("sampling", sampling)},
      {"timeouts", section("timeouts", timeouts)},
      {"serve", section("serve", serve)},
  };
  read_keys(YamlValue(root, "", origin, no_mark), "", top, origin);

  // pp_split against pp is a whole-file check; point at pp_split.
  if (const std::string problem = pp_split_problem(c.pp_split, c.pp); !problem.empty())
    PF_THROW("{}: 'parallel.pp_split' {}", pp_split_where, problem);
  c.source = origin;
  return c;
}

// ---- flags ---------------------------------------------------------------------------------

CLI::Validator int_flag(const IntRule& rule) {
  return CLI::Validator(
      [rule](std::string& text) -> std::string {
        const auto v = parse_int(text);
        if (v && rule.accepts(*v)) return {};
        return fmt::format("must be {}, got '{}'", rule.what, text);
      },
      "");
}

CLI::Validator number_flag(const NumberRule& rule) {
  return CLI::Validator(
      [rule](std::string& text) -> std::string {
        const auto v = parse_number(text);
        if (v && rule.accepts(*v)) return {};
        return fmt::format("must be {}, got '{}'", rule.what, text);
      },
      "");
}

template <typename T>
std::string shown(const T& v) {
  return fmt::format("{}", v);
}

}  // namespace

RunConfig parse_run_config(const std::string& yaml_text, const std::string& origin) {
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(yaml_text);
    if (documents.empty()) {  // empty, or only comments
      RunConfig c;
      c.source = origin;
      return c;
    }
    PF_CHECK(documents.size() == 1,
             "{}: holds {} YAML documents (separated by '---'); a run config is one document",
             origin, documents.size());
    RunConfig c = read_document(documents.front(), origin);
    check_run_config(c);
    return c;
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) PF_THROW("{}: invalid YAML: {}", origin, e.msg);
    PF_THROW("{}:{}: invalid YAML (column {}): {}", origin, e.mark.line + 1, e.mark.column + 1,
             e.msg);
  }
}

RunConfig load_run_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  PF_CHECK(fs::exists(path, ec), "config file '{}' does not exist", path);
  PF_CHECK(!fs::is_directory(path, ec), "config file '{}' is a directory, not a YAML file", path);
  std::ifstream in(path, std::ios::binary);
  PF_CHECK(in.good(), "cannot read config file '{}'", path);
  std::ostringstream text;
  text << in.rdbuf();
  PF_CHECK(!in.bad(), "cannot read config file '{}'", path);
  return parse_run_config(text.str(), path);
}

void check_run_config(const RunConfig& c) {
  const auto check_int = [](int64_t v, const char* key, const IntRule& rule) {
    PF_CHECK(rule.accepts(v), "'{}' must be {}, got {}", key, rule.what, v);
  };
  const auto check_number = [](double v, const char* key, const NumberRule& rule) {
    PF_CHECK(std::isfinite(v) && rule.accepts(v), "'{}' must be {}, got {}", key, rule.what, v);
  };
  const auto check_choice = [](const std::string& v, const char* key,
                               const std::vector<std::string>& choices) {
    PF_CHECK(is_one_of(v, choices), "'{}' must be one of {}, got '{}'", key,
             fmt::join(choices, ", "), v);
  };
  check_int(c.tp, "parallel.tp", kPositiveInt);
  check_int(c.pp, "parallel.pp", kPositiveInt);
  check_choice(c.transport, "parallel.transport", kTransports);
  for (int block : c.pp_split) check_int(block, "parallel.pp_split", kBlockIndex);
  const std::string problem = pp_split_problem(c.pp_split, c.pp);
  PF_CHECK(problem.empty(), "pp_split (--pp-split or parallel.pp_split) {}", problem);
  check_choice(c.backend, "backend", kBackends);
  check_choice(c.dtype, "dtype", kDtypes);
  check_int(c.threads, "threads", kNonNegativeInt);
  check_int(c.batch.max_batch_tokens, "batch.max_batch_tokens", kPositiveInt64);
  check_int(c.batch.max_sequences, "batch.max_sequences", kPositiveInt);
  check_int(c.batch.kv_cache_tokens, "batch.kv_cache_tokens", kPositiveInt64);
  check_int(c.batch.page_size, "batch.page_size", kPositiveInt64);
  check_int(c.batch.micro_batches, "batch.micro_batches", kNonNegativeInt);
  check_number(c.sampling.temperature, "sampling.temperature", kNonNegativeNumber);
  check_int(c.sampling.top_k, "sampling.top_k", kNonNegativeInt);
  check_number(c.sampling.top_p, "sampling.top_p", kProbability);
  check_int(c.sampling.max_tokens, "sampling.max_tokens", kPositiveInt);
  check_number(c.timeouts.collective_seconds, "timeouts.collective_seconds", kSeconds);
  check_number(c.timeouts.transport_seconds, "timeouts.transport_seconds", kSeconds);
  PF_CHECK(!c.serve.host.empty(), "'serve.host' must be a host name or address, got nothing");
  check_int(c.serve.port, "serve.port", kPort);
}

std::vector<int> parse_pp_split_list(const std::string& text) {
  std::vector<int> split;
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const size_t first = item.find_first_not_of(' ');
    const size_t last = item.find_last_not_of(' ');
    const std::string trimmed =
        first == std::string::npos ? "" : item.substr(first, last - first + 1);
    const auto v = parse_int(trimmed);
    PF_CHECK(v && kBlockIndex.accepts(*v),
             "--pp-split: '{}' is not a block index (expected comma-separated first blocks of "
             "each stage, like 0,10,22)",
             trimmed);
    split.push_back(int(*v));
  }
  PF_CHECK(!split.empty() && text.back() != ',',
           "--pp-split: '{}' is not a list of block indices (expected e.g. 0,10,22)", text);
  return split;
}

void add_run_config_options(CLI::App& cmd, RunConfigOverrides& o) {
  const RunConfig d;  // the defaults, shown in --help
  cmd.add_option("--config", o.config_path,
                 "YAML run config (see configs/README.md); the flags below override its keys. "
                 "Without it, every key has its default")
      ->type_name("FILE");
  cmd.add_option("-m,--model", o.model,
                 "Model: an HF folder (config.json + safetensors), a .gguf file, or "
                 "synthetic:CONFIG.json[@SEED] for seeded random weights. Required here or as "
                 "'model:' in --config")
      ->type_name("MODEL");
  cmd.add_option("--tp", o.tp, "Tensor-parallel ranks per pipeline stage (parallel.tp)")
      ->default_str(shown(d.tp))
      ->check(int_flag(kPositiveInt));
  cmd.add_option("--pp", o.pp, "Pipeline stages (parallel.pp); the job needs tp x pp ranks")
      ->default_str(shown(d.pp))
      ->check(int_flag(kPositiveInt));
  cmd.add_option("--transport", o.transport,
                 "Stage-to-stage activation transport (parallel.transport)")
      ->default_str(d.transport)
      ->check(CLI::IsMember(kTransports));
  cmd.add_option_function<std::string>(
         "--pp-split", [&o](const std::string& text) { o.pp_split = parse_pp_split_list(text); },
         "First block of each pipeline stage, comma-separated, starting at 0, e.g. 0,10,22 for "
         "--pp 3 (parallel.pp_split). Default: stages balanced by block cost")
      ->type_name("LIST")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              parse_pp_split_list(text);
              return {};
            } catch (const Error& e) {
              return e.what();
            }
          },
          ""));
  cmd.add_option("--backend", o.backend, "Compute backend (backend)")
      ->default_str(d.backend)
      ->check(CLI::IsMember(kBackends));
  cmd.add_option("--dtype", o.dtype,
                 "Compute type of weights and activations (dtype); auto: the backend's choice")
      ->default_str(d.dtype)
      ->check(CLI::IsMember(kDtypes));
  cmd.add_option("--threads", o.threads,
                 "CPU threads for BLAS per rank (threads); 0: all cores for a single process, 1 "
                 "per rank under mpirun/srun")
      ->default_str(shown(d.threads))
      ->check(int_flag(kNonNegativeInt));
  cmd.add_option("--fusion-plan", o.fusion_plan,
                 "Run the unfused model in parallel-FFN mode as this fusion plan says (fusion_plan): "
                 "each group's FFNs read the group's input, one all-reduce per group");
  cmd.add_option("--kv-cache-tokens", o.kv_cache_tokens,
                 "KV cache capacity per rank in tokens (batch.kv_cache_tokens)")
      ->default_str(shown(d.batch.kv_cache_tokens))
      ->check(int_flag(kPositiveInt64));
  cmd.add_option("--max-batch-tokens", o.max_batch_tokens,
                 "Most tokens in one forward pass; prompts are prefilled in chunks of this "
                 "(batch.max_batch_tokens)")
      ->default_str(shown(d.batch.max_batch_tokens))
      ->check(int_flag(kPositiveInt64));
  cmd.add_option("--micro-batches", o.micro_batches,
                 "Pipeline micro-batches in flight (batch.micro_batches); 0: auto")
      ->default_str(shown(d.batch.micro_batches))
      ->check(int_flag(kNonNegativeInt));
  cmd.add_option("--collective-timeout", o.collective_timeout,
                 "Seconds one collective (all-reduce, all-gather, broadcast, barrier) may take "
                 "before the job fails (timeouts.collective_seconds)")
      ->type_name("SECONDS")
      ->default_str(shown(d.timeouts.collective_seconds))
      ->check(number_flag(kSeconds));
  cmd.add_option("--transport-timeout", o.transport_timeout,
                 "Seconds one stage-to-stage send or receive may take before the job fails "
                 "(timeouts.transport_seconds)")
      ->type_name("SECONDS")
      ->default_str(shown(d.timeouts.transport_seconds))
      ->check(number_flag(kSeconds));
}

RunConfig resolve_run_config(const RunConfigOverrides& o) {
  RunConfig c = o.config_path ? load_run_config(*o.config_path) : RunConfig{};
  bool overridden = false;
  const auto apply = [&overridden](const auto& flag, auto& field) {
    if (flag) {
      field = *flag;
      overridden = true;
    }
  };
  apply(o.model, c.model);
  apply(o.tp, c.tp);
  apply(o.pp, c.pp);
  apply(o.transport, c.transport);
  apply(o.pp_split, c.pp_split);
  apply(o.backend, c.backend);
  apply(o.dtype, c.dtype);
  apply(o.threads, c.threads);
  apply(o.fusion_plan, c.fusion_plan);
  apply(o.kv_cache_tokens, c.batch.kv_cache_tokens);
  apply(o.max_batch_tokens, c.batch.max_batch_tokens);
  apply(o.micro_batches, c.batch.micro_batches);
  apply(o.collective_timeout, c.timeouts.collective_seconds);
  apply(o.transport_timeout, c.timeouts.transport_seconds);
  if (!o.config_path)
    c.source = "command line";
  else if (overridden)
    c.source = *o.config_path + " + command line";
  PF_CHECK(!c.model.empty(), "no model: pass --model or set 'model:' in the config");
  check_run_config(c);
  return c;
}

}  // namespace parafuse

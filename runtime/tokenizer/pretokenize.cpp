// Pre-tokenizers: the regex sequences that cut text into pieces before BPE, run with PCRE2.
//
// PCRE2 is compiled with PCRE2_UTF | PCRE2_UCP so \s, \p{L} and \p{N} follow Unicode
// properties as the HF tokenizers library (Oniguruma) and llama.cpp do. Subjects are handed
// to pcre2_match with PCRE2_NO_UTF_CHECK (so a match does not rescan the whole text, which
// would make splitting quadratic), which is only safe on well-formed UTF-8: split() validates
// first and turns every ill-formed byte into a piece of its own that bypasses the regexes.
//
// The sets below are llama.cpp's (llama-vocab.cpp, llm_tokenizer_bpe), keyed by the GGUF
// `tokenizer.ggml.pre` value; from_hf_json maps an HF pre_tokenizer onto the same names.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse::tokenizer_detail {
namespace {

// GPT-2's regex as HF ByteLevel(use_regex=true) writes it. llama.cpp drops the final "|\s+",
// which changes nothing here: text no alternative matches becomes a piece of its own anyway.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama-3 (tiktoken cl100k style): case-insensitive contractions, numbers in groups of <= 3.
constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreTokenizerSpec {
  const char* name;
  std::vector<const char*> stages;
};

const std::vector<PreTokenizerSpec>& specs() {
  static const std::vector<PreTokenizerSpec> all = {
      // SmolLM2: HF Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)].
      {"smollm", {R"(\p{N})", kGpt2}},
      {"llama-bpe", {kLlama3}},
      {"llama3", {kLlama3}},
      {"llama-v3", {kLlama3}},
      {"gpt2", {kGpt2}},
      // llama.cpp's fallback for a BPE vocabulary whose pre name is "default".
      {"default", {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
  };
  return all;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(code);
  }
  return reinterpret_cast<const char*>(buffer);
}

// Per-call matching state: match data and a JIT stack larger than PCRE2's 32 KiB default.
struct MatchState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_data* data = nullptr;

  MatchState() {
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    data = pcre2_match_data_create(4, nullptr);
    PF_CHECK(context != nullptr && jit_stack != nullptr && data != nullptr,
             "tokenizer: out of memory creating PCRE2 match state");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    pcre2_match_data_free(data);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};

}  // namespace

struct PreTokenizer::Regex {
  std::string pattern;
  pcre2_code* code = nullptr;

  explicit Regex(const char* text) : pattern(text) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                         PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    PF_CHECK(code != nullptr, "tokenizer: cannot compile pre-tokenizer regex '{}' at {}: {}",
             pattern, offset, pcre2_message(error));
    // JIT is an optimisation only: where it is unavailable pcre2_match interprets.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits `piece` (well-formed UTF-8) into matches and the gaps between them.
  void split(std::string_view piece, MatchState& state, std::vector<std::string_view>& out) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
    size_t offset = 0;
    size_t last = 0;
    while (offset < piece.size()) {
      const int rc = pcre2_match(code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK,
                                 state.data, state.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      PF_CHECK(rc > 0, "tokenizer: pre-tokenizer regex '{}' failed on a {}-byte piece: {}", pattern,
               piece.size(), pcre2_message(rc));
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
      const size_t begin = ovector[0];
      const size_t end = ovector[1];
      if (end <= begin) {
        // None of our patterns matches empty text; step over one character if one ever does.
        const size_t len = utf8_valid_length(piece, begin);
        offset = begin + (len == 0 ? 1 : len);
        continue;
      }
      if (begin > last) out.push_back(piece.substr(last, begin - last));
      out.push_back(piece.substr(begin, end - begin));
      last = offset = end;
    }
    if (last < piece.size()) out.push_back(piece.substr(last));
  }
};

PreTokenizer::PreTokenizer(const std::string& name) : name_(name) {
  for (const auto& spec : specs()) {
    if (name == spec.name) {
      for (const char* pattern : spec.stages) stages_.push_back(std::make_unique<Regex>(pattern));
      return;
    }
  }
  PF_THROW("tokenizer: unsupported pre-tokenizer '{}' (supported: {})", name, supported_names());
}

PreTokenizer::~PreTokenizer() = default;

std::string PreTokenizer::supported_names() {
  std::string names;
  for (const auto& spec : specs()) {
    if (!names.empty()) names += ", ";
    names += spec.name;
  }
  return names;
}

std::string_view PreTokenizer::llama3_pattern() {
  return kLlama3;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  MatchState state;
  std::vector<std::string_view> current;
  std::vector<std::string_view> next;
  auto run_stages = [&](std::string_view run) {
    current.assign(1, run);
    for (const auto& stage : stages_) {
      next.clear();
      for (std::string_view piece : current) stage->split(piece, state, next);
      std::swap(current, next);
    }
    pieces.insert(pieces.end(), current.begin(), current.end());
  };

  size_t run_begin = 0;
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = utf8_valid_length(text, i);
    if (len != 0) {
      i += len;
      continue;
    }
    if (i > run_begin) run_stages(text.substr(run_begin, i - run_begin));
    pieces.push_back(text.substr(i, 1));  // an ill-formed byte: its own byte-level piece
    run_begin = ++i;
  }
  if (i > run_begin) run_stages(text.substr(run_begin, i - run_begin));
}

}  // namespace parafuse::tokenizer_detail

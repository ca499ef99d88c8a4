#include "launcher/text_input.h"

#include <algorithm>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/session.h"

namespace parafuse {

void TextInput::add_options(CLI::App& cmd, const std::string& text_help, bool required,
                            const std::string& tokens_flag, const std::string& tokens_help,
                            bool zero_means_all) {
  tokens_flag_ = tokens_flag;
  auto* text = cmd.add_option("--text", path, text_help)->check(CLI::ExistingFile);
  if (required) text->required();
  cmd.add_option(tokens_flag, max_tokens, tokens_help)
      ->capture_default_str()
      ->check(int_flag(zero_means_all ? kNonNegativeInt64 : kPositiveInt64));
}

void TextInput::size_kv_cache(RunConfig& run) const {
  if (max_tokens > 0)
    run.batch.kv_cache_tokens = std::max(run.batch.kv_cache_tokens, max_tokens + 16);
}

std::vector<int32_t> TextInput::tokens(const Session& s, const std::string& command) const {
  PF_CHECK(s.files.tokenizer.has_value(),
           "model '{}' has no tokenizer (no tokenizer.json beside config.json): parafuse {} reads "
           "its --text with the model's tokenizer",
           s.files.path, command);
  std::vector<int32_t> ids = tokenize_text_file(*s.files.tokenizer, path, max_tokens);
  PF_CHECK(ids.size() >= 2, "'{}' gives {} token(s): parafuse {} needs at least 2", path,
           ids.size(), command);
  const int64_t limit =
      std::min(s.run.batch.kv_cache_tokens, s.files.config.max_position_embeddings);
  PF_CHECK(int64_t(ids.size()) <= limit,
           "{} tokens of '{}' do not fit (context {}, KV cache {} tokens): pass a smaller {}",
           ids.size(), path, s.files.config.max_position_embeddings, s.run.batch.kv_cache_tokens,
           tokens_flag_);
  return ids;
}

}  // namespace parafuse

// A text file a command scores or calibrates on: eval-ppl (perplexity), analyze (calibration),
// plan (held-out quality), fuse (quality before and after). Its flags, the KV cache it needs
// (the text is one sequence) and its token ids, checked the same way for all four.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "launcher/run_config.h"

namespace parafuse {

struct Session;

struct TextInput {
  explicit TextInput(int64_t default_max_tokens = 0) : max_tokens(default_max_tokens) {}
  std::string path;
  int64_t max_tokens = 0;  // read at most this many tokens from the start; 0: all

  // `--text FILE` (required or not) and `tokens_flag N` (N >= 1, or >= 0 when 0 means "all").
  void add_options(CLI::App& cmd, const std::string& text_help, bool required,
                   const std::string& tokens_flag, const std::string& tokens_help,
                   bool zero_means_all = false);
  bool given() const { return !path.empty(); }
  // Grows the KV cache so one sequence of max_tokens fits (no-op when max_tokens is 0).
  void size_kv_cache(RunConfig& run) const;
  // The text as ids through the model's tokenizer (BOS first where the model adds one): at
  // least 2, within the model's context and the KV cache; errors name `command`.
  std::vector<int32_t> tokens(const Session& s, const std::string& command) const;

 private:
  std::string tokens_flag_ = "--tokens";
};

}  // namespace parafuse

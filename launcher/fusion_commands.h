// What `parafuse analyze` and `parafuse plan` share: both observe or score whole hidden states
// and logits on one process, so both refuse a multi-rank launch with the same message, and
// both read a text file through the model's tokenizer with the same checks.
#pragma once

#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "launcher/session.h"
#include "parallel/process_grid.h"
#include "runtime/fusion/analysis.h"

namespace parafuse {

// Throws (inside open_session's check, so an agreed error) unless this is a lone rank.
inline void require_single_rank(const Session& s, const char* command) {
  const int ranks = s.grid ? s.grid->world_size() : 1;
  PF_CHECK(ranks == 1 && s.run.tp == 1 && s.run.pp == 1,
           "parafuse {} runs on a single rank (tp=1, pp=1: it observes whole hidden states), but "
           "was launched with {} ranks, tp={}, pp={}: run it without mpirun/srun",
           command, ranks, s.run.tp, s.run.pp);
}

// The text file as ids for `command` (at least 2, within the model's context).
inline std::vector<int32_t> text_tokens(const Session& s, const std::string& path,
                                        int64_t max_tokens, const char* command) {
  PF_CHECK(s.files.tokenizer.has_value(),
           "model '{}' has no tokenizer (no tokenizer.json beside config.json): parafuse {} reads "
           "its --text with the model's tokenizer",
           s.files.path, command);
  std::vector<int32_t> ids = tokenize_text_file(*s.files.tokenizer, path, max_tokens);
  PF_CHECK(ids.size() >= 2, "'{}' gives {} token(s): parafuse {} needs at least 2", path,
           ids.size(), command);
  PF_CHECK(int64_t(ids.size()) <= s.files.config.max_position_embeddings,
           "{} tokens exceed the model's context of {}: pass a smaller --tokens", ids.size(),
           s.files.config.max_position_embeddings);
  return ids;
}

}  // namespace parafuse

// Text files as token ids: the one reader every scoring command shares.
#include "runtime/config/read_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace parafuse {

std::vector<int32_t> tokenize_text_file(const Tokenizer& tokenizer, const std::string& path,
                                        int64_t max_tokens) {
  std::vector<int32_t> ids;
  if (tokenizer.add_bos()) ids.push_back(int32_t(tokenizer.bos_id()));
  const std::vector<int32_t> body = tokenizer.encode(read_file(path, "text file"), false);
  ids.insert(ids.end(), body.begin(), body.end());
  if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));
  return ids;
}

}  // namespace parafuse

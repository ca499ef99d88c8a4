// Byte-level BPE: vocabulary checks, encode (special tokens, pre-tokenizer, merges), decode.
//
// Merges run on token ids, not strings: each byte of a piece starts as the id of its one-char
// token, and a min-heap ordered by (merge rank, position) merges the best adjacent pair until
// none is left, as HF tokenizers' BPE::merge_word and llama.cpp's llm_tokenizer_bpe do. The
// heap keeps a long piece (a 100 kB run of one letter) at O(n log n); a per-piece cache makes
// repeated words cheap. The vocabulary is checked when the tokenizer is built, so encode()
// never throws for a bad file, only decode() for an id outside the vocabulary.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernels/core/error.h"
#include "runtime/tokenizer/tokenizer_impl.h"

namespace parafuse {
namespace {

constexpr int kTypeControl = 3;
constexpr int kTypeUserDefined = 4;
constexpr size_t kCacheMaxPieceBytes = 256;
constexpr size_t kCacheMaxEntries = 1 << 16;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// The raw bytes a byte-level token string stands for. Code points outside the GPT-2 table
// (possible only in a foreign vocabulary) and ill-formed bytes are kept as they are.
std::string unmap_bytes(std::string_view token) {
  using namespace tokenizer_detail;
  std::string out;
  size_t i = 0;
  while (i < token.size()) {
    const size_t len = utf8_valid_length(token, i);
    if (len == 0) {
      out += token[i++];
      continue;
    }
    const int byte = unicode_to_byte(utf8_decode(token, i, len));
    if (byte >= 0) {
      out += static_cast<char>(byte);
    } else {
      out.append(token.substr(i, len));
    }
    i += len;
  }
  return out;
}

}  // namespace

Tokenizer::Impl::Impl(TokenizerData d) : data(std::move(d)) {
  const auto& tokens = data.tokens;
  const size_t n = tokens.size();
  PF_CHECK(n > 0, "tokenizer: the vocabulary is empty");
  PF_CHECK(n <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
           "tokenizer: vocabulary of {} tokens is too large", n);
  PF_CHECK(data.token_types.empty() || data.token_types.size() == n,
           "tokenizer: {} token types for {} tokens", data.token_types.size(), n);
  auto check_id = [n](int id, const char* what) {
    PF_CHECK(id >= -1 && id < static_cast<int64_t>(n),
             "tokenizer: {} id {} is outside the vocabulary of {} tokens", what, id, n);
  };
  check_id(data.bos_id, "BOS");
  check_id(data.eos_id, "EOS");
  for (int id : data.extra_eos_ids) {
    PF_CHECK(id >= 0 && id < static_cast<int64_t>(n),
             "tokenizer: end-of-generation id {} is outside the vocabulary of {} tokens", id, n);
  }

  token_to_id.reserve(n);
  token_bytes.resize(n);
  is_control.assign(n, false);
  for (size_t id = 0; id < n; ++id) {
    token_to_id.emplace(tokens[id], static_cast<int32_t>(id));
    const int type = data.token_types.empty() ? 1 : data.token_types[id];
    is_control[id] = type == kTypeControl;
    const bool literal = type == kTypeControl || type == kTypeUserDefined;
    // Control and user-defined tokens are stored as their text, not byte-mapped.
    token_bytes[id] = literal ? tokens[id] : unmap_bytes(tokens[id]);
    if (literal && !tokens[id].empty()) {
      special_by_first_byte[static_cast<unsigned char>(tokens[id][0])].push_back(
          static_cast<int32_t>(id));
    }
  }
  for (auto& ids : special_by_first_byte) {
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int32_t a, int32_t b) { return tokens[a].size() > tokens[b].size(); });
  }

  // Vocabularies may lack bytes never seen in training (SmolLM2 has no token for 0x04 or for
  // 0xC0, 0xF5..0xFF, which well-formed UTF-8 never holds); such bytes are dropped when
  // encoding, as HF's BPE without an unk token and llama.cpp do.
  const auto& byte_chars = tokenizer_detail::byte_to_unicode();
  int known_bytes = 0;
  for (int b = 0; b < 256; ++b) {
    auto it = token_to_id.find(byte_chars[b]);
    byte_token[b] = it == token_to_id.end() ? -1 : it->second;
    known_bytes += it == token_to_id.end() ? 0 : 1;
  }
  PF_CHECK(known_bytes > 0,
           "tokenizer: the vocabulary has no byte-level token (such as 'a' or 'Ġ'); not a "
           "byte-level BPE vocabulary");

  merge_rank.reserve(data.merges.size());
  for (size_t rank = 0; rank < data.merges.size(); ++rank) {
    const std::string& merge = data.merges[rank];
    const size_t space = merge.find(' ');
    PF_CHECK(space != std::string::npos && space > 0 && space + 1 < merge.size() &&
                 merge.find(' ', space + 1) == std::string::npos,
             "tokenizer: merge {} '{}' is not of the form 'left right'", rank, merge);
    const std::string left = merge.substr(0, space);
    const std::string right = merge.substr(space + 1);
    auto find = [&](const std::string& s) {
      auto it = token_to_id.find(s);
      PF_CHECK(it != token_to_id.end(), "tokenizer: merge {} '{}': '{}' is not in the vocabulary",
               rank, merge, s);
      return it->second;
    };
    const int32_t left_id = find(left);
    const int32_t right_id = find(right);
    const int32_t merged = find(left + right);
    merge_rank.emplace(pair_key(left_id, right_id),
                       std::make_pair(static_cast<int32_t>(rank), merged));
  }

  pre = std::make_unique<tokenizer_detail::PreTokenizer>(data.pre);
  chat = tokenizer_detail::detect_chat_template(data.chat_template,
                                                token_to_id.count("<|im_start|>") != 0,
                                                token_to_id.count("<|start_header_id|>") != 0);
}

void Tokenizer::Impl::merge(std::vector<int32_t>& symbols) const {
  const int n = static_cast<int>(symbols.size());
  if (n < 2) return;
  struct Candidate {
    int32_t rank;
    int left;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::vector<int> next(n);
  std::vector<int> prev(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int32_t a = symbols[left];
    const int32_t b = symbols[next[left]];
    auto it = merge_rank.find(pair_key(a, b));
    if (it != merge_rank.end()) heap.push({it->second.first, left, a, b, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int left = c.left;
    const int right = next[left];
    // Stale entries: a side has been merged since this pair was queued.
    if (!alive[left] || right < 0 || symbols[left] != c.left_id || symbols[right] != c.right_id) {
      continue;
    }
    symbols[left] = c.merged_id;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    push(prev[left]);
    push(left);
  }
  size_t out = 0;
  for (int i = 0; i >= 0; i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  const bool cacheable = piece.size() <= kCacheMaxPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(std::string(piece));
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  bool whole = false;
  if (data.ignore_merges) {
    const auto& byte_chars = tokenizer_detail::byte_to_unicode();
    std::string mapped;
    for (char c : piece) mapped += byte_chars[static_cast<unsigned char>(c)];
    auto it = token_to_id.find(mapped);
    if (it != token_to_id.end()) {
      symbols.push_back(it->second);
      whole = true;
    }
  }
  if (!whole) {
    symbols.reserve(piece.size());
    for (char c : piece) {
      const int32_t id = byte_token[static_cast<unsigned char>(c)];
      if (id >= 0) symbols.push_back(id);
    }
    merge(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() >= kCacheMaxEntries) cache.clear();
    cache.emplace(std::string(piece), std::move(symbols));
  }
}

Tokenizer::Tokenizer(TokenizerData data) : impl_(std::make_unique<Impl>(std::move(data))) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  std::vector<std::string_view> pieces;
  auto encode_plain = [&](std::string_view plain) {
    if (plain.empty()) return;
    pieces.clear();
    impl_->pre->split(plain, pieces);
    for (std::string_view piece : pieces) impl_->encode_piece(piece, out);
  };
  if (!parse_special) {
    encode_plain(text);
    return out;
  }
  // Special tokens first: leftmost, longest match wins, as HF's added-vocabulary matcher does.
  size_t plain_begin = 0;
  size_t i = 0;
  while (i < text.size()) {
    int32_t hit = -1;
    for (int32_t id : impl_->special_by_first_byte[static_cast<unsigned char>(text[i])]) {
      const std::string& s = impl_->data.tokens[id];
      if (text.compare(i, s.size(), s) == 0) {
        hit = id;
        break;
      }
    }
    if (hit < 0) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain_begin, i - plain_begin));
    out.push_back(hit);
    i += impl_->data.tokens[hit].size();
    plain_begin = i;
  }
  encode_plain(text.substr(plain_begin));
  return out;
}

std::vector<int32_t> Tokenizer::encode_with_bos(std::string_view text) const {
  std::vector<int32_t> ids = encode(text);
  const int bos = impl_->data.bos_id;
  if (impl_->data.add_bos && bos >= 0 && (ids.empty() || ids.front() != bos)) {
    ids.insert(ids.begin(), bos);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_control(id)) continue;
    out += token_bytes(id);
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  PF_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id {} is outside the vocabulary of {}",
           id, vocab_size());
  return impl_->token_bytes[id];
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->is_control[id];
}

int Tokenizer::vocab_size() const {
  return static_cast<int>(impl_->data.tokens.size());
}
int Tokenizer::bos_id() const {
  return impl_->data.bos_id;
}
bool Tokenizer::add_bos() const {
  return impl_->data.add_bos;
}

bool Tokenizer::is_eos(int32_t id) const {
  if (id < 0) return false;
  if (id == impl_->data.eos_id) return true;
  const auto& extra = impl_->data.extra_eos_ids;
  return std::find(extra.begin(), extra.end(), id) != extra.end();
}

std::vector<int32_t> Tokenizer::eos_ids() const {
  std::vector<int32_t> ids;
  if (impl_->data.eos_id >= 0) ids.push_back(impl_->data.eos_id);
  for (int id : impl_->data.extra_eos_ids) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_bytes(id);
  // Hold back a cut-off sequence at the end (at most 3 bytes, starting at a lead byte).
  size_t hold = pending_.size();
  for (size_t j = pending_.size() > 3 ? pending_.size() - 3 : 0; j < pending_.size(); ++j) {
    if (tokenizer_detail::utf8_incomplete_prefix(pending_, j) == pending_.size() - j) {
      hold = j;
      break;
    }
  }
  std::string out = tokenizer_detail::utf8_sanitize(std::string_view(pending_).substr(0, hold));
  pending_.erase(0, hold);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = tokenizer_detail::utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace parafuse

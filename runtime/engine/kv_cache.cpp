#include "runtime/engine/kv_cache.h"

#include "kernels/core/error.h"

namespace parafuse {

PagedKvCache::PagedKvCache(Backend& backend, const std::vector<int64_t>& kv_widths,
                           int64_t max_tokens, int64_t page_size)
    : page_size_(page_size),
      n_pages_((max_tokens + page_size - 1) / page_size),
      padding_page_(int32_t(n_pages_)) {
  PF_CHECK(page_size > 0 && max_tokens > 0, "KV cache needs positive sizes (tokens {}, page {})",
           max_tokens, page_size);
  const int64_t slots = slot_count();
  for (int64_t width : kv_widths) {
    for (auto* pool : {&keys_, &values_}) {
      buffers_.emplace_back();
      pool->push_back(backend.alloc_tensor(buffers_.back(), backend.activation_dtype(), slots, width));
    }
  }
  free_pages_.reserve(size_t(n_pages_));
  for (int64_t p = n_pages_ - 1; p >= 0; --p) free_pages_.push_back(int32_t(p));
}

size_t PagedKvCache::bytes() const {
  size_t total = 0;
  for (const auto& b : buffers_) total += b.bytes();
  return total;
}

void PagedKvCache::add(int seq) {
  PF_CHECK(!seqs_.count(seq), "sequence {} is already in the KV cache", seq);
  seqs_[seq] = Seq{};
}

void PagedKvCache::remove(int seq) {
  auto it = seqs_.find(seq);
  PF_CHECK(it != seqs_.end(), "sequence {} is not in the KV cache", seq);
  for (int32_t p : it->second.pages) free_pages_.push_back(p);
  seqs_.erase(it);
}

int64_t PagedKvCache::length(int seq) const {
  auto it = seqs_.find(seq);
  PF_CHECK(it != seqs_.end(), "sequence {} is not in the KV cache", seq);
  return it->second.length;
}

const int32_t* PagedKvCache::reserve(int seq, int64_t n_new) {
  auto it = seqs_.find(seq);
  PF_CHECK(it != seqs_.end(), "sequence {} is not in the KV cache", seq);
  Seq& s = it->second;
  const int64_t needed = (s.length + n_new + page_size_ - 1) / page_size_;
  const int64_t more = needed - int64_t(s.pages.size());
  PF_CHECK(more <= int64_t(free_pages_.size()),
           "KV cache full: sequence {} needs {} more pages of {} tokens but {} of {} are free "
           "(raise kv_cache_tokens, now {})",
           seq, more, page_size_, free_pages_.size(), n_pages_, capacity_tokens());
  for (int64_t i = 0; i < more; ++i) {
    s.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
  return s.pages.data();
}

void PagedKvCache::commit(int seq, int64_t n_new) {
  Seq& s = seqs_.at(seq);
  PF_CHECK((s.length + n_new + page_size_ - 1) / page_size_ <= int64_t(s.pages.size()),
           "commit of {} tokens to sequence {} without reserve", n_new, seq);
  s.length += n_new;
}


}  // namespace parafuse

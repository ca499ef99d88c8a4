#include "runtime/engine/kv_cache.h"

#include <fmt/ranges.h>

#include "kernels/core/error.h"

namespace parafuse {

DType auto_kv_cache_dtype(const Backend& backend, const WeightSource& weights) {
  const DType activations = backend.activation_dtype();
  if (activations != DType::F32 || !backend.supports_kv_cache(DType::F16)) return activations;
  bool narrower = false;
  for (const auto& [name, info] : weights.tensors()) {
    if (info.dtype == DType::F8_E4M3) return activations;  // any FP8 weight: the reference path
    narrower = narrower || (info.shape.size() == 2 && info.dtype != DType::F32 &&
                            info.dtype != DType::I32 && backend.supports_weight(info.dtype));
  }
  return narrower ? DType::F16 : activations;
}

std::vector<std::string> kv_cache_dtype_choices() {
  return {"auto", "f32", "f16", "bf16"};
}

std::optional<DType> parse_kv_cache_dtype(const std::string& name) {
  if (name == "auto") return std::nullopt;
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  PF_THROW("kv_cache_dtype '{}' is not one of {}", name, fmt::join(kv_cache_dtype_choices(), ", "));
}

void require_kv_cache_dtype(const Backend& backend, DType dtype) {
  PF_CHECK(
      backend.supports_kv_cache(dtype),
      "kv_cache_dtype {}: the {} backend does not keep a KV cache in {} (it keeps {}{})",
      dtype_name(dtype), backend.name(), dtype_name(dtype), dtype_name(backend.activation_dtype()),
      backend.supports_kv_cache(DType::F16) && backend.activation_dtype() != DType::F16 ? " or F16"
                                                                                        : "");
}

PagedKvCache::PagedKvCache(Backend& backend, const std::vector<int64_t>& kv_widths,
                           int64_t max_tokens, int64_t page_size, DType dtype)
    : page_size_(page_size),
      dtype_(dtype),
      n_pages_((max_tokens + page_size - 1) / page_size),
      padding_page_(int32_t(n_pages_)) {
  PF_CHECK(page_size > 0 && max_tokens > 0, "KV cache needs positive sizes (tokens {}, page {})",
           max_tokens, page_size);
  require_kv_cache_dtype(backend, dtype);
  const int64_t slots = slot_count();
  for (int64_t width : kv_widths) {
    for (auto* pool : {&keys_, &values_}) {
      buffers_.emplace_back();
      pool->push_back(backend.alloc_tensor(buffers_.back(), dtype, slots, width));
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

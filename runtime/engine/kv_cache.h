// The paged KV cache of one rank: for every attention block this rank owns, a key pool and a
// value pool of `n_slots = n_pages * page_size` rows of (local kv heads * head_dim), plus one
// page table per sequence (the vLLM PagedAttention layout). Attention-free blocks own no
// cache at all, which is where Nemotron-NAS saves most of its memory. The pools hold one dtype
// the backend takes for KV caches (Backend::supports_kv_cache): its activation dtype, or F16 on
// the CPU backend.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/model/weight_source.h"

namespace parafuse {

// The KV cache dtype `auto` picks: F16 where the backend keeps F16 caches beside F32
// activations and the model file stores weights the backend keeps as they are in a narrower
// format (Q8_0, Q4_0, Q4_1, F16, BF16: llama.cpp's default for such files; half the bytes
// decode attention reads); otherwise the backend's activation dtype (F32 weights, the
// reference path; a file with any FP8 weight (its bf16 embeddings included), whose CPU path is
// the exact reference of the GPU's; the CUDA backend).
DType auto_kv_cache_dtype(const Backend& backend, const WeightSource& weights);
// What `kv_cache_dtype:` and --kv-cache-dtype accept: auto, f32, f16, bf16.
std::vector<std::string> kv_cache_dtype_choices();
// "auto" -> nullopt (auto_kv_cache_dtype when the engine loads), else the dtype; any other name
// is an Error listing the choices. Whether the backend keeps that dtype is checked at load.
std::optional<DType> parse_kv_cache_dtype(const std::string& name);
// An Error unless the backend keeps KV caches of `dtype`, naming what it keeps instead.
void require_kv_cache_dtype(const Backend& backend, DType dtype);

class PagedKvCache {
 public:
  // kv_widths[i] = local kv heads * head_dim of the i-th attention block this rank owns; dtype:
  // one the backend supports_kv_cache(), else an Error naming it.
  PagedKvCache(Backend& backend, const std::vector<int64_t>& kv_widths, int64_t max_tokens,
               int64_t page_size, DType dtype);

  int64_t page_size() const { return page_size_; }
  int64_t capacity_tokens() const { return n_pages_ * page_size_; }
  int64_t pages() const { return n_pages_; }
  int64_t used_pages() const { return n_pages_ - int64_t(free_pages_.size()); }
  // Rows of each pool: the pages plus one padding page no sequence ever gets. A padding row of
  // a decode batch (Engine, graph batch buckets) writes and reads its one key there.
  int64_t slot_count() const { return (n_pages_ + 1) * page_size_; }
  const int32_t* padding_block_table() const { return &padding_page_; }
  size_t bytes() const;
  DType dtype() const { return dtype_; }

  // Sequences are named by the caller's id. add() starts an empty one.
  void add(int seq);
  void remove(int seq);
  bool contains(int seq) const { return seqs_.count(seq) != 0; }
  int64_t length(int seq) const;  // tokens cached so far
  // Makes room for `n_new` more tokens of `seq` (throws when the cache is full, saying how
  // big it is and how to grow it) and returns the page table covering them.
  const int32_t* reserve(int seq, int64_t n_new);
  // Marks `n_new` reserved tokens as written (after the forward pass succeeded).
  void commit(int seq, int64_t n_new);

  const Tensor& keys(int layer) const { return keys_[layer]; }  // (n_slots, kv width)
  const Tensor& values(int layer) const { return values_[layer]; }

 private:
  struct Seq {
    std::vector<int32_t> pages;
    int64_t length = 0;
  };
  int64_t page_size_;
  DType dtype_;
  int64_t n_pages_;
  int32_t padding_page_;  // == n_pages_
  std::vector<Buffer> buffers_;
  std::vector<Tensor> keys_;
  std::vector<Tensor> values_;
  std::vector<int32_t> free_pages_;
  std::map<int, Seq> seqs_;
};

}  // namespace parafuse

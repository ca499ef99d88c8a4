// Launchers of the paged-KV-cache kernels (attention.cu): kv_store, prefill attention (tiled,
// flash-attention style) and decode attention (one block per (row, head), split over keys).
//
// The batch metadata lives in one device int32 buffer that CudaBackend packs from the host
// AttentionBatch (cuda_attention_meta.cpp) and uploads once per distinct batch; AttentionMeta
// holds device pointers into it and is passed to the kernels by value.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/backend.h"

namespace parafuse::cuda {

// Rows with at most this many new tokens in their sequence go to the decode kernel.
constexpr int64_t kDecodeMaxNew = 4;
// Query rows per prefill tile (one thread block per tile and head).
constexpr int kPrefillRows = 16;
constexpr int kMaxHeadDim = 256;

struct AttentionMeta {
  const int32_t* seqs = nullptr;           // n_seqs x 4: q_begin, n_new, n_past, block table offset
  const int32_t* block_tables = nullptr;   // all sequences' tables, concatenated
  const int32_t* kv_rows = nullptr;        // n_kv_rows x 2: batch row, cache slot (kv_store)
  const int32_t* decode_items = nullptr;   // n_decode x 2: sequence, i (row q_begin + i)
  const int32_t* prefill_tiles = nullptr;  // n_tiles x 2: sequence, first i of the tile
  int n_seqs = 0, block_size = 16, n_kv_rows = 0, n_decode = 0, n_tiles = 0;
};

// k_cache[slot] = k[row], v_cache[slot] = v[row] for every (row, slot) of meta.kv_rows.
void launch_kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                     const AttentionMeta& meta, cudaStream_t stream);

constexpr int kMaxSplits = 16;  // decode key splits per (row, head)

// Causal GQA attention over the paged cache (see Backend::attention). `workspace` holds at
// least attention_workspace_floats(meta, shape, n_splits) floats; n_splits (>= 1) splits each
// decode row's keys over that many blocks (flash-decoding), combined by a second kernel.
void launch_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const AttentionMeta& meta, const AttentionShape& shape, const Tensor& out,
                      int n_splits, float* workspace, cudaStream_t stream);
int64_t attention_workspace_floats(const AttentionMeta& meta, const AttentionShape& shape,
                                   int n_splits);

}  // namespace parafuse::cuda

// A Stage is the run of blocks one rank owns (its pipeline slice) with its tensor-parallel
// shard of their weights, resident on the rank's Backend, and their forward pass.
//
// Weights are laid out for few, large GEMMs: q, k and v of a block are one (q+k+v rows, H)
// matrix and gate and up one (2*I, H) matrix, so an attention block is 2 GEMMs plus attention
// and an FFN block 2 GEMMs plus SwiGLU. Megatron TP: the fused QKV and gate/up are
// column-parallel (this rank's heads / intermediate slice), o_proj and down_proj row-parallel,
// followed by one all-reduce each. `ShardSpec` says which slice this rank holds.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"

namespace parafuse {

class PagedKvCache;
class Collectives;

struct ShardSpec {
  int rank = 0;  // tensor-parallel rank
  int size = 1;  // tensor-parallel size
};

// Bytes loaded so far and in all; called as weights arrive (for a progress bar).
using LoadProgress = std::function<void(size_t done_bytes, size_t total_bytes)>;

// Which heads / kv heads / FFN columns a TP rank holds for one block, with the checks that
// make an uneven split an error naming the block instead of a silently wrong answer.
struct BlockShard {
  int head_begin = 0, n_heads = 0;            // query heads of this rank
  int kv_head_begin = 0, n_kv_heads = 0;      // kv heads this rank holds (replicated if few)
  int64_t ffn_begin = 0, ffn_size = 0;        // intermediate columns of this rank
  int64_t linear_begin = 0, linear_size = 0;  // input columns of a linear replacement
};
BlockShard shard_block(const ModelConfig& config, int block, ShardSpec shard);

// The storage format a weight stacked from the tensors `names` (each with the column slice
// `cols`) keeps on `backend`: the tensors' file format where they share one other than F32, the
// backend multiplies by it (Backend::supports_weight), the source reads it natively and the
// slice falls on its blocks (a split that does not is logged); nullopt otherwise, and the
// weight is read as F32 and converted to the backend's weight dtype.
std::optional<DType> native_weight_dtype(const WeightSource& weights, const Backend& backend,
                                         const std::vector<std::string>& names, Range cols);

struct BlockWeights {
  int index = 0;  // block id in the model
  BlockConfig config;
  BlockShard shard;
  int kv_layer = -1;   // index into the KV cache, Full attention only
  Tensor attn_norm;    // (1, H)
  Tensor qkv;          // ((n_heads + 2 n_kv_heads) * head_dim, H)
  Tensor o_proj;       // (H, n_heads * head_dim)
  Tensor attn_linear;  // (H, linear_size): this rank's input columns
  Tensor ffn_norm;     // (1, H); empty when folded into gate_up
  Tensor gate_up;      // (2 * ffn_size, H): gate rows then up rows
  Tensor down;         // (H, ffn_size)
  Tensor ffn_linear;   // (H, linear_size)
};

// What one forward pass over a batch needs besides the hidden states.
struct StepInputs {
  const AttentionBatch* batch = nullptr;
  Tensor positions;  // (m, 1) I32
  PagedKvCache* kv_cache = nullptr;
  // The rows whose output the caller reads, ascending (the last stage's logit rows); empty: all.
  // Every block after the stage's last attention sublayer acts row by row, so from that
  // sublayer's output on only these rows are computed (a prompt's last row instead of all of
  // them); the other rows of `hidden` are left as they were before it. The keys and values of
  // every row still go into the cache.
  std::span<const int64_t> out_rows;
};

// Per-block changes to the forward pass, indexed by model block id (an empty vector changes
// nothing): skipping sublayers (analysis, and the attention removal that precedes fusion), and
// parallel-FFN mode, where consecutive blocks with the same non-negative `ffn_group` id all read
// the group's input and their outputs are summed: exactly what a fused FFN computes, without
// rewriting weights. A group costs one all-reduce, as the fused block does.
struct ForwardOverrides {
  std::vector<char> skip_attention;
  std::vector<char> skip_ffn;
  std::vector<int> ffn_group;
  bool skips_attention(int block) const {
    return size_t(block) < skip_attention.size() && skip_attention[size_t(block)];
  }
  bool skips_ffn(int block) const {
    return size_t(block) < skip_ffn.size() && skip_ffn[size_t(block)];
  }
  int group_of(int block) const {
    return size_t(block) < ffn_group.size() ? ffn_group[size_t(block)] : -1;
  }
};

// Sees every sublayer as it runs: its input hidden state (m, H) and its output (m, H), the
// amount it adds to the residual stream. For analysis (runtime/fusion); tp = 1 only.
using SublayerObserver =
    std::function<void(int block, bool is_ffn, const Tensor& input, const Tensor& output)>;

class Stage {
 public:
  // Blocks [first, last) of `config`, this rank's `shard` of them.
  Stage(const ModelConfig& config, const WeightSource& weights, Backend& backend, int first,
        int last, ShardSpec shard, Collectives* tp_comm, const LoadProgress& progress,
        size_t* done_bytes, size_t total_bytes);

  const std::vector<BlockWeights>& blocks() const { return blocks_; }
  // local kv width of each attention block, in order (to size the KV cache)
  std::vector<int64_t> kv_widths() const;
  // Bytes of weights this stage will load (for the progress bar total), counted as F32.
  static size_t weight_bytes(const ModelConfig& config, int first, int last, ShardSpec shard);
  // Bytes its weights take on the backend, in their resident formats (what a forward streams).
  size_t resident_weight_bytes() const;

  // hidden (m, H) is updated in place through every block of the stage.
  void forward(const Tensor& hidden, const StepInputs& in);

  void set_overrides(ForwardOverrides overrides);
  const ForwardOverrides& overrides() const { return overrides_; }
  void set_observer(SublayerObserver observer);
  bool has_observer() const { return bool(observer_); }
  // Bumped whenever a recorded step would go stale: a scratch buffer moved, or the overrides
  // or the observer changed (Engine drops its CUDA graphs then).
  uint64_t version() const { return version_; }

 private:
  // The attention sublayer of block b over `hidden`. With `out` (the rows in.out_rows of
  // hidden, gathered into it here): every row's keys and values are stored, and only out's rows
  // attend and receive the sublayer's output.
  void forward_attention(const BlockWeights& b, const Tensor& hidden, const StepInputs& in,
                         const Tensor* out = nullptr);
  // This rank's partial FFN output (m, H) for `hidden`, before the TP all-reduce:
  // out = ffn(hidden) + beta * out.
  void ffn_partial(const BlockWeights& b, const Tensor& hidden, const Tensor& out,
                   float beta = 0.0f);
  // At tp = 1 with no observer a sublayer's output GEMM adds straight into the residual
  // stream (beta = 1): no separate add, no output buffer.
  bool adds_in_gemm() const { return shard_.size == 1 && !observer_; }
  // Blocks [first, last) of blocks_ as one parallel-FFN group reading `hidden`.
  void forward_ffn_group(size_t first, size_t last, const Tensor& hidden);

  Tensor scratch(int slot, int64_t rows, int64_t cols);
  Tensor upload(const std::vector<float>& host, int64_t rows, int64_t cols);
  void all_reduce(const Tensor& t);

  const ModelConfig& config_;
  Backend& backend_;
  int first_, last_;
  ShardSpec shard_;
  Collectives* tp_comm_;
  std::vector<BlockWeights> blocks_;
  std::vector<Buffer> weight_buffers_;
  Buffer inv_freq_buffer_;
  Tensor inv_freq_;  // (1, head_dim/2)
  std::vector<Buffer> scratch_buffers_;
  std::vector<size_t> scratch_bytes_;
  ForwardOverrides overrides_;
  SublayerObserver observer_;
  uint64_t version_ = 0;
};

}  // namespace parafuse

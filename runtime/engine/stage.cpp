// Stage: loading this rank's weight shards and running its blocks. See stage.h.
#include "runtime/engine/stage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "runtime/engine/kv_cache.h"

namespace parafuse {
namespace {

// Scratch slots reused by every block (see Stage::scratch).
enum Slot {
  kNorm,
  kQkv,
  kAttnOut,
  kProj,
  kGateUp,
  kAct,
  kGroupIn,
  kGroupSum,
  kOutRows,  // the out rows' hidden states (StepInputs::out_rows)
  kOutQ,     // their queries
  kSlotCount
};

// `batch` cut down to `rows` (ascending rows of it), renumbered 0, 1, ...: each run of
// consecutive rows of one sequence becomes a sequence of its own that reads the same cache, its
// first row at that row's position.
AttentionBatch batch_of_rows(const AttentionBatch& batch, std::span<const int64_t> rows) {
  AttentionBatch out;
  out.block_size = batch.block_size;
  size_t s = 0, prev_s = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t row = rows[i];
    while (s < batch.seqs.size() && row >= batch.seqs[s].q_begin + batch.seqs[s].n_new) ++s;
    PF_CHECK(s < batch.seqs.size() && row >= batch.seqs[s].q_begin,
             "output row {} is in no sequence of the batch (rows must be ascending)", row);
    const AttentionSeq& seq = batch.seqs[s];
    if (i > 0 && s == prev_s && rows[i - 1] == row - 1) {
      ++out.seqs.back().n_new;
    } else {
      out.seqs.push_back({int64_t(i), 1, seq.n_past + (row - seq.q_begin), seq.block_table});
    }
    prev_s = s;
  }
  return out;
}

int64_t even_begin(int64_t n, int rank, int size) {
  return n * rank / size;
}

}  // namespace

std::optional<DType> native_weight_dtype(const WeightSource& weights, const Backend& backend,
                                         const std::vector<std::string>& names, Range cols) {
  PF_CHECK(!names.empty(), "native_weight_dtype: no tensors");
  const DType dtype = weights.info(names[0]).dtype;
  if (dtype == DType::F32 || !backend.supports_weight(dtype)) return std::nullopt;
  for (const std::string& name : names) {
    if (weights.info(name).dtype != dtype || !weights.reads_native(name)) return std::nullopt;
    if (!weights.native_cols_ok(name, cols)) {
      spdlog::info(
          "{} ({}): columns [{}, {}) of this rank's slice do not fall on its {}-element "
          "blocks; keeping it as {} instead",
          name, dtype_name(dtype), cols.begin, cols.end, dtype_block_elements(dtype),
          dtype_name(backend.weight_dtype()));
      return std::nullopt;
    }
  }
  return dtype;
}

BlockShard shard_block(const ModelConfig& config, int block, ShardSpec shard) {
  const BlockConfig& b = config.blocks.at(size_t(block));
  const int tp = shard.size, r = shard.rank;
  BlockShard s;
  if (b.attention == AttentionKind::Full) {
    PF_CHECK(
        config.n_heads % tp == 0,
        "block {}: {} query heads do not split evenly over tp={} (choose a tp that divides {})",
        block, config.n_heads, tp, config.n_heads);
    s.n_heads = config.n_heads / tp;
    s.head_begin = r * s.n_heads;
    if (b.n_kv_heads >= tp) {
      PF_CHECK(b.n_kv_heads % tp == 0, "block {}: {} kv heads do not split evenly over tp={}",
               block, b.n_kv_heads, tp);
      s.n_kv_heads = b.n_kv_heads / tp;
      s.kv_head_begin = r * s.n_kv_heads;
    } else {
      // Fewer kv heads than ranks: each rank holds (a replica of) the one its heads use.
      PF_CHECK(tp % b.n_kv_heads == 0,
               "block {}: {} kv heads cannot be replicated evenly over tp={} (tp must be a "
               "multiple of the kv head count)",
               block, b.n_kv_heads, tp);
      s.n_kv_heads = 1;
      s.kv_head_begin = r / (tp / b.n_kv_heads);
    }
  }
  if (b.attention == AttentionKind::Linear || b.ffn == FfnKind::Linear) {
    s.linear_begin = even_begin(config.hidden_size, r, tp);
    s.linear_size = even_begin(config.hidden_size, r + 1, tp) - s.linear_begin;
  }
  if (b.ffn == FfnKind::SwiGlu) {
    // Uneven widths are exact: the row-parallel down projection sums partial products.
    s.ffn_begin = even_begin(b.intermediate_size, r, tp);
    s.ffn_size = even_begin(b.intermediate_size, r + 1, tp) - s.ffn_begin;
  }
  return s;
}

size_t Stage::weight_bytes(const ModelConfig& config, int first, int last, ShardSpec shard) {
  const int64_t H = config.hidden_size, hd = config.head_dim;
  size_t floats = 0;
  for (int i = first; i < last; ++i) {
    const BlockConfig& b = config.blocks[size_t(i)];
    const BlockShard s = shard_block(config, i, shard);
    if (b.attention != AttentionKind::None) floats += size_t(H);
    if (b.attention == AttentionKind::Full)
      floats += size_t((s.n_heads + 2 * s.n_kv_heads) * hd * H + H * s.n_heads * hd);
    if (b.attention == AttentionKind::Linear) floats += size_t(H * s.linear_size);
    if (b.ffn != FfnKind::None && !b.ffn_norm_folded) floats += size_t(H);
    if (b.ffn == FfnKind::SwiGlu) floats += size_t(3 * s.ffn_size * H);
    if (b.ffn == FfnKind::Linear) floats += size_t(H * s.linear_size);
  }
  return floats * sizeof(float);
}

Stage::Stage(const ModelConfig& config, const WeightSource& weights, Backend& backend, int first,
             int last, ShardSpec shard, Collectives* tp_comm, const LoadProgress& progress,
             size_t* done_bytes, size_t total_bytes)
    : config_(config),
      backend_(backend),
      first_(first),
      last_(last),
      shard_(shard),
      tp_comm_(tp_comm),
      scratch_buffers_(kSlotCount),
      scratch_bytes_(kSlotCount, 0) {
  PF_CHECK(0 <= first && first <= last && last <= config.n_blocks(),
           "stage blocks [{}, {}) outside the model's {} blocks", first, last, config.n_blocks());
  PF_CHECK(shard.size == 1 || tp_comm != nullptr, "tp={} needs a TP communicator", shard.size);
  const int64_t H = config.hidden_size, hd = config.head_dim;
  auto read = [&](const std::string& name, Range rows, Range cols, float* out, size_t n) {
    weights.read_f32(name, rows, cols, out);
    if (done_bytes) {
      *done_bytes += n * sizeof(float);
      if (progress) progress(*done_bytes, total_bytes);
    }
  };
  auto load = [&](const std::string& name, Range rows, Range cols, int64_t n_rows, int64_t n_cols) {
    std::vector<float> host(size_t(n_rows * n_cols));
    read(name, rows, cols, host.data(), host.size());
    return upload(host, n_rows, n_cols);
  };
  // A weight made of row slices of one or more tensors stacked in order (q, k, v; gate, up),
  // each with the same column slice: kept in the tensors' file format where resident_dtype()
  // allows, else read as F32 and converted to the backend's weight dtype.
  auto load_stacked = [&](const std::vector<std::pair<std::string, Range>>& parts, Range cols,
                          int64_t n_cols) {
    std::vector<std::string> names;
    int64_t n_rows = 0;
    for (const auto& [part, rows] : parts) {
      names.push_back(part);
      n_rows += (rows.end == -1 ? weights.info(part).rows() : rows.end) - rows.begin;
    }
    const std::optional<DType> native = native_weight_dtype(weights, backend, names, cols);
    if (!native) {
      std::vector<float> host(size_t(n_rows * n_cols));
      int64_t row = 0;
      for (const auto& [part, rows] : parts) {
        const int64_t r = (rows.end == -1 ? weights.info(part).rows() : rows.end) - rows.begin;
        read(part, rows, cols, host.data() + row * n_cols, size_t(r * n_cols));
        row += r;
      }
      return upload(host, n_rows, n_cols);
    }
    const DType dtype = *native;
    const size_t row_bytes = dtype_row_bytes(dtype, n_cols);
    std::vector<uint8_t> host(size_t(n_rows) * row_bytes);
    // FP8: each part's per-row scales beside its codes; the static activation scale of the
    // stacked weight is the largest of its parts' (one quantization of x serves them all).
    const bool fp8 = dtype == DType::F8_E4M3;
    std::vector<float> scales(fp8 ? size_t(n_rows) : 0);
    float input_scale = 0.0f;
    int64_t row = 0;
    for (const auto& [part, rows] : parts) {
      const int64_t r = (rows.end == -1 ? weights.info(part).rows() : rows.end) - rows.begin;
      weights.read_native(part, rows, cols, host.data() + size_t(row) * row_bytes);
      if (fp8) {
        weights.read_row_scales(part, rows, scales.data() + row);
        input_scale = std::max(input_scale, weights.input_scale(part));
      }
      row += r;
      if (done_bytes) {
        *done_bytes += size_t(r * n_cols) * sizeof(float);
        if (progress) progress(*done_bytes, total_bytes);
      }
    }
    weight_buffers_.emplace_back();
    Tensor t = backend.alloc_tensor(weight_buffers_.back(), dtype, n_rows, n_cols);
    backend.upload_weight(host.data(), t);
    if (fp8) {
      weight_buffers_.emplace_back();
      const Tensor s = backend.alloc_tensor(weight_buffers_.back(), DType::F32, 1, n_rows);
      backend.upload_f32(scales.data(), s);
      t.scales = s.f32();
      t.input_scale = input_scale;
    }
    return t;
  };
  auto check_shape = [&](const std::string& name, std::vector<int64_t> shape) {
    const TensorInfo info = weights.info(name);
    PF_CHECK(info.shape == shape, "{}: tensor {} has shape [{}], the config implies [{}]",
             weights.description(), name, fmt::join(info.shape, ", "), fmt::join(shape, ", "));
  };

  std::vector<float> inv_freq = rope_inv_freq(config);
  inv_freq_ = backend.alloc_tensor(inv_freq_buffer_, DType::F32, 1, int64_t(inv_freq.size()));
  backend.upload_f32(inv_freq.data(), inv_freq_);

  int kv_layer = 0;
  for (int i = first; i < last; ++i) {
    BlockWeights bw;
    bw.index = i;
    bw.config = config.blocks[size_t(i)];
    bw.shard = shard_block(config, i, shard);
    const BlockShard& s = bw.shard;
    auto name = [&](const char* suffix) { return block_tensor_name(i, suffix); };
    if (bw.config.attention != AttentionKind::None) {
      check_shape(name("input_layernorm.weight"), {H});
      bw.attn_norm = load(name("input_layernorm.weight"), {}, {}, 1, H);
    }
    if (bw.config.attention == AttentionKind::Full) {
      const int64_t nkv = bw.config.n_kv_heads;
      check_shape(name("self_attn.q_proj.weight"), {config.n_heads * hd, H});
      check_shape(name("self_attn.k_proj.weight"), {nkv * hd, H});
      check_shape(name("self_attn.v_proj.weight"), {nkv * hd, H});
      check_shape(name("self_attn.o_proj.weight"), {H, config.n_heads * hd});
      const int64_t q_rows = s.n_heads * hd, kv_rows = s.n_kv_heads * hd;
      const int64_t q0 = s.head_begin * hd, kv0 = s.kv_head_begin * hd;
      bw.qkv = load_stacked({{name("self_attn.q_proj.weight"), {q0, q0 + q_rows}},
                             {name("self_attn.k_proj.weight"), {kv0, kv0 + kv_rows}},
                             {name("self_attn.v_proj.weight"), {kv0, kv0 + kv_rows}}},
                            {}, H);
      bw.o_proj = load_stacked({{name("self_attn.o_proj.weight"), {}}}, {q0, q0 + q_rows}, q_rows);
      bw.kv_layer = kv_layer++;
    } else if (bw.config.attention == AttentionKind::Linear) {
      check_shape(name("self_attn.linear_attn.weight"), {H, H});
      bw.attn_linear =
          load_stacked({{name("self_attn.linear_attn.weight"), {}}},
                       {s.linear_begin, s.linear_begin + s.linear_size}, s.linear_size);
    }
    if (bw.config.ffn != FfnKind::None && !bw.config.ffn_norm_folded) {
      check_shape(name("post_attention_layernorm.weight"), {H});
      bw.ffn_norm = load(name("post_attention_layernorm.weight"), {}, {}, 1, H);
    }
    if (bw.config.ffn == FfnKind::SwiGlu) {
      const int64_t I = bw.config.intermediate_size, f0 = s.ffn_begin, f = s.ffn_size;
      check_shape(name("mlp.gate_proj.weight"), {I, H});
      check_shape(name("mlp.up_proj.weight"), {I, H});
      check_shape(name("mlp.down_proj.weight"), {H, I});
      bw.gate_up = load_stacked({{name("mlp.gate_proj.weight"), {f0, f0 + f}},
                                 {name("mlp.up_proj.weight"), {f0, f0 + f}}},
                                {}, H);
      bw.down = load_stacked({{name("mlp.down_proj.weight"), {}}}, {f0, f0 + f}, f);
    } else if (bw.config.ffn == FfnKind::Linear) {
      check_shape(name("mlp.linear_mlp.weight"), {H, H});
      bw.ffn_linear = load_stacked({{name("mlp.linear_mlp.weight"), {}}},
                                   {s.linear_begin, s.linear_begin + s.linear_size}, s.linear_size);
    }
    blocks_.push_back(std::move(bw));
  }
}

size_t Stage::resident_weight_bytes() const {
  size_t bytes = 0;
  for (const Buffer& b : weight_buffers_) bytes += b.bytes();
  return bytes;
}

std::vector<int64_t> Stage::kv_widths() const {
  std::vector<int64_t> widths;
  for (const auto& b : blocks_)
    if (b.kv_layer >= 0) widths.push_back(int64_t(b.shard.n_kv_heads) * config_.head_dim);
  return widths;
}

Tensor Stage::upload(const std::vector<float>& host, int64_t rows, int64_t cols) {
  weight_buffers_.emplace_back();
  Tensor t = backend_.alloc_tensor(weight_buffers_.back(), backend_.weight_dtype(), rows, cols);
  backend_.upload_f32(host.data(), t);
  return t;
}

Tensor Stage::scratch(int slot, int64_t rows, int64_t cols) {
  const DType dt = backend_.activation_dtype();
  const size_t need = size_t(rows * cols) * dtype_size(dt);
  if (scratch_bytes_[size_t(slot)] < need) {
    scratch_buffers_[size_t(slot)] = backend_.alloc(need);
    scratch_bytes_[size_t(slot)] = need;
    ++version_;
  }
  return Tensor{scratch_buffers_[size_t(slot)].data(), dt, rows, cols, cols};
}

void Stage::all_reduce(const Tensor& t) {
  if (shard_.size > 1) tp_comm_->all_reduce_sum(t);
}

void Stage::set_overrides(ForwardOverrides overrides) {
  overrides_ = std::move(overrides);
  ++version_;
  // A parallel group must not span an attention sublayer that still runs.
  for (size_t i = 0; i + 1 < blocks_.size(); ++i) {
    const int g = overrides_.group_of(blocks_[i].index);
    const BlockWeights& next = blocks_[i + 1];
    if (g >= 0 && overrides_.group_of(next.index) == g)
      PF_CHECK(
          next.config.attention == AttentionKind::None || overrides_.skips_attention(next.index),
          "ffn group {} spans the attention of block {}: a group must be attention-free after "
          "its first block",
          g, next.index);
  }
}

void Stage::set_observer(SublayerObserver observer) {
  PF_CHECK(!observer || shard_.size == 1, "sublayer observers need tp=1, not tp={}", shard_.size);
  observer_ = std::move(observer);
  ++version_;
}

void Stage::forward(const Tensor& hidden, const StepInputs& in) {
  // With out rows, the blocks run on all rows up to the last attention sublayer over the cache;
  // it and everything after it act on the out rows alone (gathered into h). With no such
  // sublayer in the stage, every block acts row by row: gather first.
  const int64_t r = int64_t(in.out_rows.size());
  const bool cut = r > 0 && r < hidden.rows && !observer_;
  size_t cut_at = blocks_.size();
  Tensor h = hidden;
  if (cut) {
    for (size_t i = blocks_.size(); i-- > 0 && cut_at == blocks_.size();) {
      const BlockWeights& b = blocks_[i];
      if (b.config.attention == AttentionKind::Full && !overrides_.skips_attention(b.index))
        cut_at = i;
    }
    if (cut_at == blocks_.size()) {
      h = scratch(kOutRows, r, config_.hidden_size);
      for (int64_t i = 0; i < r; ++i) {
        const int64_t row = in.out_rows[size_t(i)];
        backend_.copy(hidden.rows_view(row, row + 1), h.rows_view(i, i + 1));
      }
    }
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const BlockWeights& b = blocks_[i];
    if (cut && i == cut_at) {
      h = scratch(kOutRows, r, config_.hidden_size);
      forward_attention(b, hidden, in, &h);
    } else if (!overrides_.skips_attention(b.index)) {
      forward_attention(b, h, in);
    }
    if (b.config.ffn == FfnKind::None || overrides_.skips_ffn(b.index)) continue;
    // A group ends where the id changes (or at the end of this stage: groups never span a
    // pipeline boundary because the planner keeps them inside one stage's blocks; if a user
    // split cuts one, each side runs as its own group, which changes the result, so refuse).
    size_t last = i + 1;
    const int g = overrides_.group_of(b.index);
    while (g >= 0 && last < blocks_.size() && overrides_.group_of(blocks_[last].index) == g) ++last;
    PF_CHECK(g < 0 || last < blocks_.size() || last_ >= config_.n_blocks() ||
                 overrides_.group_of(last_) != g,
             "ffn group {} is cut by the pipeline boundary after block {}", g, last_ - 1);
    forward_ffn_group(i, last, h);
    i = last - 1;
  }
  if (!cut) return;
  for (int64_t i = 0; i < r; ++i) {
    const int64_t row = in.out_rows[size_t(i)];
    backend_.copy(h.rows_view(i, i + 1), hidden.rows_view(row, row + 1));
  }
}

void Stage::forward_ffn_group(size_t first, size_t last, const Tensor& hidden) {
  const int64_t m = hidden.rows, H = config_.hidden_size;
  if (last == first + 1 && adds_in_gemm()) {
    ffn_partial(blocks_[first], hidden, hidden, 1.0f);  // hidden += down(...)
    return;
  }
  Tensor out = scratch(kProj, m, H);
  if (last == first + 1) {
    ffn_partial(blocks_[first], hidden, out);
    all_reduce(out);
    if (observer_) observer_(blocks_[first].index, true, hidden, out);
    backend_.add(hidden, out, hidden);
    return;
  }
  // Every member reads the group's input; partial outputs are summed before one all-reduce.
  Tensor input = scratch(kGroupIn, m, H);
  backend_.copy(hidden, input);
  Tensor sum = scratch(kGroupSum, m, H);
  for (size_t i = first; i < last; ++i) {
    const BlockWeights& b = blocks_[i];
    if (b.config.ffn == FfnKind::None || overrides_.skips_ffn(b.index)) continue;
    ffn_partial(b, input, i == first ? sum : out);
    if (observer_) observer_(b.index, true, input, i == first ? sum : out);
    if (i != first) backend_.add(sum, out, sum);
  }
  all_reduce(sum);
  backend_.add(hidden, sum, hidden);
}

void Stage::forward_attention(const BlockWeights& b, const Tensor& hidden, const StepInputs& in,
                              const Tensor* out) {
  if (b.config.attention == AttentionKind::None) return;
  const int64_t m = hidden.rows, H = config_.hidden_size;
  const float eps = float(config_.rms_norm_eps);
  Tensor norm = scratch(kNorm, m, H);
  backend_.rmsnorm(hidden, b.attn_norm, eps, norm);
  // The rows that receive the output: all of hidden, or the out rows gathered into *out.
  const Tensor& residual = out ? *out : hidden;
  const int64_t r = residual.rows;
  for (int64_t i = 0; out && i < r; ++i) {
    const int64_t row = in.out_rows[size_t(i)];
    backend_.copy(hidden.rows_view(row, row + 1), out->rows_view(i, i + 1));
  }
  // The output projection adds into the residual stream itself where nothing needs it apart.
  const bool direct = adds_in_gemm();
  Tensor proj = direct ? residual : scratch(kProj, r, H);
  const float beta = direct ? 1.0f : 0.0f;
  if (b.config.attention == AttentionKind::Linear) {
    PF_CHECK(!out, "block {}: out rows are cut at attention over the cache only", b.index);
    backend_.gemm(norm.cols_view(b.shard.linear_begin, b.shard.linear_begin + b.shard.linear_size),
                  b.attn_linear, proj, beta);
  } else {
    const int hd = config_.head_dim;
    const int64_t q_cols = int64_t(b.shard.n_heads) * hd,
                  kv_cols = int64_t(b.shard.n_kv_heads) * hd;
    Tensor qkv = scratch(kQkv, m, q_cols + 2 * kv_cols);
    backend_.gemm(norm, b.qkv, qkv);
    Tensor q = qkv.cols_view(0, q_cols);
    Tensor k = qkv.cols_view(q_cols, q_cols + kv_cols);
    Tensor v = qkv.cols_view(q_cols + kv_cols, q_cols + 2 * kv_cols);
    // q and k heads sit side by side in qkv: one rotation over both.
    backend_.rope(qkv.cols_view(0, q_cols + kv_cols), in.positions, inv_freq_,
                  b.shard.n_heads + b.shard.n_kv_heads, hd);
    const Tensor& k_cache = in.kv_cache->keys(b.kv_layer);
    const Tensor& v_cache = in.kv_cache->values(b.kv_layer);
    backend_.kv_store(k, v, k_cache, v_cache, *in.batch);
    Tensor attn = scratch(kAttnOut, r, q_cols);
    AttentionShape shape{b.shard.n_heads, b.shard.n_kv_heads, hd, 1.0f / std::sqrt(float(hd))};
    if (out) {  // only the out rows' queries attend
      Tensor q_out = scratch(kOutQ, r, q_cols);
      for (int64_t i = 0; i < r; ++i) {
        const int64_t row = in.out_rows[size_t(i)];
        backend_.copy(q.rows_view(row, row + 1), q_out.rows_view(i, i + 1));
      }
      backend_.attention(q_out, k_cache, v_cache, batch_of_rows(*in.batch, in.out_rows), shape,
                         attn);
    } else {
      backend_.attention(q, k_cache, v_cache, *in.batch, shape, attn);
    }
    backend_.gemm(attn, b.o_proj, proj, beta);
  }
  if (direct) return;
  all_reduce(proj);
  if (observer_) observer_(b.index, false, residual, proj);
  backend_.add(residual, proj, residual);
}

void Stage::ffn_partial(const BlockWeights& b, const Tensor& hidden, const Tensor& out,
                        float beta) {
  const int64_t m = hidden.rows, H = config_.hidden_size;
  Tensor norm = scratch(kNorm, m, H);
  backend_.rmsnorm(hidden, b.ffn_norm, float(config_.rms_norm_eps), norm);
  if (b.config.ffn == FfnKind::Linear) {
    backend_.gemm(norm.cols_view(b.shard.linear_begin, b.shard.linear_begin + b.shard.linear_size),
                  b.ffn_linear, out, beta);
  } else {
    const int64_t f = b.shard.ffn_size;
    Tensor gate_up = scratch(kGateUp, m, 2 * f);
    backend_.gemm(norm, b.gate_up, gate_up);
    Tensor act = scratch(kAct, m, f);
    backend_.swiglu(gate_up.cols_view(0, f), gate_up.cols_view(f, 2 * f), act);
    backend_.gemm(act, b.down, out, beta);
  }
}

}  // namespace parafuse

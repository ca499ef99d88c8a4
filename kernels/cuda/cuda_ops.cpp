// CudaBackend ops: the cuda backend's own argument checks (dtypes, limits of its kernels; the
// shape checks every backend shares are in kernels/op_checks.h), the attention metadata packing,
// and dispatch to the launchers of the .cu files.
#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/core/error.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemv.cuh"
#include "kernels/cuda/norm_rope.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/op_checks.h"

namespace parafuse {
namespace {

void require_float(Op op, const Tensor& t, const char* what) {
  PF_CHECK(t.dtype == DType::F32 || t.dtype == DType::BF16,
           "{}: {} has dtype {}, but the cuda backend computes in F32 or BF16", op_name(op), what,
           dtype_name(t.dtype));
}

void require_same_dtype(Op op, const Tensor& a, const char* a_what, const Tensor& b,
                        const char* b_what) {
  PF_CHECK(a.dtype == b.dtype, "{}: {} is {} but {} is {}; the cuda backend needs one dtype here",
           op_name(op), a_what, dtype_name(a.dtype), b_what, dtype_name(b.dtype));
}

// View + float dtype check of an op's tensors, all in the dtype of the first.
void require_floats(Op op, std::initializer_list<std::pair<const Tensor*, const char*>> tensors) {
  const auto& first = *tensors.begin();
  for (const auto& [t, what] : tensors) {
    require_view(op, *t, what);
    require_float(op, *t, what);
    require_same_dtype(op, *first.first, first.second, *t, what);
  }
}

}  // namespace

void CudaBackend::gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta) {
  if (w.dtype == DType::F8_E4M3) {
    require_view(Op::Gemm, x, "x");
    require_float(Op::Gemm, x, "x");
    require_view(Op::Gemm, w, "w");
    PF_CHECK(w.scales != nullptr,
             "gemm: w is F8_E4M3 without row scales (Tensor::scales); an FP8 weight needs them");
  } else {
    require_floats(Op::Gemm, {{&x, "x"}, {&w, "w"}});
  }
  require_view(Op::Gemm, y, "y");
  require_float(Op::Gemm, y, "y");
  PF_CHECK(y.dtype == x.dtype || y.dtype == DType::F32,
           "gemm: y is {} but x is {}; y must be F32 or x's dtype", dtype_name(y.dtype),
           dtype_name(x.dtype));
  check_gemm_shapes(x, w, y);
  const int64_t m = x.rows, k = x.cols, n = w.rows;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    cuda::launch_scale(y, beta, stream_);
    return;
  }
  // Small M (decode): one pass over the weight, no split-K, for BF16 and FP8 weights.
  const bool gemv_weight =
      w.dtype == DType::F8_E4M3 || (w.dtype == DType::BF16 && x.dtype == DType::BF16);
  if (gemv_weight && m <= cuda::kGemvMaxRows && options_.small_m_gemv) {
    cuda::launch_gemv(x, w, y, beta, stream_);
    return;
  }
  if (w.dtype != DType::F8_E4M3) {
    gemm_->run(x, w, y, beta, stream_);
    return;
  }
  const int64_t ldw = w.rows <= 1 ? w.cols : w.row_stride;
  if (k % 16 == 0 && ldw % 16 == 0 && reinterpret_cast<uintptr_t>(w.data) % 16 == 0 &&
      options_.fp8_gemm) {
    // Activations to E4M3: per token (or the checkpoint's static scale), then the FP8 GEMM.
    void* codes = fp8_scratch(size_t(m * k) + size_t(m) * sizeof(float));
    float* x_scales =
        reinterpret_cast<float*>(static_cast<char*>(codes) + (size_t(m * k) + 15) / 16 * 16);
    cuda::launch_quantize_rows_fp8(x, w.input_scale, codes, x_scales, stream_);
    gemm_->run_fp8(codes, x_scales, m, w, y, beta, stream_);
    return;
  }
  // Shapes the FP8 GEMM cannot take: the weight dequantized to x's dtype, then the plain GEMM.
  const Tensor wx{fp8_scratch(size_t(n * k) * dtype_size(x.dtype)), x.dtype, n, k, k};
  cuda::launch_dequantize_fp8(w, wx, stream_);
  gemm_->run(x, wx, y, beta, stream_);
}

void* CudaBackend::fp8_scratch(size_t bytes) {
  bytes = (bytes + 15) / 16 * 16 + 16;
  if (fp8_scratch_.bytes() < bytes) {
    retire(std::move(fp8_scratch_));
    fp8_scratch_ = pool_->allocate(std::max(bytes * 2, size_t(1) << 20));
  }
  return fp8_scratch_.data();
}

void CudaBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  require_floats(Op::RmsNorm, {{&x, "x"}, {&y, "y"}});
  if (!weight.empty()) require_floats(Op::RmsNorm, {{&x, "x"}, {&weight, "weight"}});
  check_rmsnorm_shapes(x, weight, eps, y);
  cuda::launch_rmsnorm(x, Tensor{}, weight, eps, y, stream_);
}

void CudaBackend::add_rmsnorm(const Tensor& hidden, const Tensor& residual, const Tensor& weight,
                              float eps, const Tensor& y) {
  require_floats(Op::RmsNorm, {{&hidden, "hidden"}, {&residual, "residual"}, {&y, "y"}});
  require_same_shape(Op::RmsNorm, hidden, "hidden", residual, "residual");
  require_same_shape(Op::RmsNorm, hidden, "hidden", y, "y");
  if (!weight.empty()) {
    require_floats(Op::RmsNorm, {{&hidden, "hidden"}, {&weight, "weight"}});
    PF_CHECK(weight.rows == 1 && weight.cols == hidden.cols,
             "rmsnorm: weight is ({}, {}) but must be (1, {})", weight.rows, weight.cols,
             hidden.cols);
  }
  PF_CHECK(eps >= 0.0f, "rmsnorm: eps must be >= 0, got {}", eps);
  PF_CHECK(y.data != hidden.data && y.data != residual.data,
           "add_rmsnorm: y must not alias hidden or residual");
  cuda::launch_rmsnorm(hidden, residual, weight, eps, y, stream_);
}

void CudaBackend::rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                       int n_heads, int head_dim) {
  require_floats(Op::Rope, {{&x, "x"}});
  require_view(Op::Rope, positions, "positions");
  require_view(Op::Rope, inv_freq, "inv_freq");
  PF_CHECK(positions.dtype == DType::I32, "rope: positions has dtype {}, expected I32",
           dtype_name(positions.dtype));
  PF_CHECK(inv_freq.dtype == DType::F32, "rope: inv_freq has dtype {}, expected F32",
           dtype_name(inv_freq.dtype));
  check_rope_shapes(x, positions, inv_freq, n_heads, head_dim);
  cuda::launch_rope(x, positions, inv_freq, n_heads, head_dim, errors_, stream_);
  after_data_op();
}

void CudaBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
  require_floats(Op::SwiGlu, {{&gate, "gate"}, {&up, "up"}, {&out, "out"}});
  check_swiglu_shapes(gate, up, out);
  cuda::launch_swiglu(gate, up, out, stream_);
}

void CudaBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
  require_floats(Op::Add, {{&a, "a"}, {&b, "b"}, {&out, "out"}});
  check_add_shapes(a, b, out);
  cuda::launch_add(a, b, out, stream_);
}

void CudaBackend::embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                            const Tensor& out) {
  require_floats(Op::Embedding, {{&table, "table"}, {&out, "out"}});
  require_view(Op::Embedding, ids, "ids");
  PF_CHECK(ids.dtype == DType::I32, "embedding: ids has dtype {}, expected I32",
           dtype_name(ids.dtype));
  check_embedding_shapes(table, ids, vocab_begin, out);
  cuda::launch_embedding(table, ids, vocab_begin, out, errors_, stream_);
  after_data_op();
}

// --- attention --------------------------------------------------------------------------------

const cuda::AttentionMeta& CudaBackend::attention_meta(Op op, const AttentionBatch& batch,
                                                       int64_t n_slots) {
  const char* name = op_name(op).data();
  const int64_t bs = batch.block_size;
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  std::vector<int32_t> seqs, kv_rows, decode, tiles, tables;
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    const int64_t n_pos = seq.n_past + seq.n_new;
    PF_CHECK(n_pos <= kMax && n_slots <= kMax, "{}: sequence {} is too long for the cuda backend",
             name, s);
    PF_CHECK(n_pos == 0 || seq.block_table != nullptr,
             "{}: sequence {} has {} positions but no block table", name, s, n_pos);
    const int64_t n_blocks = (n_pos + bs - 1) / bs;
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int32_t block = seq.block_table[b];
      PF_CHECK(block >= 0, "{}: sequence {} block table entry {} is negative ({})", name, s, b,
               block);
      // The last slot this block serves must exist (positions past n_pos are never touched).
      const int64_t last_pos = std::min(n_pos, (b + 1) * bs) - 1;
      const int64_t slot = int64_t(block) * bs + last_pos % bs;
      PF_CHECK(slot < n_slots,
               "{}: sequence {} position {} maps to slot {} but the cache has {} slots", name, s,
               last_pos, slot, n_slots);
    }
    seqs.insert(seqs.end(), {int32_t(seq.q_begin), int32_t(seq.n_new), int32_t(seq.n_past),
                             int32_t(tables.size())});
    tables.insert(tables.end(), seq.block_table, seq.block_table + n_blocks);
    for (int64_t i = 0; i < seq.n_new; ++i) {
      const int64_t pos = seq.n_past + i;
      kv_rows.push_back(int32_t(seq.q_begin + i));
      kv_rows.push_back(int32_t(int64_t(seq.block_table[pos / bs]) * bs + pos % bs));
    }
    if (seq.n_new <= cuda::kDecodeMaxNew) {
      for (int64_t i = 0; i < seq.n_new; ++i) decode.insert(decode.end(), {int32_t(s), int32_t(i)});
    } else {
      for (int64_t i0 = 0; i0 < seq.n_new; i0 += cuda::kPrefillRows)
        tiles.insert(tiles.end(), {int32_t(s), int32_t(i0)});
    }
  }
  PF_CHECK(bs <= kMax, "{}: block_size {} is too large", name, bs);
  // One buffer: [seqs | kv_rows | decode | tiles | tables | counts].
  std::vector<int32_t> packed;
  packed.reserve(seqs.size() + kv_rows.size() + decode.size() + tiles.size() + tables.size() + 6);
  for (auto* part : {&seqs, &kv_rows, &decode, &tiles, &tables})
    packed.insert(packed.end(), part->begin(), part->end());
  packed.insert(packed.end(), {int32_t(bs), int32_t(seqs.size()), int32_t(kv_rows.size()),
                               int32_t(decode.size()), int32_t(tiles.size())});
  if (packed != meta_host_) {
    PF_CHECK(!capturing_,
             "{}: the attention batch changed during a CUDA graph capture; call "
             "prepare_attention() with the step's batch before run_graph()",
             name);
    const size_t bytes = packed.size() * sizeof(int32_t);
    if (meta_buffer_.bytes() < bytes) {
      retire(std::move(meta_buffer_));
      meta_buffer_ = pool_->allocate(std::max(bytes * 2, size_t(4096)));
      if (!graphs_.empty()) clear_graphs();  // graphs read the old buffer's address
    }
    PF_CHECK(bytes <= staging_->slot_bytes(), "{}: attention metadata of {} bytes is too large",
             name, bytes);
    cuda::PinnedStaging::Slot& slot = staging_->acquire();
    std::memcpy(slot.host, packed.data(), bytes);
    PF_CUDA_CHECK(
        cudaMemcpyAsync(meta_buffer_.data(), slot.host, bytes, cudaMemcpyHostToDevice, stream_));
    staging_->release(slot, stream_);
    meta_host_ = std::move(packed);
    const int32_t* base = static_cast<const int32_t*>(meta_buffer_.data());
    meta_.seqs = base;
    meta_.kv_rows = meta_.seqs + seqs.size();
    meta_.decode_items = meta_.kv_rows + kv_rows.size();
    meta_.prefill_tiles = meta_.decode_items + decode.size();
    meta_.block_tables = meta_.prefill_tiles + tiles.size();
    meta_.block_size = int(bs);
    meta_.n_seqs = int(seqs.size() / 4);
    meta_.n_kv_rows = int(kv_rows.size() / 2);
    meta_.n_decode = int(decode.size() / 2);
    meta_.n_tiles = int(tiles.size() / 2);
  }
  return meta_;
}

void CudaBackend::prepare_attention(const AttentionBatch& batch, int64_t n_slots) {
  refuse_in_capture("prepare_attention");
  int64_t rows = 0;
  for (const AttentionSeq& s : batch.seqs) rows = std::max(rows, s.q_begin + s.n_new);
  check_attention_batch(Op::Attention, batch, rows);
  attention_meta(Op::Attention, batch, n_slots);
}

float* CudaBackend::attention_workspace(int64_t floats) {
  const size_t bytes = size_t(floats) * sizeof(float);
  if (attn_workspace_.bytes() < bytes) {
    retire(std::move(attn_workspace_));
    attn_workspace_ = pool_->allocate(std::max(bytes * 2, size_t(1) << 20));
  }
  return static_cast<float*>(attn_workspace_.data());
}

void CudaBackend::kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                           const Tensor& v_cache, const AttentionBatch& batch) {
  require_floats(Op::KvStore, {{&k, "k"}, {&v, "v"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}});
  check_kv_store_shapes(k, v, k_cache, v_cache, batch);
  const cuda::AttentionMeta& meta = attention_meta(Op::KvStore, batch, k_cache.rows);
  cuda::launch_kv_store(k, v, k_cache, v_cache, meta, stream_);
}

void CudaBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const AttentionBatch& batch, const AttentionShape& shape,
                            const Tensor& out) {
  require_floats(Op::Attention,
                 {{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&out, "out"}});
  check_attention_shapes(q, k_cache, v_cache, batch, shape, out);
  PF_CHECK(shape.head_dim <= cuda::kMaxHeadDim,
           "attention: head_dim {} exceeds the cuda backend's {}", shape.head_dim,
           cuda::kMaxHeadDim);
  const int n_heads = shape.n_heads;
  const cuda::AttentionMeta& meta = attention_meta(Op::Attention, batch, k_cache.rows);
  if (meta.n_decode == 0 && meta.n_tiles == 0) return;
  // Split decode rows over keys until the grid covers the GPU twice (a function of the batch
  // shape only, so a captured graph stays valid as the context grows).
  const int64_t blocks = int64_t(meta.n_decode) * n_heads;
  const int n_splits = blocks == 0
                           ? 1
                           : int(std::clamp<int64_t>(2 * sm_count_ / std::max<int64_t>(blocks, 1),
                                                     1, cuda::kMaxSplits));
  float* workspace = nullptr;
  if (n_splits > 1)
    workspace = attention_workspace(cuda::attention_workspace_floats(meta, shape, n_splits));
  cuda::launch_attention(q, k_cache, v_cache, meta, shape, out, n_splits, workspace, stream_);
}

// --- sampling ---------------------------------------------------------------------------------

void CudaBackend::sample(const Tensor& logits, const SamplingParams* params, int32_t* ids_out) {
  refuse_in_capture("sample");
  require_view(Op::Sample, logits, "logits");
  PF_CHECK(logits.dtype == DType::F32, "sample: logits has dtype {}, but sampling reads F32",
           dtype_name(logits.dtype));
  check_sample_shapes(logits, params, ids_out);
  const int64_t m = logits.rows;
  if (m == 0) return;
  for (int64_t r = 0; r < m; ++r) check_sample_params(r, params[r]);
  const size_t params_bytes = size_t(m) * sizeof(SamplingParams);
  const size_t results_bytes = size_t(m) * sizeof(cuda::SampleResult);
  if (sample_params_.bytes() < params_bytes) sample_params_ = pool_->allocate(params_bytes);
  if (sample_results_.bytes() < results_bytes) sample_results_ = pool_->allocate(results_bytes);
  std::vector<cuda::SampleResult> results(static_cast<size_t>(m));
  for (int64_t r0 = 0; r0 < m;) {  // params through the pinned staging, slot by slot
    const int64_t n =
        std::min<int64_t>(m - r0, int64_t(staging_->slot_bytes() / sizeof(SamplingParams)));
    cuda::PinnedStaging::Slot& slot = staging_->acquire();
    std::memcpy(slot.host, params + r0, size_t(n) * sizeof(SamplingParams));
    PF_CUDA_CHECK(cudaMemcpyAsync(static_cast<SamplingParams*>(sample_params_.data()) + r0,
                                  slot.host, size_t(n) * sizeof(SamplingParams),
                                  cudaMemcpyHostToDevice, stream_));
    staging_->release(slot, stream_);
    r0 += n;
  }
  cuda::launch_sample(logits, static_cast<const SamplingParams*>(sample_params_.data()),
                      static_cast<cuda::SampleResult*>(sample_results_.data()), stream_);
  PF_CUDA_CHECK(cudaMemcpyAsync(results.data(), sample_results_.data(), results_bytes,
                                cudaMemcpyDeviceToHost, stream_));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_errors();
  for (int64_t r = 0; r < m; ++r) {
    const cuda::SampleResult& res = results[size_t(r)];
    PF_CHECK(res.code != cuda::kSampleNaN, "sample: row {} has a NaN logit at token {}", r,
             res.token);
    PF_CHECK(res.code != cuda::kSampleNonFiniteMax,
             "sample: row {} has a non-finite maximum logit; temperature sampling needs a finite "
             "maximum",
             r);
    ids_out[r] = res.id;
  }
}

}  // namespace parafuse

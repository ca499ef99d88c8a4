// The shape and argument preconditions every backend shares (see op_checks.h): written once so
// that the backends cannot drift apart in what they accept or in how they word a rejection.
#include "kernels/op_checks.h"

#include <cmath>
#include <limits>

#include "kernels/core/error.h"

namespace parafuse {

void require_view(Op op, const Tensor& t, const char* what) {
  PF_CHECK(t.rows >= 0 && t.cols >= 0, "{}: {} has a negative shape ({}, {})", op_name(op), what,
           t.rows, t.cols);
  PF_CHECK(t.rows <= 1 || t.row_stride >= t.cols, "{}: {} has row_stride {} < cols {}", op_name(op),
           what, t.row_stride, t.cols);
  PF_CHECK(t.numel() == 0 || t.data != nullptr, "{}: {} ({}, {}) has no data", op_name(op), what,
           t.rows, t.cols);
}

void require_same_shape(Op op, const Tensor& a, const char* a_what, const Tensor& b,
                        const char* b_what) {
  PF_CHECK(a.rows == b.rows && a.cols == b.cols, "{}: {} is ({}, {}) but {} is ({}, {})",
           op_name(op), a_what, a.rows, a.cols, b_what, b.rows, b.cols);
}

void check_attention_batch(Op op, const AttentionBatch& batch, int64_t rows) {
  PF_CHECK(batch.block_size > 0, "{}: block_size must be > 0, got {}", op_name(op),
           batch.block_size);
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const AttentionSeq& seq = batch.seqs[s];
    PF_CHECK(seq.q_begin >= 0 && seq.n_new >= 0 && seq.n_past >= 0,
             "{}: sequence {} has q_begin {}, n_new {}, n_past {}; all must be >= 0", op_name(op),
             s, seq.q_begin, seq.n_new, seq.n_past);
    PF_CHECK(seq.q_begin + seq.n_new <= rows,
             "{}: sequence {} covers rows [{}, {}) but the batch tensor has {} rows", op_name(op),
             s, seq.q_begin, seq.q_begin + seq.n_new, rows);
  }
}

void check_copy_shapes(const Tensor& src, const Tensor& dst) {
  require_same_shape(Op::Copy, src, "src", dst, "dst");
  PF_CHECK(src.dtype == dst.dtype, "copy: src is {} but dst is {}", dtype_name(src.dtype),
           dtype_name(dst.dtype));
}

void check_gemm_shapes(const Tensor& x, const Tensor& w, const Tensor& y) {
  const int64_t m = x.rows, k = x.cols, n = w.rows;
  PF_CHECK(w.cols == k, "gemm: x is ({}, {}) but w is ({}, {}); w must be (n, {})", m, k, w.rows,
           w.cols, k);
  PF_CHECK(y.rows == m && y.cols == n, "gemm: y is ({}, {}) but x (m,k) * w (n,k)^T is ({}, {})",
           y.rows, y.cols, m, n);
}

void check_rmsnorm_shapes(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  require_same_shape(Op::RmsNorm, x, "x", y, "y");
  if (!weight.empty()) {
    PF_CHECK(weight.rows == 1 && weight.cols == x.cols,
             "rmsnorm: weight is ({}, {}) but must be (1, {})", weight.rows, weight.cols, x.cols);
  }
  PF_CHECK(eps >= 0.0f, "rmsnorm: eps must be >= 0, got {}", eps);
}

void check_rope_shapes(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                       int n_heads, int head_dim) {
  PF_CHECK(n_heads > 0 && head_dim > 0 && head_dim % 2 == 0,
           "rope: need n_heads > 0 and an even head_dim > 0, got n_heads {} head_dim {}", n_heads,
           head_dim);
  PF_CHECK(x.cols == int64_t(n_heads) * head_dim,
           "rope: x has {} cols but n_heads {} * head_dim {} = {}", x.cols, n_heads, head_dim,
           int64_t(n_heads) * head_dim);
  PF_CHECK(positions.rows == x.rows && positions.cols == 1,
           "rope: positions is ({}, {}) but must be ({}, 1)", positions.rows, positions.cols,
           x.rows);
  PF_CHECK(inv_freq.rows == 1 && inv_freq.cols == head_dim / 2,
           "rope: inv_freq is ({}, {}) but must be (1, {})", inv_freq.rows, inv_freq.cols,
           head_dim / 2);
}

void check_kv_store_shapes(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                           const Tensor& v_cache, const AttentionBatch& batch) {
  require_same_shape(Op::KvStore, k, "k", v, "v");
  require_same_shape(Op::KvStore, k_cache, "k_cache", v_cache, "v_cache");
  PF_CHECK(k.cols == k_cache.cols, "kv_store: k has {} cols but the cache rows have {}", k.cols,
           k_cache.cols);
  check_attention_batch(Op::KvStore, batch, k.rows);
}

void check_attention_shapes(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const AttentionBatch& batch, const AttentionShape& shape,
                            const Tensor& out) {
  const int n_heads = shape.n_heads, n_kv_heads = shape.n_kv_heads, hd = shape.head_dim;
  PF_CHECK(n_heads > 0 && n_kv_heads > 0 && hd > 0 && n_heads % n_kv_heads == 0,
           "attention: bad shape n_heads {} n_kv_heads {} head_dim {} (n_heads must be a positive "
           "multiple of n_kv_heads)",
           n_heads, n_kv_heads, hd);
  PF_CHECK(std::isfinite(shape.scale), "attention: scale must be finite, got {}", shape.scale);
  require_same_shape(Op::Attention, q, "q", out, "out");
  require_same_shape(Op::Attention, k_cache, "k_cache", v_cache, "v_cache");
  PF_CHECK(q.cols == int64_t(n_heads) * hd, "attention: q has {} cols but n_heads {} * head_dim {}",
           q.cols, n_heads, hd);
  PF_CHECK(k_cache.cols == int64_t(n_kv_heads) * hd,
           "attention: the cache rows have {} cols but n_kv_heads {} * head_dim {}", k_cache.cols,
           n_kv_heads, hd);
  check_attention_batch(Op::Attention, batch, q.rows);
}

void check_swiglu_shapes(const Tensor& gate, const Tensor& up, const Tensor& out) {
  require_same_shape(Op::SwiGlu, gate, "gate", up, "up");
  require_same_shape(Op::SwiGlu, gate, "gate", out, "out");
}

void check_add_shapes(const Tensor& a, const Tensor& b, const Tensor& out) {
  require_same_shape(Op::Add, a, "a", b, "b");
  require_same_shape(Op::Add, a, "a", out, "out");
}

void check_embedding_shapes(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                            const Tensor& out) {
  PF_CHECK(ids.rows == out.rows && ids.cols == 1, "embedding: ids is ({}, {}) but must be ({}, 1)",
           ids.rows, ids.cols, out.rows);
  PF_CHECK(table.cols == out.cols, "embedding: table has {} cols but out has {}", table.cols,
           out.cols);
  PF_CHECK(vocab_begin >= 0, "embedding: vocab_begin must be >= 0, got {}", vocab_begin);
}

void check_sample_shapes(const Tensor& logits, const SamplingParams* params,
                         const int32_t* ids_out) {
  if (logits.rows == 0) return;
  PF_CHECK(logits.cols > 0 && logits.cols <= std::numeric_limits<int32_t>::max(),
           "sample: vocab size {} must be in [1, 2^31)", logits.cols);
  PF_CHECK(params != nullptr && ids_out != nullptr, "sample: params and ids_out must not be null");
}

void check_sample_params(int64_t row, const SamplingParams& params) {
  PF_CHECK(std::isfinite(params.temperature) && params.temperature >= 0.0f,
           "sample: row {} has temperature {}; it must be finite and >= 0", row,
           params.temperature);
  PF_CHECK(params.top_k >= 0, "sample: row {} has top_k {}; it must be >= 0 (0 disables it)", row,
           params.top_k);
  PF_CHECK(params.top_p > 0.0f && params.top_p <= 1.0f,
           "sample: row {} has top_p {}; it must be in (0, 1] (1 disables it)", row, params.top_p);
}

}  // namespace parafuse

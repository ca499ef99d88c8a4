// The backend-independent preconditions of the Backend ops: one place for the checks every
// backend makes, so that the CPU reference and the CUDA backend reject a bad call with the same
// Error, worded once (tests/unit/backend_op_cases.h expect_op_errors runs on both).
//
// What is here: tensor views (non-null, sane strides), shapes that must agree, and scalar and
// batch arguments. What is not: dtypes (each backend computes in its own: CPU F32 only, CUDA F32
// or BF16) and limits of one implementation (the 32-bit BLAS interface, CUDA's largest
// head_dim). A backend checks views and dtypes first, then calls the op's check_*_shapes, then
// its own limits. Every function throws parafuse::Error naming the op.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace parafuse {

// Non-negative shape, row_stride >= cols (for more than one row), data unless empty.
void require_view(Op op, const Tensor& t, const char* what);
void require_same_shape(Op op, const Tensor& a, const char* a_what, const Tensor& b,
                        const char* b_what);

// Each sequence's rows lie inside the batch tensor's `rows`; block_size > 0. Block tables are
// checked against the cache by the backend as it reads them.
void check_attention_batch(Op op, const AttentionBatch& batch, int64_t rows);

// The shapes and arguments of each op, as documented at Backend (kernels/backend.h).
void check_copy_shapes(const Tensor& src, const Tensor& dst);  // also: one dtype
void check_gemm_shapes(const Tensor& x, const Tensor& w, const Tensor& y);
void check_rmsnorm_shapes(const Tensor& x, const Tensor& weight, float eps, const Tensor& y);
void check_rope_shapes(const Tensor& x, const Tensor& positions, const Tensor& inv_freq,
                       int n_heads, int head_dim);
void check_kv_store_shapes(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                           const Tensor& v_cache, const AttentionBatch& batch);
void check_attention_shapes(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const AttentionBatch& batch, const AttentionShape& shape,
                            const Tensor& out);
void check_swiglu_shapes(const Tensor& gate, const Tensor& up, const Tensor& out);
void check_add_shapes(const Tensor& a, const Tensor& b, const Tensor& out);
void check_embedding_shapes(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                            const Tensor& out);
// Vocab size and the host pointers; nothing is checked when logits has no rows.
void check_sample_shapes(const Tensor& logits, const SamplingParams* params,
                         const int32_t* ids_out);
// One row's SamplingParams: temperature finite and >= 0, top_k >= 0, top_p in (0, 1].
void check_sample_params(int64_t row, const SamplingParams& params);

}  // namespace parafuse

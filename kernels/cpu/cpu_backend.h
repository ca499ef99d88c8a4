// The CPU backend: the slow, readable reference every other backend is tested against.
//
// F32 weights and activations only (plus I32 token ids and positions); anything else is
// rejected with an Error naming the op and the dtype. GEMM goes to OpenBLAS (cblas_sgemm); every
// other op is a plain loop written so that -O2 vectorizes its inner dimension. Memory is host
// memory aligned to 64 bytes. The sources are split by op family:
//   cpu_memory_gemm.cpp   memory, upload/download, copy, gemm
//   cpu_elementwise.cpp   rmsnorm, rope, swiglu, add, embedding
//   cpu_attention.cpp     kv_store, paged causal GQA attention (online softmax)
//   cpu_sampling.cpp      greedy / temperature / top-k / top-p sampling
#pragma once

#include <initializer_list>
#include <memory>
#include <string_view>

#include "kernels/backend.h"

namespace parafuse {

class CpuBackend final : public Backend {
 public:
  // `threads` is handed to OpenBLAS (openblas_set_num_threads, a process-wide setting); the
  // other ops run on the calling thread.
  explicit CpuBackend(int threads = 1);

  std::string_view name() const override { return "cpu"; }
  // F32 for every op; Copy also moves I32 tensors.
  bool supports(Op op, DType dtype) const override;
  DType weight_dtype() const override { return DType::F32; }
  DType activation_dtype() const override { return DType::F32; }
  int threads() const { return threads_; }

  Buffer alloc(size_t bytes) override;
  void upload_f32(const float* host, const Tensor& dst) override;
  void upload_i32(const int32_t* host, const Tensor& dst) override;
  void download_f32(const Tensor& src, float* host) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void synchronize() override {}

  void gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta = 0.0f) override;
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override;
  void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
            int head_dim) override;
  void kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                const AttentionBatch& batch) override;
  void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                 const AttentionBatch& batch, const AttentionShape& shape,
                 const Tensor& out) override;
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void add(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                 const Tensor& out) override;
  void sample(const Tensor& logits, const SamplingParams* params, int32_t* ids_out) override;

 private:
  int threads_ = 1;
};

std::unique_ptr<Backend> make_cpu_backend(int threads = 1);

namespace cpu_detail {
// The CPU sources' dtype check (F32 or I32, per tensor); throws an Error naming the op. The
// checks every backend shares are in kernels/op_checks.h.
void require_dtype(Op op, const Tensor& t, const char* what, DType dtype);

struct TensorArg {
  const Tensor& tensor;
  const char* name;
  DType dtype;
};
// require_view for every tensor, then require_dtype for every tensor, in order.
void require_tensors(Op op, std::initializer_list<TensorArg> tensors);
}  // namespace cpu_detail

}  // namespace parafuse

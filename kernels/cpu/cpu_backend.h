// The CPU backend: the readable reference every other backend is tested against, and a fast
// path for running models on a laptop.
//
// Activations are F32 (plus I32 token ids and positions). Weights are F32, or stay in their
// file's format — Q8_0, Q4_0, Q4_1, F16, BF16 — where supports_weight() says so (the loaders then
// upload them with upload_weight(), no F32 copy); `native_weights = false` keeps every weight F32
// (the reference path tests compare against). gemm runs decode-sized products (m <= 8) as
// matrix-vector products straight from the stored format with SIMD kernels picked at run time
// (AVX-512 VNNI, AVX2 or plain C++: cpu_kernels.h), and prefill-sized ones as F32 tiles through
// OpenBLAS sgemm. Every op runs on one thread pool of `threads` threads (thread_pool.h): GEMV
// over output rows, attention over (row, head) pairs, the row-wise ops over rows or columns,
// sampling over rows; OpenBLAS itself is set to one thread, since the pool's threads call it.
// Memory is host memory aligned to 64 bytes; allocations of 64 KiB and more (weights, the KV
// cache, prefill scratch) are carved from 2 MiB-aligned chunks that ask for transparent huge pages
// (see CpuBackend::alloc). The sources are split by op family:
//   cpu_memory_gemm.cpp   construction, memory, upload/download, copy
//   cpu_gemm.cpp          gemm: GEMV path and tiled sgemm path
//   cpu_kernels.{h,cpp}   the kernel sets (dot products, quantize, dequantize) and their choice;
//   cpu_gemv_x86.inc      their AVX2 / AVX-512 code, built by cpu_gemv_avx2/avx512.cpp
//   thread_pool.{h,cpp}   the pool
//   cpu_elementwise.cpp   rmsnorm, rope, swiglu, add, embedding
//   cpu_attention.cpp     kv_store, paged causal GQA attention (online softmax)
//   cpu_sampling.cpp      greedy / temperature / top-k / top-p sampling
#pragma once

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "kernels/core/quant.h"

namespace parafuse {

class ThreadPool;
namespace cpu_detail {
struct HugePageChunk;
}
namespace cpu_kernels {
struct KernelSet;
}

struct CpuBackendOptions {
  int threads = 1;             // the pool's threads (the caller's thread is one of them)
  bool native_weights = true;  // keep Q8_0/Q4_0/Q4_1/F16/BF16 weights as they are stored
  std::string isa = "best";    // kernel set: best, avx512-vnni, avx2, generic (cpu_kernels.h)
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads = 1);
  explicit CpuBackend(const CpuBackendOptions& options);
  ~CpuBackend() override;

  std::string_view name() const override { return "cpu"; }
  // F32 for every op; Copy also moves I32 tensors.
  bool supports(Op op, DType dtype) const override;
  DType weight_dtype() const override { return DType::F32; }
  DType activation_dtype() const override { return DType::F32; }
  // F32 always; F16, BF16, Q8_0, Q4_0, Q4_1 and F8_E4M3 (with row scales, cpu_fp8.cpp)
  // unless native_weights is off.
  bool supports_weight(DType dtype) const override;
  // F32 or F16 (halves widened as attention reads them; cpu_attention.cpp).
  bool supports_kv_cache(DType dtype) const override;
  int threads() const { return threads_; }
  const char* isa() const;  // the kernel set in use
  ThreadPool& pool() { return *pool_; }

  Buffer alloc(size_t bytes) override;
  void upload_f32(const float* host, const Tensor& dst) override;
  void upload_weight(const void* host, const Tensor& dst) override;
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
  void gemm_fp8(const Tensor& x, const Tensor& w, const Tensor& y, float beta);  // cpu_fp8.cpp

  int threads_ = 1;
  bool native_weights_ = true;
  std::unique_ptr<ThreadPool> pool_;
  const cpu_kernels::KernelSet* kernels_ = nullptr;
  std::shared_ptr<cpu_detail::HugePageChunk> chunk_;  // where alloc carves large buffers now
  std::vector<ActivationBlock> activation_scratch_;   // gemm's quantized activation rows
  std::vector<float> attention_partials_;             // decode attention's per-chunk results
  std::vector<std::vector<int64_t>> slot_scratch_;    // kv_store's / attention's cache slots
  std::vector<float> sample_scratch_;                 // sample's row maxima
  struct RopeTable {  // rope's cos/sin rows for the last call's positions and frequencies
    std::vector<float> freq, cos, sin;
    std::vector<int32_t> pos;
  } rope_table_;
};

std::unique_ptr<Backend> make_cpu_backend(int threads = 1);
std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options);

// Rows [row_begin, row_end) of an F8_E4M3 weight with row scales -> F32 values
// (code * scale), (row_end - row_begin) x w.cols contiguous floats (cpu_fp8.cpp).
void dequantize_fp8_rows(const Tensor& w, int64_t row_begin, int64_t row_end, float* out);

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

// std::max folded over x[0..n) from -inf (NaNs skipped, as the scalar fold skips them), in 16
// independent lanes so that the loop vectorizes (maxps): attention's tile max and sampling's row
// max. With kFindNan, has_nan says whether a NaN was skipped (in the same pass).
template <bool kFindNan = false>
inline float max_of(const float* x, int64_t n, bool* has_nan = nullptr) {
  constexpr int kLanes = 16;
  float lanes[kLanes];
  int nan[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    lanes[j] = -std::numeric_limits<float>::infinity();
    nan[j] = 0;
  }
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      lanes[j] = lanes[j] < x[i + j] ? x[i + j] : lanes[j];
      if constexpr (kFindNan) nan[j] |= x[i + j] != x[i + j];
    }
  }
  float m = lanes[0];
  bool any_nan = nan[0] != 0;
  for (int j = 1; j < kLanes; ++j) {
    m = std::max(m, lanes[j]);
    any_nan = any_nan || nan[j] != 0;
  }
  for (; i < n; ++i) {
    m = std::max(m, x[i]);
    any_nan = any_nan || x[i] != x[i];
  }
  if constexpr (kFindNan) *has_nan = any_nan;
  return m;
}
}  // namespace cpu_detail

}  // namespace parafuse

// The compute backend interface: device memory plus the ops one decoder step needs.
//
// Built the ggml-backend way: one small interface, an explicit supports() query, and a CPU
// implementation (kernels/cpu) that is the reference every other backend is tested against op
// by op (tests/unit/test_backend_ops.cpp). Everything is a row-major 2-D Tensor view; the
// caller owns the shapes and the backend asserts them. Weights are stored in weight_dtype(), or
// in a file's own format where supports_weight() says the backend multiplies by it directly
// (block-quantized Q8_0 / Q4_0 / Q4_1, F16, BF16 on the CPU backend); activations are in
// activation_dtype(); logits are always F32.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/core/dtype.h"

namespace parafuse {

// A non-owning row-major view: `rows` x `cols` elements, row r starting `row_stride` elements
// after row r-1 (row_stride == cols when contiguous). For a block-quantized dtype, cols,
// row_stride and column views are whole 32-element blocks (dtype_row_bytes).
// An F8_E4M3 weight also carries its dequantization: `scales` holds one F32 per row (value =
// code * scales[row]; a per-tensor scale is repeated per row at load), in the same memory as
// `data` (device memory on a device backend), and `input_scale` is the checkpoint's static
// activation scale (0: none, activations are scaled per token).
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  const float* scales = nullptr;  // F8_E4M3 weights: rows floats; rows_view moves with them
  float input_scale = 0.0f;       // F8_E4M3 weights: static activation scale, 0 if none

  bool empty() const { return data == nullptr; }
  int64_t numel() const { return rows * cols; }
  bool contiguous() const { return row_stride == cols; }
  size_t bytes() const { return size_t(rows) * dtype_row_bytes(dtype, cols); }
  Tensor rows_view(int64_t begin, int64_t end) const;  // rows [begin, end)
  Tensor cols_view(int64_t begin, int64_t end) const;  // cols [begin, end), strided
  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }
};

// Owning backend memory; frees itself through the backend that made it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(void* data, size_t bytes, std::function<void(void*)> free_fn)
      : data_(data), bytes_(bytes), free_(std::move(free_fn)) {}
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }
  void reset();
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  std::function<void(void*)> free_;
};

enum class Op { Gemm, RmsNorm, Rope, KvStore, Attention, SwiGlu, Add, Embedding, Sample, Copy };
std::string_view op_name(Op op);

// Per-row sampling: temperature 0 is greedy; top_k 0 and top_p 1 disable those filters.
// The random draw for a row is a pure function of (seed, counter), so a run is reproducible
// on any backend and any number of ranks. The rule every backend follows (kernels/cpu is the
// reference): temperature 0 -> argmax, lowest id on ties. Otherwise w_i = exp((l_i - max) / T)
// in double; top-k keeps the k largest w (ties: lower id first); top-p then keeps the shortest
// prefix of those, by w descending, whose sum reaches top_p * their total (at least one);
// u = counter_uniform(seed, counter) (kernels/core/random.h), and the token is the first kept id,
// walking ids upward, at which the running sum of kept w exceeds u * (sum of kept w).
struct SamplingParams {
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  uint64_t counter = 0;  // usually the position of the token being sampled
};

// The attention metadata of one batch: which rows of q belong to which sequence, and where that
// sequence's keys/values live in the paged cache (slot = block_table[pos / block_size] *
// block_size + pos % block_size). Host memory; a device backend copies what it needs.
struct AttentionSeq {
  int64_t q_begin = 0;                   // first row of this sequence in q / out / new k,v
  int64_t n_new = 0;                     // rows (new tokens) of this sequence
  int64_t n_past = 0;                    // tokens already cached before them
  const int32_t* block_table = nullptr;  // covers positions [0, n_past + n_new)
};
struct AttentionBatch {
  std::vector<AttentionSeq> seqs;
  int64_t block_size = 16;
};
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;  // n_heads % n_kv_heads == 0 (GQA)
  int head_dim = 0;
  float scale = 0.0f;  // usually 1/sqrt(head_dim)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual bool supports(Op op, DType dtype) const = 0;
  virtual DType weight_dtype() const = 0;
  virtual DType activation_dtype() const = 0;
  // Whether tensors live in device memory that host code cannot touch: collectives and
  // transports then use the device's own (NCCL) or stage through host memory.
  virtual bool device_memory() const { return false; }

  // --- memory -------------------------------------------------------------------------------
  virtual Buffer alloc(size_t bytes) = 0;
  // A contiguous tensor in fresh memory; the Buffer keeps it alive.
  Tensor alloc_tensor(Buffer& owner, DType dtype, int64_t rows, int64_t cols);
  // host F32 (rows*cols, contiguous) -> dst, converting to dst.dtype.
  virtual void upload_f32(const float* host, const Tensor& dst) = 0;
  // Whether gemm() takes weights `w` stored as `dtype` (the weight_dtype() always; file formats
  // where the backend multiplies by them directly). Loaders keep a weight in its file's format
  // only where this holds, and convert it to weight_dtype() otherwise.
  virtual bool supports_weight(DType dtype) const { return dtype == weight_dtype(); }
  // Whether kv_store and attention take KV cache tensors of `dtype` (k and v, the new rows, and
  // q and out stay activation_dtype()). The default: the activation dtype alone. The CPU
  // backend also keeps F16 caches (half the bytes decode attention reads).
  virtual bool supports_kv_cache(DType dtype) const { return dtype == activation_dtype(); }
  // host bytes in dst.dtype's own storage format (rows x dtype_row_bytes(cols), contiguous)
  // -> dst; dst.dtype must be a supports_weight() type. The default goes through F32 and
  // upload_f32 (exact for F16 / BF16 into a tensor of that dtype).
  virtual void upload_weight(const void* host, const Tensor& dst);
  // host I32 -> dst (I32)
  virtual void upload_i32(const int32_t* host, const Tensor& dst) = 0;
  // src -> host F32 (rows*cols, contiguous), converting from src.dtype.
  virtual void download_f32(const Tensor& src, float* host) = 0;
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;  // same shape and dtype
  virtual void synchronize() = 0;

  // --- ops (shapes in comments: (rows, cols)) -----------------------------------------------
  // y (m,n) = x (m,k) * w (n,k)^T + beta * y. w is a weight in HF (out, in) layout, of
  // weight_dtype() or any supports_weight() type.
  virtual void gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta = 0.0f) = 0;
  // y (m,d) = x / rms(x) * weight (1,d); an empty weight means all ones.
  virtual void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) = 0;
  // In place, rotate-half (HF/NeoX) layout: x (m, n_heads*head_dim), positions (m,1) I32,
  // inv_freq (1, head_dim/2) F32 (already holding any Llama-3 scaling).
  virtual void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
                    int head_dim) = 0;
  // Write new keys/values k, v (m, n_kv_heads*head_dim) into the paged caches
  // k_cache, v_cache (n_slots, n_kv_heads*head_dim; one supports_kv_cache() dtype, rounded to
  // it) at the slots of each sequence's positions [n_past, n_past + n_new).
  virtual void kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache,
                        const Tensor& v_cache, const AttentionBatch& batch) = 0;
  // Causal GQA attention of q (m, n_heads*head_dim) over each sequence's cached keys
  // [0, n_past + i] for its i-th new row (the new rows must be kv_store'd first).
  virtual void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                         const AttentionBatch& batch, const AttentionShape& shape,
                         const Tensor& out) = 0;
  // out (m,f) = silu(gate) * up
  virtual void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  // out = a + b (same shapes; out may alias a or b)
  virtual void add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out (m,d) = table[ids - vocab_begin], ids (m,1) I32; rows whose id is outside
  // [vocab_begin, vocab_begin + table.rows) become zero (vocab-parallel embedding); a negative
  // id is an error.
  virtual void embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                         const Tensor& out) = 0;
  // One token id per row of logits (m, vocab) F32, written to host ids_out[m]; params[m] (host)
  // holds one SamplingParams per row. Bad params or a NaN logit are errors.
  virtual void sample(const Tensor& logits, const SamplingParams* params, int32_t* ids_out) = 0;

  // --- step graphs (CUDA graphs; other backends run fn directly) ----------------------------
  // Where records_graphs(), run_graph(key, fn) records fn's ops the first time `key` is seen
  // and replays the recording afterwards: fn may not move host data or wait, so inputs go to
  // fixed device addresses first, and the step's attention metadata is staged with
  // prepare_attention(batch, n_slots). clear_graphs() drops every recording (call it when a
  // recorded address is freed).
  virtual bool records_graphs() const { return false; }
  virtual void prepare_attention(const AttentionBatch& batch, int64_t n_slots) {
    (void)batch, (void)n_slots;
  }
  virtual void run_graph(const std::string& key, const std::function<void()>& fn) {
    (void)key;
    fn();
  }
  virtual void clear_graphs() {}
};

}  // namespace parafuse

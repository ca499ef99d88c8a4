// The CUDA backend: bf16 weights and activations with fp32 accumulation, on one device and one
// stream.
//
// Every op is asynchronous on the backend's stream; only download_f32, sample and synchronize
// wait. GEMM goes to cuBLASLt (bf16 in, fp32 compute, bf16 or f32 out; plans cached per
// shape); each other op is one kernel (one .cu per op family, see README.md). Ops accept F32 or
// BF16 tensors (all float tensors of one call share one dtype, except RoPE's F32 inv_freq and
// F32 logits), so the op test can run the table on F32 tensors and, through a conversion
// adapter, on BF16 ones. Bad *shapes* are Errors at the call; bad *data* that only the device
// sees (a negative token id or position) is recorded by the kernel and raised at the next
// synchronization point (download_f32, sample, synchronize), or at the call itself with
// Options::check_every_op. AttentionBatch (host metadata) is packed and uploaded once per
// distinct batch into a device buffer that all layers of a step share.
// CUDA graphs: run_graph(key, fn) captures fn once per key and replays it afterwards; while
// capturing, calls that wait for the device or move host data are refused (see README.md for
// what an engine must do before each replay).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_memory.h"

namespace parafuse {

namespace cuda {
struct DeviceErrors;
class GemmPlans;
}  // namespace cuda

struct CudaBackendOptions {
  int device = 0;
  bool check_every_op = false;  // synchronize after ops that can see bad data
  size_t gemm_workspace_bytes = size_t(32) << 20;
  size_t staging_slot_bytes = size_t(32) << 20;  // pinned host staging: 4 slots of this size
  // GEMMs of up to kGemvMaxRows activation rows on BF16 / FP8 weights run as one GEMV kernel
  // (gemv.cuh) instead of cuBLASLt (whose small-M kernels split K and reduce in a second pass).
  bool small_m_gemv = true;
  // FP8 weights at larger M: the cuBLASLt FP8 GEMM (activations quantized to E4M3); off, the
  // weight is dequantized to the activation dtype and multiplied in BF16 (the reference).
  bool fp8_gemm = true;
  // Threads that copy weights into the pinned staging slots while earlier slots are in flight.
  int upload_threads = 8;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return "cuda"; }
  // F32 and BF16 for every op (Copy also I32); Sample reads F32 logits only.
  bool supports(Op op, DType dtype) const override;
  DType weight_dtype() const override { return DType::BF16; }
  // BF16, and FP8 E4M3 with row scales (Tensor::scales; gemv.cuh, cuda_gemm.h).
  bool supports_weight(DType dtype) const override {
    return dtype == DType::BF16 || dtype == DType::F8_E4M3;
  }
  // Raw bytes (BF16 or FP8 codes) through the pinned staging ring: upload_threads threads fill
  // a slot while the slots before it are copied to the device.
  void upload_weight(const void* host, const Tensor& dst) override;
  DType activation_dtype() const override { return DType::BF16; }
  bool device_memory() const override { return true; }

  Buffer alloc(size_t bytes) override;
  void upload_f32(const float* host, const Tensor& dst) override;
  void upload_i32(const int32_t* host, const Tensor& dst) override;
  void download_f32(const Tensor& src, float* host) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  void synchronize() override;

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

  // --- beyond the Backend interface ---------------------------------------------------------
  // hidden += residual; y = rmsnorm(hidden) * weight: the residual add of one sublayer and the
  // norm of the next in one pass (y may alias neither).
  void add_rmsnorm(const Tensor& hidden, const Tensor& residual, const Tensor& weight, float eps,
                   const Tensor& y);
  // dst = src converted between F32 and BF16 (or a same-dtype copy), any strides.
  void convert(const Tensor& src, const Tensor& dst);
  // Uploads `batch` as the current attention metadata now (outside a graph capture), so that
  // a captured step that uses the same batch shape reads it at replay.
  bool records_graphs() const override { return true; }
  void prepare_attention(const AttentionBatch& batch, int64_t n_slots) override;
  // Captures fn() on the stream the first time `key` is seen, then replays the graph: a decode
  // step of a fixed batch shape costs one launch. Inputs must sit at the addresses they had
  // during capture (uploaded before the call); outputs land where they landed then.
  void run_graph(const std::string& key, const std::function<void()>& fn) override;
  void clear_graphs() override;
  size_t graph_count() const { return graphs_.size(); }

  int device() const { return options_.device; }
  const CudaBackendOptions& options() const { return options_; }
  // Benchmarks compare the GEMM paths on one backend (recorded graphs keep the old choice:
  // clear them after a change).
  void set_small_m_gemv(bool on) { options_.small_m_gemv = on; }
  cudaStream_t stream() const { return stream_; }
  cuda::DevicePool& pool() { return *pool_; }

 private:
  void check_device_errors();  // after a synchronization: throws what the kernels recorded
  void after_data_op();        // check_every_op: synchronize + check
  void refuse_in_capture(const char* what) const;
  // Validates the block tables against the cache, packs and (when it changed) uploads the
  // batch; returns the device view. The caller has run check_attention_batch (op_checks.h).
  const cuda::AttentionMeta& attention_meta(Op op, const AttentionBatch& batch, int64_t n_slots);
  float* attention_workspace(int64_t floats);
  void* fp8_scratch(size_t bytes);  // quantized activations + their scales, or a dequantized w
  void retire(Buffer buffer);       // keeps memory a captured graph may still use

  CudaBackendOptions options_;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<cuda::DevicePool> pool_;
  std::unique_ptr<cuda::PinnedStaging> staging_;
  Buffer errors_buffer_;
  cuda::DeviceErrors* errors_ = nullptr;
  std::unique_ptr<cuda::GemmPlans> gemm_;
  // Attention metadata: the packed host copy of what the device buffer holds.
  std::vector<int32_t> meta_host_;
  Buffer meta_buffer_;
  cuda::AttentionMeta meta_;
  Buffer attn_workspace_;
  Buffer fp8_scratch_;
  // Sampling: params in, results out.
  Buffer sample_params_, sample_results_;
  // CUDA graphs by key; buffers replaced while graphs existed stay alive until clear_graphs().
  std::map<std::string, cudaGraphExec_t> graphs_;
  std::vector<Buffer> retired_;
  bool capturing_ = false;
};

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options = {});

// Number of CUDA devices, or 0 with `why` set to the runtime's reason (no driver, no device).
int cuda_device_count(std::string* why = nullptr);

}  // namespace parafuse

// GPU benchmarks of the CUDA backend (CUDA builds only): the numbers issue 5 asks for, each
// against a ceiling measured in the same run.
//   copy      device-to-device cudaMemcpy of a 2 GiB buffer: bytes read + written / time
//   decode    batch-1 decode steps of a Llama-3.1-8B-shaped synthetic model through Engine
//             (bf16), eager and then replayed as CUDA graphs: weight bytes read per step /
//             step time, as a fraction of copy bandwidth
//   gemm      a prefill-sized GEMM (m=4096, k=4096, n=14336) through CudaBackend::gemm
//             (cuBLASLt) vs a direct cublasGemmEx bf16 call on the same shape
//   ffn       k SwiGLU FFNs run one after another vs fused into one k-times-wider FFN, at
//             batch 1, 8 and 32, both captured as CUDA graphs: the time ratio
// Timing: CUDA events around the region, warm-up first, median of repeats (METHOD.md).
// Loading 8B parameters through the host generator would take minutes, so every decoder layer
// reads the weights of layer 0 (generated once on the host, uploaded into each layer's own
// device buffers): the bytes each step reads are real, their values repeat; the output says so.
//   build/bench/bench_gpu --json out.json [--model configs/models/llama-3.1-8b.json]
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "kernels/core/fp8.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/throughput.h"
#include "runtime/model/fp8_quantize.h"
#include "runtime/model/model_config.h"
#include "runtime/model/synthetic.h"

namespace parafuse {
namespace {

struct Options {
  std::string model = "configs/models/llama-3.1-8b.json";
  std::string json_path;
  int decode_steps = 64;
  int prompt_tokens = 128;
  int repeats = 20;
  std::vector<int> ffn_batches = {1, 8, 32};
  int ffn_k = 4;
  std::vector<std::string> only;  // sections to run (copy always runs: it is the ceiling)
  int profile_steps = 0;          // eager + graph decode steps inside cudaProfilerStart/Stop
  std::vector<int> decode_batches = {8, 32, 64};  // throughput sweep after the batch-1 figure
  std::vector<std::string> decode_forms = {"bf16", "bf16-cublas", "fp8"};
  bool runs(const std::string& section) const {
    return only.empty() || std::find(only.begin(), only.end(), section) != only.end();
  }
};

// Median milliseconds of `repeats` runs of fn on `stream`, after 3 warm-ups.
template <typename Fn>
double time_ms(cudaStream_t stream, int repeats, Fn&& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  PF_CUDA_CHECK(cudaEventCreate(&start));
  PF_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    PF_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    PF_CUDA_CHECK(cudaEventRecord(stop, stream));
    PF_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    PF_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Fills a device tensor (any dtype) with a repeating pattern of N(0, scale) values from one
// uploaded seed block: fast, and never zeros (METHOD.md: zeros can time faster than data).
void fill_random(CudaBackend& be, const Tensor& t, float scale, uint64_t seed) {
  const int64_t seed_elems = std::min<int64_t>(t.numel(), int64_t(1) << 22);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> host(static_cast<size_t>(seed_elems));
  for (float& x : host) x = dist(rng);
  Tensor flat{t.data, t.dtype, 1, t.numel(), t.numel()};
  Tensor first = flat.cols_view(0, seed_elems);
  be.upload_f32(host.data(), first);
  for (int64_t at = seed_elems; at < t.numel(); at += seed_elems) {
    const int64_t n = std::min(seed_elems, t.numel() - at);
    be.copy(first.cols_view(0, n), flat.cols_view(at, at + n));
  }
}

nlohmann::json bench_copy(CudaBackend& be, int repeats) {
  const size_t bytes = size_t(2) << 30;
  Buffer a = be.alloc(bytes), b = be.alloc(bytes);
  fill_random(be, Tensor{a.data(), DType::F32, 1, int64_t(bytes / 4), int64_t(bytes / 4)}, 1, 1);
  const double ms = time_ms(be.stream(), repeats, [&] {
    PF_CUDA_CHECK(
        cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, be.stream()));
  });
  const double gbps = 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
  std::printf("copy      %zu MiB D2D: %.3f ms, %.0f GB/s (read + write)\n", bytes >> 20, ms, gbps);
  return {{"bytes", bytes}, {"ms", ms}, {"GBps", gbps}};
}

// Every "model.layers.N.<suffix>" is served from layer 0's tensor, read once from `base` (F32
// values, or native codes and row scales where base reads them natively: FP8).
class ReusedLayerSource : public WeightSource {
 public:
  explicit ReusedLayerSource(const WeightSource& base) : base_(base) { tensors_ = base.tensors(); }
  std::string description() const override {
    return base_.description() + " (every layer reads layer 0's weights)";
  }
  void read_f32(const std::string& name, Range rows, Range cols, float* out) const override {
    const std::string layer0 = layer0_name(name);
    if (layer0.empty()) return base_.read_f32(name, rows, cols, out);
    const std::vector<uint8_t>& whole = cached(f32_, layer0, [&](std::vector<uint8_t>& bytes) {
      const TensorInfo& info = base_.info(layer0);
      bytes.resize(size_t(info.rows() * info.cols()) * sizeof(float));
      base_.read_f32(layer0, {}, {}, reinterpret_cast<float*>(bytes.data()));
    });
    copy_slice(layer0, whole, sizeof(float), rows, cols, out);
  }
  bool reads_native(const std::string& name) const override { return base_.reads_native(name); }
  void read_native(const std::string& name, Range rows, Range cols, void* out) const override {
    const std::string layer0 = layer0_name(name);
    const TensorInfo& info = base_.info(layer0.empty() ? name : layer0);
    if (layer0.empty() || dtype_is_quantized(info.dtype))
      return base_.read_native(layer0.empty() ? name : layer0, rows, cols, out);
    const std::vector<uint8_t>& whole = cached(native_, layer0, [&](std::vector<uint8_t>& bytes) {
      bytes.resize(size_t(info.rows() * info.cols()) * dtype_size(info.dtype));
      base_.read_native(layer0, {}, {}, bytes.data());
    });
    copy_slice(layer0, whole, dtype_size(info.dtype), rows, cols, out);
  }
  void read_row_scales(const std::string& name, Range rows, float* out) const override {
    const std::string layer0 = layer0_name(name);
    if (layer0.empty()) return base_.read_row_scales(name, rows, out);
    const std::vector<uint8_t>& whole = cached(scales_, layer0, [&](std::vector<uint8_t>& bytes) {
      bytes.resize(size_t(base_.info(layer0).rows()) * sizeof(float));
      base_.read_row_scales(layer0, {}, reinterpret_cast<float*>(bytes.data()));
    });
    const int64_t r1 = rows.end < 0 ? base_.info(layer0).rows() : rows.end;
    std::memcpy(out, whole.data() + size_t(rows.begin) * sizeof(float),
                size_t(r1 - rows.begin) * sizeof(float));
  }
  float input_scale(const std::string& name) const override {
    const std::string layer0 = layer0_name(name);
    return base_.input_scale(layer0.empty() ? name : layer0);
  }

 private:
  using Cache = std::map<std::string, std::vector<uint8_t>>;
  static std::string layer0_name(const std::string& name) {
    static const std::regex layer(R"(^model\.layers\.\d+\.(.*)$)");
    std::smatch match;
    if (!std::regex_match(name, match, layer)) return {};
    return "model.layers.0." + match[1].str();
  }
  template <typename Fill>
  const std::vector<uint8_t>& cached(Cache& cache, const std::string& key, Fill&& fill) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache.find(key);
    if (it == cache.end()) {
      it = cache.emplace(key, std::vector<uint8_t>{}).first;
      fill(it->second);
    }
    return it->second;
  }
  void copy_slice(const std::string& layer0, const std::vector<uint8_t>& whole, size_t elem,
                  Range rows, Range cols, void* out) const {
    const Slice s = resolve_slice(base_.info(layer0), rows, cols, description());
    const size_t width = size_t(s.cols()) * elem, pitch = size_t(base_.info(layer0).cols()) * elem;
    for (int64_t r = s.row_begin; r < s.row_end; ++r)
      std::memcpy(static_cast<uint8_t*>(out) + size_t(r - s.row_begin) * width,
                  whole.data() + size_t(r) * pitch + size_t(s.col_begin) * elem, width);
  }
  const WeightSource& base_;
  mutable std::mutex mutex_;
  mutable Cache f32_, native_, scales_;
};

// `form`: bf16 (BF16 weights, small-M GEMV kernel), bf16-cublas (the same weights through
// cuBLASLt at every M, the path before the GEMV), fp8 (block linear weights quantized at load
// to FP8 E4M3 per output channel: the GEMV reads the codes; prefill runs the FP8 GEMM).
nlohmann::json bench_decode(CudaBackend& be, const Options& o, double copy_gbps,
                            const std::string& form) {
  const ModelConfig config = load_hf_config(o.model);
  std::unique_ptr<WeightSource> base = std::make_unique<SyntheticWeightSource>(config, 1);
  if (form == "fp8") base = std::make_unique<Fp8QuantizedWeights>(std::move(base));
  ReusedLayerSource weights(*base);
  be.set_small_m_gemv(form != "bf16-cublas");
  be.clear_graphs();
  EngineOptions eo;
  int max_batch = 1;
  for (int b : o.decode_batches) max_batch = std::max(max_batch, b);
  eo.kv_cache_tokens = int64_t(max_batch) * (o.prompt_tokens + 2 * o.decode_steps + 64);
  eo.max_batch_tokens = std::max(o.prompt_tokens, 2048);  // batched prefill of the sweep
  const auto t0 = std::chrono::steady_clock::now();
  Engine engine(config, weights, be, eo);
  be.synchronize();
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Bytes every decode step must read: all layers' weights and the LM head, as resident.
  const size_t step_bytes = engine.weight_bytes_per_token();

  std::vector<int32_t> prompt(size_t(o.prompt_tokens));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 13) % 128000);
  engine.add_sequence(0);
  const SeqTokens prefill{0, prompt, false};
  be.synchronize();
  auto tp0 = std::chrono::steady_clock::now();
  Tensor logits = engine.forward({&prefill, 1});
  SamplingParams greedy;
  std::vector<int32_t> next = engine.sample(logits, {&greedy, 1});
  const double prefill_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tp0).count();
  // Eager steps first, then the same steps replayed as CUDA graphs (the engine's default);
  // each step ends with sampling, which waits for the device.
  auto decode_step = [&] {  // one token for sequence 0; sampling waits for the device
    const SeqTokens step{0, next, false};
    logits = engine.forward({&step, 1});
    next = engine.sample(logits, {&greedy, 1});
  };
  std::vector<double> step_ms, eager_ms;
  int64_t graph_steps = 0;
  for (const bool graphs : {false, true}) {
    engine.set_graphs(graphs);
    std::vector<double>& out = graphs ? step_ms : eager_ms;
    const int64_t replayed_before = engine.stats().graph_steps;
    for (int s = 0; s < o.decode_steps; ++s) {
      const auto ts = std::chrono::steady_clock::now();
      decode_step();
      out.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ts).count());
    }
    if (graphs) graph_steps = engine.stats().graph_steps - replayed_before;
  }
  if (o.profile_steps > 0) {
    // For `ncu --profile-from-start off`: the kernels of a few eager steps, then of a few
    // replayed steps, and nothing of the load or the warm-up.
    be.synchronize();
    PF_CUDA_CHECK(cudaProfilerStart());
    for (const bool graphs : {false, true}) {
      engine.set_graphs(graphs);
      for (int s = 0; s < o.profile_steps; ++s) decode_step();
    }
    be.synchronize();
    PF_CUDA_CHECK(cudaProfilerStop());
  }
  engine.remove_sequence(0);
  // Throughput at larger batches (CUDA graphs per batch size): tok/s of the whole batch.
  nlohmann::json sweep = nlohmann::json::array();
  engine.set_graphs(true);
  for (int b : o.decode_batches) {
    if (form == "bf16-cublas") break;  // the batch-1 comparison is what this form is for
    const ThroughputResult r = measure_throughput(engine, b, o.prompt_tokens, o.decode_steps);
    const int64_t replayed = engine.stats().graph_steps;  // reset when its decode began
    std::printf(
        "decode    batch %3d: %.3f ms/step, %.0f tok/s (%ld of %d steps replayed), prefill "
        "%.0f tok/s\n",
        b, r.decode_step_seconds * 1e3, r.decode_tokens_per_second, long(replayed), r.decode_steps,
        r.prefill_tokens_per_second);
    sweep.push_back({{"batch", b},
                     {"step_ms_median", r.decode_step_seconds * 1e3},
                     {"tokens_per_s", r.decode_tokens_per_second},
                     {"graph_steps", replayed},
                     {"prefill_tokens_per_s", r.prefill_tokens_per_second}});
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double ms = median(step_ms), ms_eager = median(eager_ms);
  const double gbps = double(step_bytes) / (ms * 1e-3) / 1e9;
  const double gbps_eager = double(step_bytes) / (ms_eager * 1e-3) / 1e9;
  std::printf(
      "decode    %s %s, batch 1, context %d..%d: CUDA graphs %.3f ms/step (median of %d, %ld "
      "replayed), %.1f tok/s, %.2f GB weights/step -> %.0f GB/s = %.1f%% of copy bandwidth; "
      "eager %.3f ms/step = %.1f%% (load %.1f s, prefill %d tokens %.1f ms)\n",
      form.c_str(), o.model.c_str(), o.prompt_tokens, o.prompt_tokens + 2 * o.decode_steps, ms,
      o.decode_steps, long(graph_steps), 1e3 / ms, double(step_bytes) / 1e9, gbps,
      100.0 * gbps / copy_gbps, ms_eager, 100.0 * gbps_eager / copy_gbps, load_s, o.prompt_tokens,
      prefill_ms);
  be.clear_graphs();
  return {{"model", o.model},
          {"form", form},
          {"batch_sweep", sweep},
          {"graph_steps", graph_steps},
          {"eager_step_ms_median", ms_eager},
          {"eager_step_ms_all", eager_ms},
          {"eager_fraction_of_copy_bandwidth", gbps_eager / copy_gbps},
          {"weights", weights.description()},
          {"batch", 1},
          {"prompt_tokens", o.prompt_tokens},
          {"steps", o.decode_steps},
          {"step_ms_median", ms},
          {"step_ms_all", step_ms},
          {"tokens_per_s", 1e3 / ms},
          {"bytes_per_step", step_bytes},
          {"GBps", gbps},
          {"fraction_of_copy_bandwidth", gbps / copy_gbps},
          {"load_s", load_s},
          {"prefill_ms", prefill_ms}};
}

nlohmann::json bench_gemm(CudaBackend& be, int repeats) {
  const int64_t m = 4096, k = 4096, n = 14336;
  Buffer bx, bw, by;
  Tensor x = be.alloc_tensor(bx, DType::BF16, m, k), w = be.alloc_tensor(bw, DType::BF16, n, k);
  Tensor y = be.alloc_tensor(by, DType::BF16, m, n);
  fill_random(be, x, 1.0f, 2);
  fill_random(be, w, 0.02f, 3);
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const double ms_backend = time_ms(be.stream(), repeats, [&] { be.gemm(x, w, y); });
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) PF_THROW("cublasCreate failed");
  cublasSetStream(handle, be.stream());
  const float alpha = 1.0f, beta = 0.0f;
  const double ms_cublas = time_ms(be.stream(), repeats, [&] {
    // Column-major y^T (n,m) = w (n,k) x^T: A = w (k x n, op T), B = x (k x m).
    const cublasStatus_t rc =
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &alpha, w.data,
                     CUDA_R_16BF, int(k), x.data, CUDA_R_16BF, int(k), &beta, y.data, CUDA_R_16BF,
                     int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (rc != CUBLAS_STATUS_SUCCESS) PF_THROW("cublasGemmEx failed: {}", int(rc));
  });
  cublasDestroy(handle);
  const double tf_backend = flops / (ms_backend * 1e-3) / 1e12;
  const double tf_cublas = flops / (ms_cublas * 1e-3) / 1e12;
  std::printf(
      "gemm      m=%ld k=%ld n=%ld bf16: backend %.3f ms (%.0f TFLOP/s), cublasGemmEx "
      "%.3f ms (%.0f TFLOP/s): %.1f%%\n",
      long(m), long(k), long(n), ms_backend, tf_backend, ms_cublas, tf_cublas,
      100.0 * tf_backend / tf_cublas);
  return {{"m", m},
          {"k", k},
          {"n", n},
          {"backend_ms", ms_backend},
          {"backend_TFLOPs", tf_backend},
          {"cublas_ms", ms_cublas},
          {"cublas_TFLOPs", tf_cublas},
          {"fraction_of_cublas", tf_backend / tf_cublas}};
}

// The prefill GEMM with FP8 weights (per-channel scales) through CudaBackend::gemm: BF16
// activations quantized per token to E4M3, then the cuBLASLt FP8 GEMM with outer-vector scales
// (or its fallback), against a plain cuBLASLt FP8 matmul (E4M3 x E4M3 -> BF16, scalar scales,
// the heuristic's first algorithm) on the same shape: the library's FP8 rate.
nlohmann::json bench_gemm_fp8(CudaBackend& be, int repeats) {
  const int64_t m = 4096, k = 4096, n = 14336;
  Buffer bx, bw, bs, by, bq;
  Tensor x = be.alloc_tensor(bx, DType::BF16, m, k), y = be.alloc_tensor(by, DType::BF16, m, n);
  Tensor w = be.alloc_tensor(bw, DType::F8_E4M3, n, k);
  Tensor s = be.alloc_tensor(bs, DType::F32, 1, n);
  fill_random(be, x, 1.0f, 2);
  {  // codes: a repeating block of quantized N(0,1) values; scales 0.02 / 448-ish
    std::mt19937_64 rng(3);
    std::normal_distribution<float> dist(0.0f, 100.0f);
    std::vector<uint8_t> block(size_t(1) << 22);
    for (uint8_t& c : block) c = f32_to_f8_e4m3(dist(rng));
    std::vector<uint8_t> all(size_t(n * k));
    for (size_t at = 0; at < all.size(); at += block.size())
      std::memcpy(all.data() + at, block.data(), std::min(block.size(), all.size() - at));
    be.upload_weight(all.data(), w);
    std::vector<float> scales(size_t(n), 0.02f / 100.0f);
    be.upload_f32(scales.data(), s);
    w.scales = s.f32();
  }
  const double flops = 2.0 * double(m) * double(n) * double(k);
  const double ms_backend = time_ms(be.stream(), repeats, [&] { be.gemm(x, w, y); });
  // The library alone: E4M3 activations already quantized, one matmul.
  Tensor xq = be.alloc_tensor(bq, DType::F8_E4M3, m, k);
  PF_CUDA_CHECK(cudaMemsetAsync(xq.data, 0x38, size_t(m * k), be.stream()));  // 1.0 everywhere
  cublasLtHandle_t lt = nullptr;
  if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) PF_THROW("cublasLtCreate failed");
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(n), k);
  cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(m), k);
  cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, uint64_t(n), uint64_t(m), n);
  Buffer ws = be.alloc(size_t(32) << 20);
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulPreferenceCreate(&pref);
  const uint64_t ws_bytes = ws.bytes();
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                       sizeof ws_bytes);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t rc =
      cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, c, c, pref, 1, &result, &found);
  double ms_lt = 0;
  if (rc == CUBLAS_STATUS_SUCCESS && found > 0) {
    const float alpha = 1.0f, beta = 0.0f;
    ms_lt = time_ms(be.stream(), repeats, [&] {
      const cublasStatus_t r =
          cublasLtMatmul(lt, desc, &alpha, w.data, a, xq.data, b, &beta, y.data, c, y.data, c,
                         &result.algo, ws.data(), ws.bytes(), be.stream());
      if (r != CUBLAS_STATUS_SUCCESS) PF_THROW("cublasLtMatmul (FP8) failed: {}", int(r));
    });
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  const double tf_backend = flops / (ms_backend * 1e-3) / 1e12;
  const double tf_lt = ms_lt > 0 ? flops / (ms_lt * 1e-3) / 1e12 : 0.0;
  std::printf(
      "gemm      m=%ld k=%ld n=%ld fp8 (per-channel weight scales, per-token activations): "
      "backend %.3f ms (%.0f TFLOP/s, quantization included), cuBLASLt FP8 alone %.3f ms "
      "(%.0f TFLOP/s): %.1f%%\n",
      long(m), long(k), long(n), ms_backend, tf_backend, ms_lt, tf_lt,
      tf_lt > 0 ? 100.0 * tf_backend / tf_lt : 0.0);
  return {{"m", m},
          {"k", k},
          {"n", n},
          {"backend_ms", ms_backend},
          {"backend_TFLOPs", tf_backend},
          {"cublaslt_fp8_ms", ms_lt},
          {"cublaslt_fp8_TFLOPs", tf_lt},
          {"fraction_of_cublaslt_fp8", tf_lt > 0 ? tf_backend / tf_lt : 0.0}};
}

// One SwiGLU FFN (or k of them fused): x += down(swiglu(gate_up(rmsnorm(x)))).
struct Ffn {
  Buffer b_norm, b_gate_up, b_down;
  Tensor norm, gate_up, down;  // (1,H), (2F,H), (H,F)
  int64_t f = 0;
};

Ffn make_ffn(CudaBackend& be, int64_t h, int64_t f, uint64_t seed) {
  Ffn ffn;
  ffn.f = f;
  ffn.norm = be.alloc_tensor(ffn.b_norm, DType::BF16, 1, h);
  ffn.gate_up = be.alloc_tensor(ffn.b_gate_up, DType::BF16, 2 * f, h);
  ffn.down = be.alloc_tensor(ffn.b_down, DType::BF16, h, f);
  fill_random(be, ffn.norm, 0.1f, seed);
  fill_random(be, ffn.gate_up, 0.02f, seed + 1);
  fill_random(be, ffn.down, 0.01f, seed + 2);
  return ffn;
}

nlohmann::json bench_ffn(CudaBackend& be, const Options& o) {
  const int64_t h = 4096, f = 14336;
  const int k = o.ffn_k;
  std::vector<Ffn> parts;
  for (int i = 0; i < k; ++i) parts.push_back(make_ffn(be, h, f, 100 + 10 * uint64_t(i)));
  Ffn fused = make_ffn(be, h, f * k, 500);
  nlohmann::json rows = nlohmann::json::array();
  for (int batch : o.ffn_batches) {
    Buffer bx, bn, bg, ba, bp;
    Tensor x = be.alloc_tensor(bx, DType::BF16, batch, h);
    Tensor normed = be.alloc_tensor(bn, DType::BF16, batch, h);
    Tensor gate_up = be.alloc_tensor(bg, DType::BF16, batch, 2 * f * k);
    Tensor act = be.alloc_tensor(ba, DType::BF16, batch, f * k);
    Tensor proj = be.alloc_tensor(bp, DType::BF16, batch, h);
    fill_random(be, x, 1.0f, 7);
    auto run = [&](const Ffn& ffn) {
      be.rmsnorm(x, ffn.norm, 1e-5f, normed);
      Tensor gu = gate_up.cols_view(0, 2 * ffn.f), a = act.cols_view(0, ffn.f);
      be.gemm(normed, ffn.gate_up, gu);
      be.swiglu(gu.cols_view(0, ffn.f), gu.cols_view(ffn.f, 2 * ffn.f), a);
      be.gemm(a, ffn.down, proj);
      be.add(x, proj, x);
    };
    const std::string key = fmt::format("ffn b{}", batch);
    const double seq_ms = time_ms(be.stream(), o.repeats, [&] {
      be.run_graph(key + " sequential", [&] {
        for (const Ffn& p : parts) run(p);
      });
    });
    const double fused_ms =
        time_ms(be.stream(), o.repeats, [&] { be.run_graph(key + " fused", [&] { run(fused); }); });
    const double bytes = double(k) * 3.0 * double(h) * double(f) * 2.0;
    std::printf(
        "ffn       k=%d x (H=%ld, F=%ld) batch %3d: sequential %.3f ms, fused %.3f ms, "
        "fused/sequential %.3f (weights %.0f GB/s)\n",
        k, long(h), long(f), batch, seq_ms, fused_ms, fused_ms / seq_ms,
        bytes / (fused_ms * 1e-3) / 1e9);
    rows.push_back({{"batch", batch},
                    {"k", k},
                    {"sequential_ms", seq_ms},
                    {"fused_ms", fused_ms},
                    {"fused_over_sequential", fused_ms / seq_ms}});
  }
  be.clear_graphs();
  return rows;
}

}  // namespace
}  // namespace parafuse

int main(int argc, char** argv) {
  using namespace parafuse;
  Options o;
  CLI::App app{"GPU benchmarks of the CUDA backend: copy bandwidth, 8B decode, GEMM, FFN fusion"};
  app.add_option("--model", o.model, "HF config.json of the decode model (synthetic weights)");
  app.add_option("--json", o.json_path, "Write the results as JSON here");
  app.add_option("--decode-steps", o.decode_steps, "Timed decode steps");
  app.add_option("--prompt-tokens", o.prompt_tokens, "Prefill length before decoding");
  app.add_option("--repeats", o.repeats, "Timed repeats per measurement (median reported)");
  app.add_option("--ffn-k", o.ffn_k, "FFNs per fused run");
  app.add_option("--only", o.only, "Sections to run besides copy (gemm, ffn, decode); default all")
      ->delimiter(',');
  app.add_option("--decode-batches", o.decode_batches,
                 "Decode throughput sweep after the batch-1 figure (graphs on)")
      ->delimiter(',');
  app.add_option("--decode-forms", o.decode_forms,
                 "Weight forms of the decode section: bf16 (GEMV kernel), bf16-cublas (cuBLASLt "
                 "at every M), fp8 (FP8 E4M3 weights, quantized at load)")
      ->delimiter(',');
  app.add_option("--profile-steps", o.profile_steps,
                 "After the timed decode, this many eager then graph steps between "
                 "cudaProfilerStart/Stop (for ncu --profile-from-start off)");
  CLI11_PARSE(app, argc, argv);
  try {
    std::string why;
    if (cuda_device_count(&why) == 0) {
      std::fprintf(stderr, "bench_gpu: no CUDA device: %s\n", why.c_str());
      return 2;
    }
    CudaBackend be;
    cudaDeviceProp prop{};
    PF_CUDA_CHECK(cudaGetDeviceProperties(&prop, be.device()));
    std::printf("device    %s, %d SMs, %.0f GiB\n", prop.name, prop.multiProcessorCount,
                double(prop.totalGlobalMem) / double(1 << 30));
    nlohmann::json out;
    out["device"] = prop.name;
    out["copy"] = bench_copy(be, o.repeats);
    if (o.runs("gemm")) out["gemm"] = bench_gemm(be, o.repeats);
    if (o.runs("ffn")) out["ffn_fusion"] = bench_ffn(be, o);
    be.pool().trim();
    if (o.runs("gemm")) out["gemm_fp8"] = bench_gemm_fp8(be, o.repeats);
    if (o.runs("decode")) {
      const double copy = out["copy"]["GBps"].get<double>();
      for (const std::string& form : o.decode_forms) {
        out["decode_" + form] = bench_decode(be, o, copy, form);
        be.pool().trim();
      }
      // The issue's ratios, from this run.
      if (out.contains("decode_bf16") && out.contains("decode_fp8")) {
        const double r = out["decode_fp8"]["tokens_per_s"].get<double>() /
                         out["decode_bf16"]["tokens_per_s"].get<double>();
        out["fp8_over_bf16_decode"] = r;
        std::printf("decode    fp8 / bf16 tokens/s at batch 1: %.2fx\n", r);
      }
      if (out.contains("decode_bf16") && out.contains("decode_bf16-cublas")) {
        const double r = out["decode_bf16-cublas"]["step_ms_median"].get<double>() /
                         out["decode_bf16"]["step_ms_median"].get<double>();
        out["gemv_speedup_over_cublaslt_decode"] = r;
        std::printf("decode    bf16 GEMV kernel / cuBLASLt at batch 1: %.2fx faster\n", r);
      }
    }
    if (!o.json_path.empty()) {
      std::ofstream(o.json_path) << out.dump(2) << "\n";
      std::printf("wrote %s\n", o.json_path.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}

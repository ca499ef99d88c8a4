// The run config: everything a `parafuse` run needs besides the prompt, in one struct.
//
// It comes from a YAML file (--config), from command-line flags, or both: the file is read
// first, then every flag that was given overrides its key, so a run needs no YAML at all and a
// shared config can be tweaked per run. The YAML reader is strict on purpose: a typo in a key
// ("tpp:") or a value of the wrong type is an error naming the file, the 1-based line and the
// key, never a silently ignored setting on a 64-rank job. configs/README.md lists every key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace parafuse {

struct RunConfig {
  std::string model;  // HF folder, .gguf file, or synthetic:CONFIG.json[@SEED]; required

  // parallel.*
  int tp = 1;                     // tensor-parallel ranks per pipeline stage
  int pp = 1;                     // pipeline stages
  std::string transport = "mpi";  // stage-to-stage activations: one of transport_kinds()
  // First block of each stage, e.g. {0, 10, 22} for pp = 3; empty: balanced by block cost.
  // Checked here: size == pp, starts at 0, strictly increasing. The engine checks each entry
  // against the model's block count.
  std::vector<int> pp_split;

  std::string backend = "cpu";  // one of backend_names() (kernels/backend_registry.h)
  std::string dtype = "auto";   // auto, a dtype of the backend (backend_dtypes()), or fp8
  // auto: weights stay in their file's format where the backend multiplies by it (cpu:
  // q8_0/q4_0/q4_1/f16/bf16); f32: every weight converted (the reference path).
  // fp8: block linear weights quantized at load to FP8 E4M3, one scale per output channel
  // (runtime/model/fp8_quantize.h).
  std::string weight_dtype = "auto";
  // The KV cache's element type (kv_cache_dtype_choices(): runtime/engine/kv_cache.h). auto: f16 on
  // the cpu backend for quantized and half-precision files (llama.cpp's default; half the bytes
  // decode attention reads), else the backend's activation dtype (f32 weights, the reference;
  // cuda: its dtype).
  std::string kv_cache_dtype = "auto";
  int threads = 0;  // BLAS threads per rank; 0: auto
  // A fusion plan (parafuse plan) to run the unfused model in parallel-FFN mode; empty: none.
  std::string fusion_plan;

  struct Batch {
    int64_t max_batch_tokens = 512;  // most tokens in one forward pass
    int64_t kv_cache_tokens = 4096;  // KV cache capacity per rank, in tokens
    int64_t page_size = 16;          // tokens per KV cache page
    int micro_batches = 0;           // pipeline micro-batches in flight; 0: auto
  } batch;

  struct Sampling {
    float temperature = 0;  // 0: greedy
    int top_k = 0;          // 0: off
    float top_p = 1;        // 1: off
    uint64_t seed = 0;
    int max_tokens = 128;
  } sampling;

  // `parafuse serve` (runtime/serve): where it listens, who may call it, and its limits.
  struct Serve {
    std::string host = "127.0.0.1";       // loopback unless asked: 0.0.0.0 opens it to the network
    int port = 8000;                      // 0: any free port
    std::string api_key;                  // empty: no key needed
    std::string api_key_file;             // a file whose first line is the key
    std::string served_model_name;        // empty: the model file's name without extension
    int max_waiting_requests = 256;       // more queued requests get 429
    int max_running_requests = 256;       // sequences in one batch
    int64_t max_body_bytes = 4 << 20;     // larger request bodies get 413
    int64_t max_header_bytes = 16 << 10;  // larger request heads get 431
    int max_json_depth = 64;              // deeper request JSON gets 400
    int http_threads = 2;
    double drain_seconds = 30;  // after Ctrl-C, running requests may finish for this long
  } serve;

  struct Timeouts {
    double collective_seconds = 60;  // one all-reduce / all-gather / broadcast / barrier
    double transport_seconds = 60;   // one stage-to-stage send or receive
  } timeouts;

  // Where the values came from, for logs: "configs/x.yaml", "command line", or
  // "configs/x.yaml + command line".
  std::string source;
};

// Reads and checks a YAML run config. Throws parafuse::Error naming the file and line.
RunConfig load_run_config(const std::string& path);

// The same for YAML text; `origin` names it in messages ("configs/x.yaml", "<test>").
// Empty text (or only comments) is a valid all-defaults config.
// What `weight_dtype:` and --weight-dtype accept: auto, f32.
std::vector<std::string> weight_dtype_choices();
// What `dtype:` and --dtype accept: auto, the backends' dtypes, and fp8 (= weight_dtype fp8
// with the backend's own activation dtype, the TensorRT-LLM / vLLM spelling).
std::vector<std::string> dtype_choices();
// The weight form and the backend dtype a run config asks for, with dtype fp8 resolved.
inline bool wants_fp8_weights(const RunConfig& c) {
  return c.weight_dtype == "fp8" || c.dtype == "fp8";
}
inline std::string backend_dtype(const RunConfig& c) {
  return c.dtype == "fp8" ? "auto" : c.dtype;
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& origin);

// Cross-key checks that hold for any finished config (pp_split against pp); parse_run_config
// and resolve_run_config call it. Throws parafuse::Error.
void check_run_config(const RunConfig& config);

}  // namespace parafuse

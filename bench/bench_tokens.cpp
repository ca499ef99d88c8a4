// Prefill and decode throughput of one model on one rank: tokens/s for a prompt of P tokens
// (one forward, chunked by --max-batch-tokens) and for batch-1 decode, each the median of
// --reps runs after one warm-up. Beside decode it prints the memory bandwidth decode reaches —
// the weight bytes one step reads (Engine::weight_bytes_per_token) over the step time — as a
// fraction of a copy bandwidth measured in the same run with the same number of threads
// (memcpy of buffers larger than the caches, STREAM's convention: bytes read + bytes written),
// and of a read bandwidth (the same buffer only read, the ceiling of a weight stream).
// Prints a table and writes JSON (--json).
//
//   build/bench/bench_tokens                          SmolLM2-135M, 1 thread, 512-token prefill
//   build/bench/bench_tokens --weight-dtype f32       the same with every weight converted to F32
//   build/bench/bench_tokens --kv-cache-dtype f32     Q4_1 weights, KV cache in F32 (auto: F16)
//   build/bench/bench_tokens -m synthetic:CFG.json --threads 2 --json out.json
#include <algorithm>
#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model_files.h"

using namespace parafuse;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model = ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  int threads = 1, prefill = 512, decode = 64, reps = 3;
  int64_t max_batch_tokens = 512;
  std::string json_path, backend_name = "cpu", weight_dtype = "auto", kv_cache_dtype = "auto";
  CLI::App app{"parafuse prefill/decode throughput on one rank"};
  app.add_option("-m,--model", model, "Model path (see parafuse generate --help)")
      ->capture_default_str();
  app.add_option("--backend", backend_name, "Backend")
      ->capture_default_str()
      ->check(CLI::IsMember(backend_names()));
  app.add_option("--threads", threads, "Backend threads")->capture_default_str();
  app.add_option("--weight-dtype", weight_dtype,
                 "auto: weights in the file's format where the backend takes it; f32: all F32")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "f32"}));
  app.add_option("--kv-cache-dtype", kv_cache_dtype,
                 "KV cache element type; auto: f16 on the cpu for quantized/half files, else f32")
      ->capture_default_str()
      ->check(CLI::IsMember(kv_cache_dtype_choices()));
  app.add_option("--prefill", prefill, "Prompt tokens")->capture_default_str();
  app.add_option("--decode", decode, "Decode steps at batch 1")->capture_default_str();
  app.add_option("--reps", reps, "Timed repetitions (median reported)")->capture_default_str();
  app.add_option("--max-batch-tokens", max_batch_tokens, "Rows per forward")->capture_default_str();
  app.add_option("--json", json_path, "Write results as JSON here");
  CLI11_PARSE(app, argc, argv);
  try {
    ModelFiles m = open_model(model);
    auto backend = make_backend(backend_name, {"auto", threads, 0, weight_dtype == "auto"});
    EngineOptions eo;
    eo.kv_cache_tokens = prefill + decode + 16;
    eo.max_batch_tokens = max_batch_tokens;
    eo.kv_cache_dtype = parse_kv_cache_dtype(kv_cache_dtype);
    Engine engine(m.config, *m.weights, *backend, eo);
    std::vector<int32_t> prompt(static_cast<size_t>(prefill));
    for (int i = 0; i < prefill; ++i)
      prompt[size_t(i)] = int32_t((i * 7919 + 13) % m.config.vocab_size);

    std::vector<double> prefill_s, decode_s;
    for (int rep = 0; rep <= reps; ++rep) {  // rep 0 is the warm-up
      engine.add_sequence(0);
      double t0 = now();
      for (int b = 0; b < prefill; b += int(max_batch_tokens)) {
        const int n = std::min(prefill - b, int(max_batch_tokens));
        SeqTokens s{0, std::span<const int32_t>(prompt).subspan(size_t(b), size_t(n)), false};
        engine.forward(std::span<const SeqTokens>(&s, 1));
      }
      backend->synchronize();
      const double t_prefill = now() - t0;
      t0 = now();
      int32_t token = 1;
      for (int i = 0; i < decode; ++i) {
        SeqTokens s{0, std::span<const int32_t>(&token, 1), false};
        Tensor logits = engine.forward(std::span<const SeqTokens>(&s, 1));
        SamplingParams greedy;
        token = engine.sample(logits, std::span<const SamplingParams>(&greedy, 1))[0];
      }
      const double t_decode = now() - t0;
      engine.remove_sequence(0);
      if (rep > 0) {
        prefill_s.push_back(t_prefill);
        decode_s.push_back(t_decode);
      }
    }
    const double p = median(prefill_s), d = median(decode_s);
    const double weight_bytes = double(engine.weight_bytes_per_token());
    const double decode_bandwidth = weight_bytes / (d / decode);
    const MemoryBandwidth bw = measure_memory_bandwidth(threads, size_t(256) << 20);
    fmt::print("model     {}\n", model);
    fmt::print("backend   {} ({} thread{}), weights {} ({:.1f} MB read per decode step)\n",
               backend->name(), threads, threads == 1 ? "" : "s", weight_dtype, weight_bytes / 1e6);
    const PagedKvCache& kv = engine.kv_cache();
    const double kv_bytes_per_token = double(kv.bytes()) / double(kv.slot_count());
    fmt::print(
        "KV cache  {}, {:.1f} KB per cached token ({:.1f} MB read by the last decode step)\n",
        dtype_name(kv.dtype()), kv_bytes_per_token / 1e3,
        kv_bytes_per_token * (prefill + decode) / 1e6);
    fmt::print("{:<10} {:>8} {:>12} {:>12}\n", "phase", "tokens", "seconds", "tokens/s");
    fmt::print("{:<10} {:>8} {:>12.4f} {:>12.1f}\n", "prefill", prefill, p, prefill / p);
    fmt::print("{:<10} {:>8} {:>12.4f} {:>12.1f}\n", "decode", decode, d, decode / d);
    fmt::print(
        "decode weight bandwidth {:.2f} GB/s = {:.0f}% of copy bandwidth {:.2f} GB/s "
        "(read + write, {} thread{}); {:.0f}% of read bandwidth {:.2f} GB/s\n",
        decode_bandwidth / 1e9, 100.0 * decode_bandwidth / bw.copy, bw.copy / 1e9, threads,
        threads == 1 ? "" : "s", 100.0 * decode_bandwidth / bw.read, bw.read / 1e9);
    if (!json_path.empty()) {
      nlohmann::json j = {{"benchmark", "bench_tokens"},
                          {"model", model},
                          {"backend", std::string(backend->name())},
                          {"threads", threads},
                          {"weight_dtype", weight_dtype},
                          {"kv_cache_dtype", std::string(dtype_name(kv.dtype()))},
                          {"kv_cache_bytes_per_token", kv_bytes_per_token},
                          {"weight_bytes_per_token", weight_bytes},
                          {"decode_weight_bandwidth_bytes_per_s", decode_bandwidth},
                          {"copy_bandwidth_bytes_per_s", bw.copy},
                          {"decode_bandwidth_fraction_of_copy", decode_bandwidth / bw.copy},
                          {"read_bandwidth_bytes_per_s", bw.read},
                          {"decode_bandwidth_fraction_of_read", decode_bandwidth / bw.read},
                          {"reps", reps},
                          {"prefill",
                           {{"tokens", prefill},
                            {"seconds_median", p},
                            {"tokens_per_s", prefill / p},
                            {"seconds_all", prefill_s}}},
                          {"decode",
                           {{"tokens", decode},
                            {"batch", 1},
                            {"seconds_median", d},
                            {"tokens_per_s", decode / d},
                            {"seconds_all", decode_s}}}};
      std::ofstream(json_path) << j.dump(2) << "\n";
      fmt::print("wrote {}\n", json_path);
    }
  } catch (const Error& e) {
    fmt::print(stderr, "bench_tokens: error: {} ({})\n", e.what(), e.where());
    return 1;
  }
  return 0;
}

// An analytic performance model of one decode step (and of prefill) for any `block_configs`
// model on a cluster (cluster.h), per TP x PP layout: what `parafuse predict` prints.
//
// It is a sum of named costs, each a count the model config fixes times a constant the cluster
// file gives, so every number it prints can be traced:
//   weight reads    bytes of this rank's weight shards / memory bandwidth
//   KV reads        bytes of this rank's KV heads over the context / memory bandwidth
//   GEMM compute    the part of 2*rows*params / GEMM rate not hidden behind the reads, per
//                   sublayer: the roofline where the device overlaps the two (GPUs), their sum
//                   where it does not, as the cluster file's compute_memory_overlap says
//   all-reduces     one per row-parallel GEMM (+ the vocab-parallel embedding), NCCL's ring
//                   model: latency + bytes * 2(p-1)/p / bus bandwidth; NVLink inside a node,
//                   InfiniBand (rails of NICs) when the TP group spans nodes
//   hand-offs       PP stage to stage: latency + activation bytes / link bandwidth
//   launches        a fixed cost per kernel, counted the way parafuse's engine runs a block
// Pipeline stages are balanced by weight bytes (as the engine balances by cost), and a batch is
// split into min(pp, batch) micro-batches, so a round is max(m * slowest stage, sum of stages +
// hand-offs). No efficiency factor is fitted: the achievable rates come from the cluster file.
#pragma once

#include <string>
#include <vector>

#include "runtime/model/model_config.h"
#include "runtime/predict/cluster.h"

namespace parafuse {

// Weight storage; activations move as bf16 (f32 for f32).
enum class PredictDType { F32, BF16, FP8 };
PredictDType parse_predict_dtype(const std::string& name);  // "f32" | "bf16" | "fp8"
std::string dtype_name(PredictDType dtype);
double bytes_per_weight(PredictDType dtype);
double bytes_per_activation(PredictDType dtype);
double bytes_per_kv(PredictDType dtype);  // fp8 runs keep an fp8 KV cache, as TensorRT-LLM does

struct Layout {
  int tp = 1;
  int pp = 1;
};

struct Workload {
  int input_len = 1024;
  int output_len = 256;
  PredictDType dtype = PredictDType::BF16;
  int prefill_chunk_tokens = 8192;  // tokens of one prefill forward (activation memory)
};

struct MemoryPerDevice {  // GiB, the most loaded stage
  double weights = 0, kv_cache = 0, activations = 0;
  double total() const { return weights + kv_cache + activations; }
};

struct StepBreakdown {  // milliseconds per decode round (every user advances one token)
  double weights = 0, kv = 0, compute = 0, all_reduce = 0, pipeline = 0, launch = 0;
  double total() const { return weights + kv + compute + all_reduce + pipeline + launch; }
  int all_reduces = 0;  // per token, one TP group's chain through every stage
  int kernels = 0;      // per token, summed over stages
};

struct PointPrediction {
  Layout layout;
  int batch = 1;
  MemoryPerDevice memory;
  bool fits = false;
  StepBreakdown step;  // ms
  double step_ms = 0;
  double tokens_per_s_per_user = 0;
  double tokens_per_s = 0;
  double ttft_ms = 0;
  std::string placement;  // "TP within a node", "TP across 2 nodes", "PP across nodes", ...
};

// Why a layout cannot run this model on this cluster ("" when it can): heads not divisible by
// tp, more stages than blocks, a TP group that straddles nodes unevenly, too few devices.
std::string layout_problem(const ModelConfig& model, const ClusterSpec& cluster, Layout layout);

// Every tp x pp that uses all the cluster's devices and layout_problem() accepts, tp ascending.
std::vector<Layout> candidate_layouts(const ModelConfig& model, const ClusterSpec& cluster);

PointPrediction predict_point(const ModelConfig& model, const ClusterSpec& cluster, Layout layout,
                              const Workload& workload, int batch);

// Bytes of all weights at a dtype (norms at 2 bytes): for reports and tests.
double model_weight_bytes(const ModelConfig& model, PredictDType dtype);

// One all-reduce of `bytes` over `ranks` ranks spread over `nodes` nodes, microseconds.
double all_reduce_us(const ClusterSpec& cluster, int ranks, int nodes, double bytes);

// The advice: the fitting point that is best for the goal, and why in one paragraph.
struct Recommendation {
  bool found = false;
  PointPrediction best;
  std::string why;
};
// goal "latency": highest tokens/s per user at the smallest batch; "throughput": most tokens/s
// among points whose tokens/s per user is at least `min_tokens_per_user`.
Recommendation recommend(const std::vector<PointPrediction>& points, const std::string& goal,
                         double min_tokens_per_user);

}  // namespace parafuse

// The decode-step and prefill cost model of perf_model.h. Counts come from the ModelConfig
// (parameters per rank, KV bytes, all-reduces and kernels per block); rates from the
// ClusterSpec. The kernel counts are those of parafuse's engine (runtime/engine/stage.cpp):
// attention = norm, QKV GEMM, RoPE + KV store, attention, O GEMM, residual add; SwiGLU FFN =
// norm, gate/up GEMM, SwiGLU, down GEMM, residual add; a linear replacement = norm, GEMM, add.
#include "runtime/predict/perf_model.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "kernels/core/error.h"

namespace parafuse {
namespace {

constexpr int kAttentionKernels = 6;
constexpr int kFfnKernels = 5;
constexpr int kLinearKernels = 3;
constexpr int kEmbeddingKernels = 1;
constexpr int kHeadKernels = 3;  // final norm, LM head GEMM, sampling

// What one sublayer costs on one rank: parameters of its weight shards, KV bytes per token of
// context per sequence, GEMM-free flops per row per token of context (attention), kernels and
// whether it ends in an all-reduce.
struct Sublayer {
  double params = 0;                     // this rank's shard (GEMM weights)
  double weight_bytes_each = 0;          // bytes per parameter
  double kv_bytes_per_token = 0;         // per sequence per context token (attention only)
  double attention_flops_per_token = 0;  // per row per context token (QK^T and PV)
  int kernels = 0;
  bool all_reduce = false;
  bool gather_logits = false;  // LM head: all-gather of the vocab-parallel logits
  bool embedding = false;      // reads only `rows` rows of its table
};

int kv_heads_per_rank(int kv_heads, int tp) {
  return kv_heads >= tp ? kv_heads / tp : 1;
}

std::vector<std::vector<Sublayer>> block_sublayers(const ModelConfig& m, int tp,
                                                   PredictDType dtype) {
  const double H = double(m.hidden_size), hd = double(m.head_dim);
  const double w = bytes_per_weight(dtype);
  std::vector<std::vector<Sublayer>> blocks;
  for (const BlockConfig& b : m.blocks) {
    std::vector<Sublayer> subs;
    if (b.attention == AttentionKind::Full) {
      const double q = double(m.n_heads / tp) * hd;
      const double kv = double(kv_heads_per_rank(b.n_kv_heads, tp)) * hd;
      Sublayer s;
      s.params = H * q + 2 * H * kv + q * H;
      s.weight_bytes_each = w;
      s.kv_bytes_per_token = 2 * kv * bytes_per_kv(dtype);
      s.attention_flops_per_token = 4 * q;
      s.kernels = kAttentionKernels;
      s.all_reduce = true;
      subs.push_back(s);
    } else if (b.attention == AttentionKind::Linear) {
      subs.push_back({H * H / tp, w, 0, 0, kLinearKernels, true, false, false});
    }
    if (b.ffn == FfnKind::SwiGlu) {
      subs.push_back(
          {3 * H * double(b.intermediate_size) / tp, w, 0, 0, kFfnKernels, true, false, false});
    } else if (b.ffn == FfnKind::Linear) {
      subs.push_back({H * H / tp, w, 0, 0, kLinearKernels, true, false, false});
    }
    blocks.push_back(std::move(subs));
  }
  // Embedding and LM head stay in bf16 (f32 for f32): FP8 recipes quantize the blocks' linear
  // layers only.
  const double head_bytes = dtype == PredictDType::F32 ? 4.0 : 2.0;
  const double vocab_shard = double(m.vocab_size) / tp * H;
  blocks.front().insert(blocks.front().begin(), Sublayer{vocab_shard, head_bytes, 0, 0,
                                                         kEmbeddingKernels, true, false, true});
  blocks.back().push_back(
      Sublayer{vocab_shard, head_bytes, 0, 0, kHeadKernels, false, true, false});
  return blocks;
}

// The GEMM time a step sees beyond its reads: all of it when nothing overlaps, only what sticks
// out past the reads for the roofline (overlap 1).
double exposed_compute_s(const ClusterSpec& c, double read_s, double compute_s) {
  return compute_s - c.compute_memory_overlap * std::min(read_s, compute_s);
}

double sublayer_weight_bytes(const Sublayer& s) {
  return s.params * s.weight_bytes_each;
}

// First block of each stage, balanced by weight bytes (the engine balances by cost).
std::vector<int> stage_starts(const std::vector<std::vector<Sublayer>>& blocks, int pp) {
  std::vector<double> cost;
  for (const auto& subs : blocks) {
    double c = 0;
    for (const Sublayer& s : subs) c += sublayer_weight_bytes(s);
    cost.push_back(c);
  }
  double total = 0;
  for (double c : cost) total += c;
  std::vector<int> starts = {0};
  double sum = 0;
  const int n = int(blocks.size());
  for (int i = 0; i < n && int(starts.size()) < pp; ++i) {
    sum += cost[size_t(i)];
    const int stage = int(starts.size());
    const bool reached = sum >= total * stage / pp;
    const bool must_cut = n - (i + 1) == pp - stage;  // one block left per remaining stage
    if ((reached || must_cut) && i + 1 < n) starts.push_back(i + 1);
  }
  return starts;
}

}  // namespace

PredictDType parse_predict_dtype(const std::string& name) {
  if (name == "f32") return PredictDType::F32;
  if (name == "bf16") return PredictDType::BF16;
  if (name == "fp8") return PredictDType::FP8;
  PF_THROW("unknown dtype '{}' (expected f32, bf16 or fp8)", name);
}

std::string dtype_name(PredictDType dtype) {
  return dtype == PredictDType::F32 ? "f32" : dtype == PredictDType::BF16 ? "bf16" : "fp8";
}

double bytes_per_weight(PredictDType dtype) {
  return dtype == PredictDType::F32 ? 4.0 : dtype == PredictDType::BF16 ? 2.0 : 1.0;
}
double bytes_per_activation(PredictDType dtype) {
  return dtype == PredictDType::F32 ? 4.0 : 2.0;
}
double bytes_per_kv(PredictDType dtype) {
  return bytes_per_weight(dtype);
}

double model_weight_bytes(const ModelConfig& model, PredictDType dtype) {
  double bytes = 0;
  for (const auto& subs : block_sublayers(model, 1, dtype))
    for (const Sublayer& s : subs) bytes += sublayer_weight_bytes(s);
  if (model.tie_word_embeddings)  // one table serves both
    bytes -= double(model.vocab_size) * double(model.hidden_size) *
             (dtype == PredictDType::F32 ? 4.0 : 2.0);
  return bytes;
}

double all_reduce_us(const ClusterSpec& c, int ranks, int nodes, double bytes) {
  if (ranks <= 1) return 0;
  const double p = ranks;
  const double traffic = bytes * 2 * (p - 1) / p;
  if (nodes <= 1) {
    for (const MeasuredAllReduce& m : c.allreduce_measured)
      if (m.ranks == ranks) return m.latency_us + traffic / (m.busbw_gbs * 1e3);
  }
  // NCCL's ring model (src/graph/tuning.cc): base latency + 2(p-1) steps, of which 2(n-1) cross
  // the network; NVLink steps cost 1.8x when the ring leaves the node (LL protocol).
  const int steps = 2 * (ranks - 1), inter_steps = 2 * (nodes - 1);
  const double intra_hop = c.intra_hop_latency_us * (nodes > 1 ? 1.8 : 1.0);
  const double latency = c.intra_allreduce_base_latency_us + (steps - inter_steps) * intra_hop +
                         inter_steps * c.inter_hop_latency_us;
  // Across nodes each ring channel leaves the node through one rail: the node's NICs together.
  const double busbw =
      nodes > 1 ? std::min(c.intra_allreduce_busbw_gbs, c.nics_per_node * c.nic_bandwidth_gbs)
                : c.intra_allreduce_busbw_gbs;
  return latency + traffic / (busbw * 1e3);
}

std::string layout_problem(const ModelConfig& model, const ClusterSpec& cluster, Layout layout) {
  const int tp = layout.tp, pp = layout.pp, dpn = cluster.devices_per_node;
  if (tp * pp > cluster.total_devices())
    return fmt::format("needs {} devices, {} has {}", tp * pp, cluster.name,
                       cluster.total_devices());
  if (model.n_heads % tp != 0)
    return fmt::format("tp {} does not divide the {} attention heads", tp, model.n_heads);
  for (int i = 0; i < model.n_blocks(); ++i) {
    const BlockConfig& b = model.blocks[size_t(i)];
    if (b.ffn == FfnKind::SwiGlu && b.intermediate_size % tp != 0)
      return fmt::format("tp {} does not divide block {}'s FFN width {}", tp, i,
                         b.intermediate_size);
  }
  if (tp > dpn && tp % dpn != 0)
    return fmt::format("a TP group of {} would split nodes of {} devices unevenly", tp, dpn);
  if (tp < dpn && dpn % tp != 0)
    return fmt::format("TP groups of {} do not tile a node of {} devices", tp, dpn);
  if (pp > model.n_blocks()) return fmt::format("{} stages for {} blocks", pp, model.n_blocks());
  return "";
}

std::vector<Layout> candidate_layouts(const ModelConfig& model, const ClusterSpec& cluster) {
  std::vector<Layout> layouts;
  const int n = cluster.total_devices();
  for (int tp = 1; tp <= n; ++tp) {
    if (n % tp != 0) continue;
    const Layout l{tp, n / tp};
    if (layout_problem(model, cluster, l).empty()) layouts.push_back(l);
  }
  return layouts;
}

PointPrediction predict_point(const ModelConfig& model, const ClusterSpec& c, Layout layout,
                              const Workload& work, int batch) {
  PF_CHECK(batch >= 1, "batch must be at least 1, got {}", batch);
  const std::string problem = layout_problem(model, c, layout);
  PF_CHECK(problem.empty(), "tp {} x pp {}: {}", layout.tp, layout.pp, problem);
  const int tp = layout.tp, pp = layout.pp, dpn = c.devices_per_node;
  const int tp_nodes = tp > dpn ? tp / dpn : 1;
  const double bw = c.memory_bandwidth_gbs * 1e9;                    // bytes/s
  const double rate = c.gemm_tflops(dtype_name(work.dtype)) * 1e12;  // flop/s
  const double launch_s = c.kernel_launch_us * 1e-6;
  const double act = bytes_per_activation(work.dtype);
  const double H = double(model.hidden_size);

  const auto blocks = block_sublayers(model, tp, work.dtype);
  const std::vector<int> starts = stage_starts(blocks, pp);
  const int stages = int(starts.size());
  auto stage_end = [&](int s) { return s + 1 < stages ? starts[size_t(s + 1)] : model.n_blocks(); };

  // Hand-off between stage s and s+1: does it leave the node?
  auto handoff_s = [&](int s, double bytes) {
    const int last_device = (s + 1) * tp - 1, next_device = (s + 1) * tp;
    const bool crosses = last_device / dpn != next_device / dpn;
    return crosses ? c.inter_p2p_latency_us * 1e-6 + bytes / (c.nic_bandwidth_gbs * 1e9)
                   : c.intra_p2p_latency_us * 1e-6 + bytes / (c.intra_p2p_bandwidth_gbs * 1e9);
  };

  PointPrediction out;
  out.layout = layout;
  out.batch = batch;
  out.placement = tp_nodes > 1              ? fmt::format("TP across {} nodes", tp_nodes)
                  : pp > 1 && tp * pp > dpn ? "TP within a node, PP across nodes"
                  : pp > 1                  ? "TP and PP within a node"
                                            : "TP within a node";

  // Decode: m micro-batches of mb rows each.
  const int m = std::min(pp, batch);
  const int mb = (batch + m - 1) / m;
  const double context = work.input_len + work.output_len / 2.0;  // mean over the generation
  std::vector<StepBreakdown> stage_ms(static_cast<size_t>(stages));
  for (int s = 0; s < stages; ++s) {
    StepBreakdown& st = stage_ms[size_t(s)];
    for (int i = starts[size_t(s)]; i < stage_end(s); ++i) {
      for (const Sublayer& sub : blocks[size_t(i)]) {
        const double wbytes =
            sub.embedding ? mb * H * sub.weight_bytes_each : sublayer_weight_bytes(sub);
        const double kvbytes = mb * context * sub.kv_bytes_per_token;
        const double mem_s = (wbytes + kvbytes) / bw;
        const double flops =
            sub.embedding ? 0
                          : 2.0 * mb * sub.params + mb * context * sub.attention_flops_per_token;
        st.weights += wbytes / bw * 1e3;
        st.kv += kvbytes / bw * 1e3;
        st.compute += exposed_compute_s(c, mem_s, flops / rate) * 1e3;
        st.launch += sub.kernels * launch_s * 1e3;
        st.kernels += sub.kernels;
        if (sub.all_reduce && tp > 1) {
          st.all_reduce += all_reduce_us(c, tp, tp_nodes, mb * H * act) * 1e-3;
          ++st.all_reduces;
        }
        if (sub.gather_logits && tp > 1)  // all-gather: half an all-reduce's traffic
          st.all_reduce +=
              all_reduce_us(c, tp, tp_nodes, mb * double(model.vocab_size) * 4 / 2) * 1e-3;
      }
    }
  }
  StepBreakdown chain;  // one micro-batch through every stage
  StepBreakdown slowest;
  for (int s = 0; s < stages; ++s) {
    const StepBreakdown& st = stage_ms[size_t(s)];
    chain.weights += st.weights;
    chain.kv += st.kv;
    chain.compute += st.compute;
    chain.all_reduce += st.all_reduce;
    chain.launch += st.launch;
    chain.all_reduces += st.all_reduces;
    chain.kernels += st.kernels;
    if (s + 1 < stages) chain.pipeline += handoff_s(s, mb * H * act) * 1e3;
    if (st.total() > slowest.total()) slowest = st;
  }
  if (m * slowest.total() > chain.total()) {  // the pipeline is full: the slowest stage paces
    StepBreakdown paced = slowest;
    for (double* v : {&paced.weights, &paced.kv, &paced.compute, &paced.all_reduce, &paced.launch})
      *v *= m;
    paced.all_reduces = chain.all_reduces;
    paced.kernels = chain.kernels;
    out.step = paced;
  } else {
    out.step = chain;
  }
  out.step_ms = out.step.total();
  out.tokens_per_s_per_user = 1e3 / out.step_ms;
  out.tokens_per_s = batch * out.tokens_per_s_per_user;

  // Prefill (TTFT): every prompt in forwards of at most prefill_chunk_tokens rows, each forward
  // through every stage.
  const double tokens = double(batch) * work.input_len;
  const double chunks = std::ceil(tokens / work.prefill_chunk_tokens);
  double ttft_s = 0;
  for (int s = 0; s < stages; ++s) {
    for (int i = starts[size_t(s)]; i < stage_end(s); ++i) {
      for (const Sublayer& sub : blocks[size_t(i)]) {
        const double wbytes = sub.embedding ? tokens * H * sub.weight_bytes_each
                                            : chunks * sublayer_weight_bytes(sub);
        const double kvbytes = tokens * sub.kv_bytes_per_token;  // written once
        // Causal attention: each row sees half the prompt on average.
        const double rows = sub.gather_logits ? batch : tokens;  // the head runs on last rows
        const double flops = sub.embedding
                                 ? 0
                                 : 2.0 * rows * sub.params + tokens * work.input_len / 2.0 *
                                                                 sub.attention_flops_per_token;
        const double read_s = (wbytes + kvbytes) / bw;
        ttft_s += read_s + exposed_compute_s(c, read_s, flops / rate);
        ttft_s += chunks * sub.kernels * launch_s;
        if (sub.all_reduce && tp > 1)
          ttft_s += chunks * all_reduce_us(c, tp, tp_nodes, tokens / chunks * H * act) * 1e-6;
      }
    }
    if (s + 1 < stages) ttft_s += chunks * handoff_s(s, tokens / chunks * H * act);
  }
  out.ttft_ms = ttft_s * 1e3;

  // Memory of the most loaded stage.
  const double context_end = work.input_len + work.output_len;
  const double chunk_rows = std::min(tokens, double(work.prefill_chunk_tokens));
  int64_t widest = 0;
  for (const BlockConfig& b : model.blocks) widest = std::max(widest, b.intermediate_size);
  for (int s = 0; s < stages; ++s) {
    MemoryPerDevice mem;
    for (int i = starts[size_t(s)]; i < stage_end(s); ++i)
      for (const Sublayer& sub : blocks[size_t(i)]) {
        mem.weights += sublayer_weight_bytes(sub);
        mem.kv_cache += batch * context_end * sub.kv_bytes_per_token;
      }
    // A forward's live activations: residual, normed input, attention/FFN output, QKV, the FFN's
    // gate and up halves; plus the logits of the last rows.
    mem.activations =
        chunk_rows * act *
            (4 * H + 3 * double(model.n_heads / tp) * model.head_dim + 2 * double(widest) / tp) +
        batch * double(model.vocab_size) / tp * 4;
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    mem.weights /= kGiB;
    mem.kv_cache /= kGiB;
    mem.activations /= kGiB;
    if (mem.total() > out.memory.total()) out.memory = mem;
  }
  out.fits = out.memory.total() <= c.memory_gib;
  return out;
}

namespace {

std::string describe(const PointPrediction& p) {
  return fmt::format("TP{} x PP{} at batch {}", p.layout.tp, p.layout.pp, p.batch);
}

std::string shares(const PointPrediction& p) {
  return fmt::format(
      "its {:.2f} ms step is {:.2f} ms weight reads, {:.2f} ms KV reads, {:.2f} ms exposed GEMM "
      "compute, {:.2f} ms in {} all-reduces, {:.2f} ms pipeline hand-offs and {:.2f} ms for {} "
      "kernel launches",
      p.step_ms, p.step.weights, p.step.kv, p.step.compute, p.step.all_reduce, p.step.all_reduces,
      p.step.pipeline, p.step.launch, p.step.kernels);
}

}  // namespace

Recommendation recommend(const std::vector<PointPrediction>& points, const std::string& goal,
                         double min_tokens_per_user) {
  Recommendation r;
  std::vector<const PointPrediction*> ok;
  int min_batch = 1 << 30;
  for (const PointPrediction& p : points)
    if (p.fits) min_batch = std::min(min_batch, p.batch);
  for (const PointPrediction& p : points) {
    if (!p.fits) continue;
    if (goal == "latency" && p.batch != min_batch) continue;
    if (goal == "throughput" && p.tokens_per_s_per_user < min_tokens_per_user) continue;
    ok.push_back(&p);
  }
  const int not_fitting =
      int(std::count_if(points.begin(), points.end(), [](const auto& p) { return !p.fits; }));
  if (ok.empty()) {
    r.why = goal == "throughput"
                ? fmt::format("no point that fits in memory reaches {} tokens/s per user",
                              min_tokens_per_user)
                : "no layout fits in memory";
    return r;
  }
  auto key = [&](const PointPrediction* p) {
    return goal == "latency" ? p->tokens_per_s_per_user : p->tokens_per_s;
  };
  std::sort(ok.begin(), ok.end(), [&](auto* a, auto* b) { return key(a) > key(b); });
  r.found = true;
  r.best = *ok.front();
  const std::string unit = goal == "latency" ? "tokens/s per user" : "tokens/s";
  r.why =
      fmt::format("{}: {:.1f} {}, the best of {} fitting candidates{}; {}.", describe(r.best),
                  key(ok.front()), unit, ok.size(),
                  not_fitting ? fmt::format(" ({} points do not fit in memory)", not_fitting) : "",
                  shares(r.best));
  if (ok.size() > 1) {
    const PointPrediction& next = *ok[1];
    r.why += fmt::format(" Next: {} at {:.1f} {} ({:.2f}x less); {}.", describe(next), key(ok[1]),
                         unit, key(ok.front()) / key(ok[1]), shares(next));
  }
  return r;
}

}  // namespace parafuse

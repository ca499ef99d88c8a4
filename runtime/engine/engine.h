// Engine: one forward step of a batch of sequences on this rank, for any TP x PP split.
//
// embed (first stage, vocab-parallel) -> this rank's Stage -> final norm + LM head (last stage,
// vocab-parallel, logits all-gathered over TP). Between stages the hidden states travel by the
// Transport, split into micro-batches so stage s works on micro-batch j while stage s-1 works
// on j+1. Every rank runs the same calls in the same order (SPMD): the caller names sequences
// by integer id, and sampled ids are broadcast from the last stage, so all ranks agree on the
// next step without a central scheduler.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/pipeline_plan.h"
#include "runtime/engine/stage.h"
#include "runtime/model/model_config.h"
#include "runtime/model/weight_source.h"

namespace parafuse {

class ProcessGrid;
class Collectives;
class Transport;

struct EngineOptions {
  int64_t kv_cache_tokens = 4096;  // tokens of KV cache over all sequences
  int64_t page_size = 16;          // tokens per KV cache page
  int64_t max_batch_tokens = 512;  // rows per forward; longer prompts are chunked by callers
  // The KV cache's dtype (one Backend::supports_kv_cache takes); unset: auto_kv_cache_dtype()
  // (kv_cache.h: F16 on the CPU backend for quantized and half-precision files, else the
  // activation dtype).
  std::optional<DType> kv_cache_dtype;
  // Replay decode steps (one new token per sequence) as recorded graphs where the backend
  // records them (CUDA) and the step is local: tp = 1, pp = 1, no observer. A batch size is
  // run eagerly once, then recorded, then replayed. Such decode batches are padded to
  // decode_batch_bucket() rows, so a continuous batch whose size changes every step replays
  // a few recordings instead of recording every size.
  bool graphs = true;
  // Pad decode steps to their bucket even where no graph is recorded (tests check on the CPU
  // that padding rows change no real row).
  bool pad_decode_batches = false;
};

// Rows a decode batch of `m` sequences is padded to: 1, 2, 4, then multiples of 8 (vLLM's
// CUDA-graph capture sizes).
int64_t decode_batch_bucket(int64_t m);

// How this rank takes part in a TP x PP job; all null for a single rank.
struct ParallelContext {
  const ProcessGrid* grid = nullptr;
  Collectives* tp = nullptr;       // this rank's TP group (needed when tp > 1)
  Collectives* world = nullptr;    // every rank (needed when pp > 1)
  Transport* transport = nullptr;  // pipeline neighbours (needed when pp > 1)
  std::vector<int> pp_split;       // pinned first block of each stage; empty: by cost
  int micro_batches = 0;           // 0: one per stage, at most one per sequence
};

struct SeqTokens {
  int seq = 0;
  std::span<const int32_t> tokens;  // new tokens, appended after what the cache holds
  bool all_logits = false;          // logits for every row (perplexity) or just the last
};

// Totals since the last reset, on this rank.
struct EngineStats {
  int64_t forwards = 0;
  int64_t tokens = 0;
  int64_t tp_all_reduces = 0;
  double seconds = 0;             // inside forward()
  double collective_seconds = 0;  // of which in TP collectives
  double transport_seconds = 0;   // of which waiting for pipeline sends/receives
  int64_t graph_steps = 0;        // forwards replayed as recorded graphs
};

class Engine {
 public:
  Engine(const ModelConfig& config, const WeightSource& weights, Backend& backend,
         const EngineOptions& options, const ParallelContext& parallel = {},
         const LoadProgress& progress = {});
  ~Engine();

  const ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  Backend& backend() { return backend_; }
  Stage& stage() { return *stage_; }
  PagedKvCache& kv_cache() { return *kv_cache_; }
  const std::vector<StagePlan>& pipeline_plan() const { return plan_; }
  bool is_first_stage() const { return stage_index_ == 0; }
  bool is_last_stage() const { return stage_index_ + 1 == int(plan_.size()); }

  void add_sequence(int seq) { kv_cache_->add(seq); }
  void remove_sequence(int seq) { kv_cache_->remove(seq); }
  int64_t sequence_length(int seq) const { return kv_cache_->length(seq); }

  // Logits (rows, vocab) F32 on the backend: per step all its rows if all_logits, else its
  // last row, in step order. Valid until the next forward; empty except on the last stage.
  Tensor forward(std::span<const SeqTokens> steps);
  // Host copy of a logits tensor (empty vector where the tensor is empty).
  std::vector<float> to_host(const Tensor& t);
  // One id per logits row of the last forward, identical on every rank.
  std::vector<int32_t> sample(const Tensor& logits, std::span<const SamplingParams> params);
  // Bytes computed on the last stage, sent to every rank.
  void broadcast_from_last_stage(void* data, size_t bytes);

  // Weight bytes one decode step of this rank reads: its stage's weights and, on the last
  // stage, the LM head, in their resident formats (the embedding reads one row per token).
  size_t weight_bytes_per_token() const;

  // EngineOptions::graphs, switchable between steps (benchmarks compare both).
  void set_graphs(bool on) { options_.graphs = on; }
  const EngineStats& stats() const { return stats_; }
  void reset_stats();

 private:
  Tensor scratch(int slot, DType dtype, int64_t rows, int64_t cols);
  // Whether this step is a plain decode batch (one token per sequence, one stage, one TP rank,
  // one micro-batch, no observer): one that may be padded and run as a recorded graph.
  bool local_decode(std::span<const SeqTokens> steps, size_t n_micro) const;
  // Whether it runs as a recorded graph (see EngineOptions::graphs).
  bool graph_eligible(std::span<const SeqTokens> steps, size_t n_micro) const;
  Tensor load_rows(const WeightSource& w, const std::string& name, int64_t row_begin,
                   int64_t row_end, int64_t padded_rows, size_t& done, size_t total,
                   const LoadProgress& progress);

  ModelConfig config_;
  EngineOptions options_;
  Backend& backend_;
  ParallelContext parallel_;
  ShardSpec shard_;
  std::vector<StagePlan> plan_;
  int stage_index_ = 0;
  int64_t vocab_chunk_ = 0;  // vocab rows per TP rank (the last may hold padding)
  int64_t vocab_begin_ = 0;
  std::vector<Buffer> weight_buffers_;
  Tensor embed_;       // (vocab rows of this rank, H), first stage
  Tensor lm_head_;     // (vocab_chunk_, H), last stage; shares embed_ when tied on one stage
  Tensor final_norm_;  // (1, H), last stage
  std::unique_ptr<Stage> stage_;
  std::unique_ptr<PagedKvCache> kv_cache_;
  std::vector<Buffer> scratch_buffers_;
  std::vector<size_t> scratch_bytes_;
  int64_t last_logit_rows_ = 0;
  uint64_t forward_counter_ = 0;
  // Recorded decode graphs: the batch sizes run eagerly once already, and the scratch/stage
  // versions the recordings point into (a change drops them).
  std::set<int64_t> graph_warm_;
  std::map<int64_t, int64_t> graph_all_reduces_;  // batch size -> all-reduces its graph holds
  uint64_t scratch_version_ = 0, graph_version_ = ~uint64_t(0);
  uint64_t engine_id_;  // names this engine's recordings on a shared backend
  EngineStats stats_;
};

}  // namespace parafuse

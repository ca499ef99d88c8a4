// Engine: embedding, the stage, the LM head, micro-batched pipelining. See engine.h.
#include "runtime/engine/engine.h"

#include <atomic>
#include <chrono>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "parallel/process_grid.h"
#include "parallel/transport.h"

namespace parafuse {
namespace {

enum Slot { kIds, kPos, kHidden, kRows, kNormed, kLogitsLocal, kGathered, kLogits, kSlotCount };

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One micro-batch: a contiguous group of the step's sequences and their rows.
struct MicroBatch {
  int64_t row_begin = 0, row_end = 0;  // rows of the whole step
  AttentionBatch attention;            // q_begin relative to row_begin
  std::vector<int64_t> logit_rows;     // relative to row_begin
  int64_t logit_begin = 0;             // first logits row of this micro-batch
};

uint64_t next_engine_id() {
  static std::atomic<uint64_t> next{0};
  return next++;
}

}  // namespace

Engine::Engine(const ModelConfig& config, const WeightSource& weights, Backend& backend,
               const EngineOptions& options, const ParallelContext& parallel,
               const LoadProgress& progress)
    : config_(config),
      options_(options),
      backend_(backend),
      parallel_(parallel),
      scratch_buffers_(kSlotCount),
      scratch_bytes_(kSlotCount, 0),
      engine_id_(next_engine_id()) {
  config_.validate();
  const DType kv_dtype = options.kv_cache_dtype.value_or(auto_kv_cache_dtype(backend, weights));
  require_kv_cache_dtype(backend, kv_dtype);  // before minutes of loading
  const int tp = parallel.grid ? parallel.grid->tp() : 1;
  const int pp = parallel.grid ? parallel.grid->pp() : 1;
  if (parallel.grid) {
    shard_ = ShardSpec{parallel.grid->tp_rank(), tp};
    stage_index_ = parallel.grid->pp_stage();
  }
  PF_CHECK(tp == 1 || parallel.tp, "tp={} needs a TP communicator", tp);
  PF_CHECK(pp == 1 || (parallel.transport && parallel.world),
           "pp={} needs a transport and a world communicator", pp);
  plan_ = plan_pipeline(config_, pp, parallel.pp_split);
  const StagePlan& mine = plan_[size_t(stage_index_)];
  // Every stage validates every block's shard, so a split that does not fit fails the same way
  // on all ranks before anything is loaded.
  for (int i = 0; i < config_.n_blocks(); ++i) shard_block(config_, i, shard_);

  const int64_t V = config_.vocab_size, H = config_.hidden_size;
  vocab_chunk_ = (V + tp - 1) / tp;
  vocab_begin_ = std::min(V, int64_t(shard_.rank) * vocab_chunk_);
  const int64_t vocab_end = std::min(V, vocab_begin_ + vocab_chunk_);
  const bool share_head = config_.tie_word_embeddings && is_first_stage() && is_last_stage() &&
                          vocab_end - vocab_begin_ == vocab_chunk_;
  size_t total = Stage::weight_bytes(config_, mine.first, mine.last, shard_);
  if (is_first_stage()) total += size_t((vocab_end - vocab_begin_) * H) * sizeof(float);
  if (is_last_stage()) total += size_t((share_head ? 0 : vocab_chunk_ * H) + H) * sizeof(float);
  size_t done = 0;

  const std::string head_name =
      config_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  if (is_first_stage())
    embed_ = load_rows(weights, "model.embed_tokens.weight", vocab_begin_, vocab_end,
                       vocab_end - vocab_begin_, done, total, progress);
  if (is_last_stage()) {
    lm_head_ = share_head ? embed_
                          : load_rows(weights, head_name, vocab_begin_, vocab_end, vocab_chunk_,
                                      done, total, progress);
    final_norm_ = load_rows(weights, "model.norm.weight", 0, 1, 1, done, total, progress);
  }
  stage_ = std::make_unique<Stage>(config_, weights, backend_, mine.first, mine.last, shard_,
                                   parallel.tp, progress, &done, total);
  kv_cache_ = std::make_unique<PagedKvCache>(
      backend_, stage_->kv_widths(), options_.kv_cache_tokens, options_.page_size, kv_dtype);
}

Engine::~Engine() {
  // The backend's recordings point into this engine's buffers.
  if (graph_version_ != ~uint64_t(0)) {
    try {
      backend_.clear_graphs();
    } catch (const std::exception&) {  // a device error already reported elsewhere
    }
  }
}

Tensor Engine::load_rows(const WeightSource& w, const std::string& name, int64_t row_begin,
                         int64_t row_end, int64_t padded_rows, size_t& done, size_t total,
                         const LoadProgress& progress) {
  const TensorInfo info = w.info(name);
  const int64_t H = config_.hidden_size;
  const bool is_norm = name == "model.norm.weight";
  const std::vector<int64_t> want =
      is_norm ? std::vector<int64_t>{H} : std::vector<int64_t>{config_.vocab_size, H};
  PF_CHECK(info.shape == want, "{}: tensor {} has shape [{}], the config implies [{}]",
           w.description(), name, fmt::join(info.shape, ", "), fmt::join(want, ", "));
  // (Tables and the LM head carry no FP8 scales: an FP8 one is read as F32.)
  const std::optional<DType> found =
      is_norm ? std::nullopt : native_weight_dtype(w, backend_, {name}, Range{});
  const std::optional<DType> native =
      found.has_value() && found.value() != DType::F8_E4M3 ? found : std::nullopt;
  if (native) {  // the file's format (a quantized table dequantizes the rows it looks up)
    const size_t row_bytes = dtype_row_bytes(*native, H);
    std::vector<uint8_t> bytes(size_t(padded_rows) * row_bytes, 0);  // zero blocks: zero rows
    if (row_end > row_begin) w.read_native(name, {row_begin, row_end}, {}, bytes.data());
    weight_buffers_.emplace_back();
    Tensor t = backend_.alloc_tensor(weight_buffers_.back(), *native, padded_rows, H);
    backend_.upload_weight(bytes.data(), t);
    done += size_t((row_end - row_begin) * H) * sizeof(float);
    if (progress) progress(done, total);
    return t;
  }
  std::vector<float> host(size_t(padded_rows * H), 0.0f);  // padding rows stay zero
  if (is_norm) {
    w.read_f32(name, {}, {}, host.data());
  } else if (row_end > row_begin) {
    w.read_f32(name, {row_begin, row_end}, {}, host.data());
  }
  weight_buffers_.emplace_back();
  Tensor t = backend_.alloc_tensor(weight_buffers_.back(), backend_.weight_dtype(), padded_rows, H);
  backend_.upload_f32(host.data(), t);
  done += size_t((row_end - row_begin) * H) * sizeof(float);
  if (progress) progress(done, total);
  return t;
}

Tensor Engine::scratch(int slot, DType dtype, int64_t rows, int64_t cols) {
  const size_t need = size_t(std::max<int64_t>(rows * cols, 1)) * dtype_size(dtype);
  if (scratch_bytes_[size_t(slot)] < need) {
    scratch_buffers_[size_t(slot)] = backend_.alloc(need);
    scratch_bytes_[size_t(slot)] = need;
    ++scratch_version_;
  }
  return Tensor{scratch_buffers_[size_t(slot)].data(), dtype, rows, cols, cols};
}

size_t Engine::weight_bytes_per_token() const {
  size_t bytes = stage_->resident_weight_bytes();
  if (is_last_stage()) bytes += lm_head_.bytes() + final_norm_.bytes();
  return bytes;
}

void Engine::reset_stats() {
  stats_ = EngineStats{};
  if (parallel_.tp) parallel_.tp->stats().reset();
  if (parallel_.transport) parallel_.transport->stats() = Transport::Stats{};
}

Tensor Engine::forward(std::span<const SeqTokens> steps) {
  PF_CHECK(!steps.empty(), "forward of an empty batch");
  const double t_start = now_seconds();
  const int64_t tp_calls_before = parallel_.tp ? parallel_.tp->stats().all_reduce_calls : 0;
  const double tp_seconds_before = parallel_.tp ? parallel_.tp->stats().seconds : 0.0;
  const double transport_before =
      parallel_.transport ? parallel_.transport->stats().wait_seconds : 0.0;
  const int pp = int(plan_.size());

  // Host-side description of the step, split into micro-batches of whole sequences.
  int n_micro = parallel_.micro_batches > 0 ? parallel_.micro_batches : pp;
  n_micro = std::max(1, std::min(n_micro, int(steps.size())));
  std::vector<MicroBatch> micro(static_cast<size_t>(n_micro));
  std::vector<int32_t> ids, positions;
  int64_t n_logits = 0;
  for (size_t si = 0; si < steps.size(); ++si) {
    const SeqTokens& s = steps[si];
    MicroBatch& mb = micro[si * size_t(n_micro) / steps.size()];
    if (mb.attention.seqs.empty()) {
      mb.row_begin = int64_t(ids.size());
      mb.logit_begin = n_logits;
      mb.attention.block_size = options_.page_size;
    }
    PF_CHECK(!s.tokens.empty(), "sequence {}: a step needs at least one token", s.seq);
    const int64_t past = kv_cache_->length(s.seq);
    PF_CHECK(past + int64_t(s.tokens.size()) <= config_.max_position_embeddings,
             "sequence {}: {} tokens exceed the model's context of {}", s.seq,
             past + int64_t(s.tokens.size()), config_.max_position_embeddings);
    AttentionSeq a;
    a.q_begin = int64_t(ids.size()) - mb.row_begin;
    a.n_new = int64_t(s.tokens.size());
    a.n_past = past;
    a.block_table = kv_cache_->reserve(s.seq, a.n_new);
    mb.attention.seqs.push_back(a);
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t id = s.tokens[i];
      PF_CHECK(id >= 0 && id < config_.vocab_size, "token id {} outside the vocabulary [0, {})", id,
               config_.vocab_size);
      if (s.all_logits || i + 1 == s.tokens.size()) {
        mb.logit_rows.push_back(a.q_begin + int64_t(i));
        ++n_logits;
      }
      ids.push_back(id);
      positions.push_back(int32_t(past + int64_t(i)));
    }
    mb.row_end = int64_t(ids.size());
  }
  const bool graph = graph_eligible(steps, micro.size());
  const int64_t n_real_logits = n_logits;
  if (graph || (options_.pad_decode_batches && local_decode(steps, micro.size()))) {
    // Padding rows: token 0 at position 0 of its own empty sequence, its one key in the cache's
    // padding page; their logits are computed and dropped.
    MicroBatch& mb = micro[0];
    for (int64_t row = int64_t(ids.size()); row < decode_batch_bucket(int64_t(steps.size()));
         ++row) {
      AttentionSeq a;
      a.q_begin = row;
      a.n_new = 1;
      a.n_past = 0;
      a.block_table = kv_cache_->padding_block_table();
      mb.attention.seqs.push_back(a);
      mb.logit_rows.push_back(row);
      ++n_logits;
      ids.push_back(0);
      positions.push_back(0);
    }
    mb.row_end = int64_t(ids.size());
  }
  const int64_t m = int64_t(ids.size()), H = config_.hidden_size, V = config_.vocab_size;
  const DType act = backend_.activation_dtype();
  const uint64_t step_tag = (forward_counter_++ % (uint64_t(1) << 40)) << 8;

  Tensor ids_t = scratch(kIds, DType::I32, m, 1);
  Tensor pos_t = scratch(kPos, DType::I32, m, 1);
  backend_.upload_i32(positions.data(), pos_t);
  Tensor hidden = scratch(kHidden, act, m, H);
  Tensor logits_local;
  if (is_last_stage()) logits_local = scratch(kLogitsLocal, DType::F32, n_logits, vocab_chunk_);
  if (is_first_stage()) backend_.upload_i32(ids.data(), ids_t);

  std::vector<std::unique_ptr<TransportRequest>> sends;
  const int prev = parallel_.grid ? parallel_.grid->prev_stage_rank() : -1;
  const int next = parallel_.grid ? parallel_.grid->next_stage_rank() : -1;
  // The device work of the step: everything after the uploads. Recorded and replayed as one
  // graph for decode steps where the backend records graphs.
  auto device_step = [&] {
    for (size_t j = 0; j < micro.size(); ++j) {
      const MicroBatch& mb = micro[j];
      Tensor h = hidden.rows_view(mb.row_begin, mb.row_end);
      if (is_first_stage()) {
        backend_.embedding(embed_, ids_t.rows_view(mb.row_begin, mb.row_end), vocab_begin_, h);
        if (shard_.size > 1)
          parallel_.tp->all_reduce_sum(h);  // vocab-parallel: one rank has each row
      } else {
        parallel_.transport->recv(h, prev, step_tag + j)->wait();
      }
      // The last stage computes the final layers for the logit rows alone.
      StepInputs in{
          &mb.attention, pos_t.rows_view(mb.row_begin, mb.row_end), kv_cache_.get(),
          is_last_stage() ? std::span<const int64_t>(mb.logit_rows) : std::span<const int64_t>()};
      stage_->forward(h, in);
      if (!is_last_stage()) {
        sends.push_back(parallel_.transport->send(h, next, step_tag + j));
        continue;
      }
      // Only the rows that want logits go through the final norm and the LM head.
      // (When every row wants logits, as in decode, they are h itself: no gather.)
      const int64_t r = int64_t(mb.logit_rows.size());
      Tensor rows = r == h.rows ? h : scratch(kRows, act, r, H);
      for (int64_t i = 0; r != h.rows && i < r; ++i) {
        const int64_t src = mb.logit_rows[size_t(i)];
        backend_.copy(h.rows_view(src, src + 1), rows.rows_view(i, i + 1));
      }
      Tensor normed = scratch(kNormed, act, r, H);
      backend_.rmsnorm(rows, final_norm_, float(config_.rms_norm_eps), normed);
      backend_.gemm(normed, lm_head_, logits_local.rows_view(mb.logit_begin, mb.logit_begin + r));
    }
  };
  if (graph) {
    // Inputs are uploaded; stage the attention metadata, then run the batch size eagerly once
    // (it sizes every scratch buffer), and record / replay it from then on. Any buffer that
    // moved since the recordings were made invalidates them all.
    const uint64_t version = scratch_version_ + stage_->version();
    if (version != graph_version_) {
      backend_.clear_graphs();
      graph_warm_.clear();
      graph_all_reduces_.clear();
      graph_version_ = version;
    }
    backend_.prepare_attention(micro[0].attention, kv_cache_->slot_count());
    if (graph_warm_.count(m) == 0) {
      device_step();
      if (scratch_version_ + stage_->version() == graph_version_) graph_warm_.insert(m);
    } else {
      const std::string key = fmt::format("engine {} decode m={}", engine_id_, m);
      const int64_t calls_before = parallel_.tp ? parallel_.tp->stats().all_reduce_calls : 0;
      backend_.run_graph(key, device_step);
      stats_.graph_steps += 1;
      if (shard_.size > 1) {
        // The recording's all-reduces run inside the replay: count them as calls, and watch
        // them as the eager path's watchdog would.
        const int64_t recorded = parallel_.tp->stats().all_reduce_calls - calls_before;
        if (recorded > 0) {
          graph_all_reduces_[m] = recorded;
        } else {
          parallel_.tp->stats().all_reduce_calls += graph_all_reduces_[m];
        }
        parallel_.tp->wait_recorded("a replayed decode graph");
      }
    }
  } else {
    device_step();
  }
  for (auto& s : sends) s->wait();
  for (const SeqTokens& s : steps) kv_cache_->commit(s.seq, int64_t(s.tokens.size()));

  Tensor logits;
  if (is_last_stage()) {
    if (shard_.size == 1) {
      logits = logits_local.rows_view(0, n_real_logits);  // without padding rows
    } else {
      // Vocab-parallel head: rank k holds columns [k*chunk, (k+1)*chunk); gather and interleave.
      const int tp = shard_.size;
      Tensor gathered = scratch(kGathered, DType::F32, n_logits * tp, vocab_chunk_);
      parallel_.tp->all_gather_rows(logits_local, gathered);
      logits = scratch(kLogits, DType::F32, n_logits, V);
      for (int k = 0; k < tp; ++k) {
        const int64_t c0 = int64_t(k) * vocab_chunk_, c1 = std::min(V, c0 + vocab_chunk_);
        if (c1 <= c0) continue;
        backend_.copy(gathered.rows_view(k * n_logits, (k + 1) * n_logits).cols_view(0, c1 - c0),
                      logits.cols_view(c0, c1));
      }
    }
  }
  last_logit_rows_ = n_real_logits;
  stats_.forwards += 1;
  stats_.tokens += m;
  stats_.seconds += now_seconds() - t_start;
  if (parallel_.tp) {
    stats_.tp_all_reduces += parallel_.tp->stats().all_reduce_calls - tp_calls_before;
    stats_.collective_seconds += parallel_.tp->stats().seconds - tp_seconds_before;
  }
  if (parallel_.transport)
    stats_.transport_seconds += parallel_.transport->stats().wait_seconds - transport_before;
  return logits;
}

int64_t decode_batch_bucket(int64_t m) {
  if (m <= 2) return m;
  if (m <= 4) return 4;
  return (m + 7) / 8 * 8;
}

bool Engine::local_decode(std::span<const SeqTokens> steps, size_t n_micro) const {
  // Transports and host-side collectives wait on the host; a recorded step must not. TP groups
  // whose collectives record into graphs (NCCL) may take part.
  const bool tp_records = shard_.size == 1 || (parallel_.tp && parallel_.tp->records_in_graphs());
  if (plan_.size() != 1 || !tp_records || n_micro != 1 || stage_->has_observer()) return false;
  for (const SeqTokens& s : steps)
    if (s.tokens.size() != 1 || s.all_logits) return false;
  return true;
}

bool Engine::graph_eligible(std::span<const SeqTokens> steps, size_t n_micro) const {
  return options_.graphs && backend_.records_graphs() && local_decode(steps, n_micro);
}

std::vector<float> Engine::to_host(const Tensor& t) {
  if (t.empty()) return {};
  std::vector<float> host(size_t(t.numel()));
  backend_.download_f32(t, host.data());
  return host;
}

std::vector<int32_t> Engine::sample(const Tensor& logits, std::span<const SamplingParams> params) {
  PF_CHECK(int64_t(params.size()) == last_logit_rows_,
           "sample: {} sampling params for {} logits rows", params.size(), last_logit_rows_);
  std::vector<int32_t> ids(params.size());
  if (is_last_stage()) backend_.sample(logits, params.data(), ids.data());
  broadcast_from_last_stage(ids.data(), ids.size() * sizeof(int32_t));
  return ids;
}

void Engine::broadcast_from_last_stage(void* data, size_t bytes) {
  if (plan_.size() > 1)
    parallel_.world->broadcast_bytes(data, bytes, parallel_.grid->sampler_rank());
}

}  // namespace parafuse

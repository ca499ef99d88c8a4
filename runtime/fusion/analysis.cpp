// The measurements of `parafuse analyze` (see analysis.h): one observed baseline forward over
// the calibration tokens, then one forward per FFN candidate with that FFN skipped.
//
// Observed tensors are copied to the host and reduced per token in double there: the analysis
// runs on one rank and is dominated by the forward passes, so a device-side reduction would buy
// nothing but a second implementation of the same sums.
#include "runtime/fusion/analysis.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "kernels/core/error.h"
#include "runtime/config/read_file.h"

namespace parafuse {
namespace {

constexpr int kAnalysisSeq = 0;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// 1 - cos(a, b) in double; 0 when either vector is zero (nothing to turn).
double cosine_distance(const float* a, const float* b, int64_t n) {
  double dot = 0, na = 0, nb = 0;
  for (int64_t k = 0; k < n; ++k) {
    dot += double(a[k]) * double(b[k]);
    na += double(a[k]) * double(a[k]);
    nb += double(b[k]) * double(b[k]);
  }
  if (na == 0 || nb == 0) return 0.0;
  return 1.0 - dot / std::sqrt(na * nb);
}

struct Mean {
  double sum = 0;
  int64_t n = 0;
  void add(double v) {
    sum += v;
    ++n;
  }
  double value() const { return n ? sum / double(n) : 0.0; }
};

// Restores the stage's overrides and removes the observer on every exit path.
class StageStateGuard {
 public:
  explicit StageStateGuard(Stage& stage) : stage_(stage), saved_(stage.overrides()) {}
  ~StageStateGuard() {
    stage_.set_observer({});
    stage_.set_overrides(saved_);
  }
  StageStateGuard(const StageStateGuard&) = delete;
  StageStateGuard& operator=(const StageStateGuard&) = delete;

 private:
  Stage& stage_;
  ForwardOverrides saved_;
};

// Feeds `tokens` through one sequence in chunks; `row_offset` tells the observer which token
// its first row is.
void feed_tokens(Engine& engine, std::span<const int32_t> tokens, int64_t& row_offset) {
  engine.add_sequence(kAnalysisSeq);
  struct Remove {
    Engine& e;
    ~Remove() { e.remove_sequence(kAnalysisSeq); }
  } remove{engine};
  const size_t chunk = size_t(engine.options().max_batch_tokens);
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    row_offset = int64_t(begin);
    SeqTokens step{kAnalysisSeq, tokens.subspan(begin, std::min(chunk, tokens.size() - begin)),
                   false};
    engine.forward(std::span<const SeqTokens>(&step, 1));
  }
}

}  // namespace

std::vector<int> fusion_candidates(const ModelConfig& config) {
  const auto free_ffn = [&](int i) {
    const BlockConfig& b = config.blocks[size_t(i)];
    return b.ffn == FfnKind::SwiGlu && b.attention == AttentionKind::None;
  };
  std::vector<int> out;
  for (int i = 0; i < config.n_blocks(); ++i) {
    const bool heads_run = config.blocks[size_t(i)].ffn == FfnKind::SwiGlu &&
                           i + 1 < config.n_blocks() && free_ffn(i + 1);
    if (free_ffn(i) || heads_run) out.push_back(i);
  }
  return out;
}

FusionAnalysis analyze_fusion(Engine& engine, std::span<const int32_t> tokens,
                              const AnalysisOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& config = engine.config();
  PF_CHECK(engine.pipeline_plan().size() == 1,
           "the fusion analysis runs on one rank (pp=1), not pp={}", engine.pipeline_plan().size());
  PF_CHECK(tokens.size() >= 2, "the analysis needs at least 2 calibration tokens, got {}",
           tokens.size());
  const int64_t H = config.hidden_size, n_tokens = int64_t(tokens.size());
  const int n_blocks = config.n_blocks();

  FusionAnalysis a;
  a.model = options.model_name;
  a.model_blocks = n_blocks;
  a.tokens = n_tokens;
  ForwardOverrides base;
  ModelConfig effective = config;
  if (options.plan) {
    options.plan->validate(config);
    a.removed_attention = options.plan->remove_attention;
    std::sort(a.removed_attention.begin(), a.removed_attention.end());
    base.skip_attention.assign(size_t(n_blocks), 0);
    for (int id : a.removed_attention) base.skip_attention[size_t(id)] = 1;
    effective = options.plan->without_removed_attention(config);
  }
  a.candidates = fusion_candidates(effective);
  const size_t C = a.candidates.size();
  for (int id : a.candidates)
    a.candidate_has_attention.push_back(effective.blocks[size_t(id)].attention !=
                                        AttentionKind::None);
  std::vector<int> candidate_index(size_t(n_blocks), -1);
  for (size_t c = 0; c < C; ++c) candidate_index[size_t(a.candidates[c])] = int(c);

  Stage& stage = engine.stage();
  StageStateGuard guard(stage);
  const int forwards = 1 + int(C > 1 ? C - 1 : 0);
  auto report = [&](int forward, std::string what) {
    if (options.on_forward) options.on_forward({forward, forwards, std::move(what)});
  };

  // Baseline: per-sublayer statistics, and every candidate's FFN update per token.
  std::map<std::pair<int, bool>, std::pair<Mean, Mean>> stats;  // (block, is_ffn) -> dist, ratio
  std::vector<std::pair<int, bool>> order;
  std::vector<std::vector<float>> baseline_update(C);  // (tokens, H) per candidate
  int64_t row_offset = 0;
  std::vector<float> x, f, sum(static_cast<size_t>(H));  // host copies of one observation
  stage.set_overrides(base);
  stage.set_observer([&](int block, bool is_ffn, const Tensor& input, const Tensor& output) {
    const int64_t m = input.rows;
    x.resize(size_t(m * H));
    f.resize(size_t(m * H));
    engine.backend().download_f32(input, x.data());
    engine.backend().download_f32(output, f.data());
    const auto key = std::make_pair(block, is_ffn);
    auto [it, fresh] = stats.try_emplace(key);
    if (fresh) order.push_back(key);
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x.data() + r * H;
      const float* fr = f.data() + r * H;
      double nx = 0, nf = 0;
      for (int64_t k = 0; k < H; ++k) {
        sum[size_t(k)] = xr[k] + fr[k];
        nx += double(xr[k]) * double(xr[k]);
        nf += double(fr[k]) * double(fr[k]);
      }
      it->second.first.add(cosine_distance(xr, sum.data(), H));
      it->second.second.add(nx > 0 ? std::sqrt(nf / nx) : 0.0);
    }
    const int c = is_ffn ? candidate_index[size_t(block)] : -1;
    if (c >= 0) {
      auto& dst = baseline_update[size_t(c)];
      dst.resize(size_t(n_tokens * H));
      std::copy(f.begin(), f.end(), dst.begin() + row_offset * H);
    }
  });
  report(1, "baseline");
  feed_tokens(engine, tokens, row_offset);
  for (const auto& key : order) {
    const auto& [dist, ratio] = stats.at(key);
    a.sublayers.push_back({key.first, key.second, dist.value(), ratio.value()});
  }

  // Dependency: skip candidate i's FFN, compare every later candidate's update to the baseline.
  a.dependency.assign(C, std::vector<double>(C, 0.0));
  for (size_t ci = 0; ci + 1 < C; ++ci) {
    const int block_i = a.candidates[ci];
    std::vector<Mean> dep(C);
    ForwardOverrides skip = base;
    skip.skip_ffn.assign(size_t(n_blocks), 0);
    skip.skip_ffn[size_t(block_i)] = 1;
    stage.set_overrides(skip);
    stage.set_observer([&](int block, bool is_ffn, const Tensor&, const Tensor& output) {
      const int c = is_ffn ? candidate_index[size_t(block)] : -1;
      if (c <= int(ci)) return;
      f.resize(size_t(output.rows * H));
      engine.backend().download_f32(output, f.data());
      const float* ref = baseline_update[size_t(c)].data() + row_offset * H;
      for (int64_t r = 0; r < output.rows; ++r)
        dep[size_t(c)].add(cosine_distance(ref + r * H, f.data() + r * H, H));
    });
    report(int(ci) + 2, fmt::format("without FFN {}", block_i));
    feed_tokens(engine, tokens, row_offset);
    for (size_t cj = ci + 1; cj < C; ++cj) a.dependency[ci][cj] = dep[cj].value();
  }
  a.seconds = seconds_since(t0);
  return a;
}

std::vector<int> FusionAnalysis::attention_ranking() const {
  std::vector<const SublayerStats*> attention;
  for (const auto& s : sublayers)
    if (!s.is_ffn) attention.push_back(&s);
  std::stable_sort(attention.begin(), attention.end(), [](const auto* l, const auto* r) {
    return l->cosine_distance < r->cosine_distance;
  });
  std::vector<int> ids;
  for (const auto* s : attention) ids.push_back(s->block);
  return ids;
}

double FusionAnalysis::dependency_between(int block_i, int block_j) const {
  const auto pos = [&](int block) -> int {
    const auto it = std::find(candidates.begin(), candidates.end(), block);
    return it == candidates.end() ? -1 : int(it - candidates.begin());
  };
  const int i = pos(block_i), j = pos(block_j);
  if (i < 0 || j < 0 || i >= j) return -1.0;
  return dependency[size_t(i)][size_t(j)];
}

const SublayerStats* FusionAnalysis::find(int block, bool is_ffn) const {
  for (const auto& s : sublayers)
    if (s.block == block && s.is_ffn == is_ffn) return &s;
  return nullptr;
}

nlohmann::json to_json(const FusionAnalysis& a) {
  nlohmann::json sublayers = nlohmann::json::array();
  for (const auto& s : a.sublayers)
    sublayers.push_back({{"block", s.block},
                         {"kind", s.is_ffn ? "ffn" : "attention"},
                         {"cosine_distance", s.cosine_distance},
                         {"norm_ratio", s.norm_ratio}});
  std::vector<bool> has_attention(a.candidate_has_attention.begin(),
                                  a.candidate_has_attention.end());
  return {{"model", a.model},
          {"model_blocks", a.model_blocks},
          {"tokens", a.tokens},
          {"seconds", a.seconds},
          {"removed_attention", a.removed_attention},
          {"sublayers", sublayers},
          {"candidates", a.candidates},
          {"candidate_has_attention", has_attention},
          {"dependency", a.dependency},
          {"attention_ranking", a.attention_ranking()}};
}

FusionAnalysis analysis_from_json(const nlohmann::json& j, const std::string& origin) {
  FusionAnalysis a;
  try {
    a.model = j.at("model").get<std::string>();
    a.model_blocks = j.at("model_blocks").get<int>();
    a.tokens = j.at("tokens").get<int64_t>();
    a.seconds = j.value("seconds", 0.0);
    a.removed_attention = j.at("removed_attention").get<std::vector<int>>();
    for (const auto& s : j.at("sublayers")) {
      const std::string kind = s.at("kind").get<std::string>();
      PF_CHECK(kind == "ffn" || kind == "attention",
               "{}: sublayer kind must be 'ffn' or 'attention', got '{}'", origin, kind);
      a.sublayers.push_back({s.at("block").get<int>(), kind == "ffn",
                             s.at("cosine_distance").get<double>(),
                             s.at("norm_ratio").get<double>()});
    }
    a.candidates = j.at("candidates").get<std::vector<int>>();
    for (bool b : j.at("candidate_has_attention").get<std::vector<bool>>())
      a.candidate_has_attention.push_back(b ? 1 : 0);
    a.dependency = j.at("dependency").get<std::vector<std::vector<double>>>();
  } catch (const nlohmann::json::exception& e) {
    PF_THROW("{}: not a parafuse analysis file: {}", origin, e.what());
  }
  const size_t C = a.candidates.size();
  PF_CHECK(a.candidate_has_attention.size() == C,
           "{}: 'candidate_has_attention' has {} entries for {} candidates", origin,
           a.candidate_has_attention.size(), C);
  PF_CHECK(a.dependency.size() == C, "{}: the dependency matrix has {} rows for {} candidates",
           origin, a.dependency.size(), C);
  for (const auto& row : a.dependency)
    PF_CHECK(row.size() == C, "{}: a dependency row has {} entries for {} candidates", origin,
             row.size(), C);
  return a;
}

void save_analysis(const FusionAnalysis& analysis, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  PF_CHECK(out.good(), "cannot write '{}'", path);
  out << to_json(analysis).dump(2) << "\n";
  out.flush();
  PF_CHECK(out.good(), "writing '{}' failed", path);
}

FusionAnalysis load_analysis(const std::string& path) {
  const std::string text = read_file(path, "analysis file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    PF_THROW("{}: malformed JSON: {}", path, e.what());
  }
  return analysis_from_json(j, path);
}


}  // namespace parafuse

// FFN Fusion is exact: a fused checkpoint gives the logits of the unfused model run in
// parallel-FFN mode (every FFN of a group reading the group's input), at tp=1 in process and
// at tp=2 under mpirun; and on an Ultra-253B-shaped model the all-reduces per token counted by
// the runtime drop from one per FFN to one per fused run, at tp=2 and tp=4.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model_files.h"
#include "runtime/fusion/fuse.h"
#include "tests/unit/cli_runner.h"

using namespace parafuse;
namespace fs = std::filesystem;

namespace {

const std::string kTinyNas = std::string(PF_TEST_DATA) + "/configs/tiny-nemotron-nas.json";
const std::string kUltra = std::string(PF_TEST_DATA) + "/../../configs/models/ultra-253b-shaped-small.json";
const std::string kMpirun = std::string(PF_MPIEXEC) +
                            " --oversubscribe --allow-run-as-root --bind-to none"
                            " --mca btl self,vader,tcp --mca btl_tcp_if_include lo"
                            " -x OPENBLAS_NUM_THREADS=1"
                            // Open MPI's dlopen'ed components keep one-time allocations that
                            // LeakSanitizer cannot symbolize; ASan and UBSan stay on.
                            " -x LSAN_OPTIONS=detect_leaks=0";
// Fused and parallel-mode logits differ only by float summation order (one wide GEMM vs a sum
// of narrow ones, norm weights folded before vs after rounding): max |a-b| / max |b|.
constexpr double kTolerance = 1e-5;

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("pf_fuse_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<float> logits_of(const ModelFiles& m, const ForwardOverrides& overrides,
                             const std::vector<int32_t>& tokens) {
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 128;
  Engine e(m.config, *m.weights, *backend, eo);
  e.stage().set_overrides(overrides);
  e.add_sequence(0);
  SeqTokens s{0, tokens, true};
  return e.to_host(e.forward(std::span<const SeqTokens>(&s, 1)));
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return d / scale;
}

// The tiny Nemotron-NAS model: blocks 1-3 attention-free, block 8 attention-free; remove block
// 7's attention so 7-8 joins too, and fuse [0..2] (block 0's attention runs first) and [7, 8].
FusionPlan tiny_plan() {
  FusionPlan p;
  p.model_blocks = 10;
  p.remove_attention = {7};
  p.fuse = {{0, 1, 2}, {7, 8}};
  return p;
}

TEST(FusionExact, FusedCheckpointEqualsParallelFfnModeAtTp1) {
  ModelFiles original = open_model("synthetic:" + kTinyNas + "@11");
  const FusionPlan plan = tiny_plan();
  const fs::path out = temp_dir("tp1");
  const FuseStats stats =
      write_fused_checkpoint(original.config, *original.weights, plan, out.string(), nullptr);
  EXPECT_EQ(stats.blocks_before, 10);
  EXPECT_EQ(stats.blocks_after, 7);  // 3 -> 1 and 2 -> 1
  ModelFiles fused = open_model(out.string());
  ASSERT_EQ(fused.config.n_blocks(), 7);
  EXPECT_EQ(fused.config.blocks[0].intermediate_size, 512 + 256 + 768);
  EXPECT_EQ(fused.config.blocks[0].fused_from, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(fused.config.blocks[5].attention, AttentionKind::None);  // block 7, attention removed

  const std::vector<int32_t> tokens = {1, 17, 42, 99, 3, 250, 7, 64, 128};
  const auto parallel = logits_of(original, plan.overrides(original.config), tokens);
  const auto fused_logits = logits_of(fused, {}, tokens);
  EXPECT_LT(rel_diff(fused_logits, parallel), kTolerance);
  // And fusion is not a no-op: the sequential model differs.
  const auto sequential = logits_of(original, {}, tokens);
  EXPECT_GT(rel_diff(sequential, parallel), 1e-3);
  fs::remove_all(out);
}

TEST(FusionExact, FusedCheckpointEqualsParallelFfnModeAtTp2) {
  ModelFiles original = open_model("synthetic:" + kTinyNas + "@11");
  const FusionPlan plan = tiny_plan();
  const fs::path out = temp_dir("tp2");
  write_fused_checkpoint(original.config, *original.weights, plan, (out / "model").string(), nullptr);
  save_fusion_plan(plan, (out / "plan.yaml").string());
  auto run = [&](const std::string& model_args, const std::string& logits) {
    const CliResult r = run_cli("generate -q " + model_args +
                                    " --prompt-ids 1,17,42,99,3 --print-ids -n 6 --tp 2 --dump-logits " + logits,
                                kMpirun + " -np 2 " + PF_BINARY);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string ids_parallel = run("-m synthetic:" + kTinyNas + "@11 --fusion-plan " +
                                           (out / "plan.yaml").string(),
                                       (out / "parallel.bin").string());
  const std::string ids_fused = run("-m " + (out / "model").string(), (out / "fused.bin").string());
  EXPECT_EQ(ids_fused, ids_parallel);
  auto read = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::vector<float> v;
    float x;
    while (in.read(reinterpret_cast<char*>(&x), sizeof x)) v.push_back(x);
    return v;
  };
  const auto a = read(out / "fused.bin"), b = read(out / "parallel.bin");
  ASSERT_FALSE(b.empty());
  EXPECT_LT(rel_diff(a, b), kTolerance);
  fs::remove_all(out);
}

// The runtime's own count, from the log line "N all-reduces per step".
double all_reduces_per_step(const std::string& model, int tp) {
  const CliResult r = run_cli("generate -m " + model + " --prompt-ids 1,2,3 --print-ids -n 3 --tp " +
                                  std::to_string(tp),
                              kMpirun + " -np " + std::to_string(tp) + " " + PF_BINARY);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // "... 146.0 all-reduces per step ..." (no std::regex: GCC 12 + ASan warns inside it)
  const size_t at = r.err.find(" all-reduces per step");
  EXPECT_NE(at, std::string::npos) << r.err;
  if (at == std::string::npos) return -1;
  const size_t begin = r.err.find_last_of(' ', at - 1) + 1;
  return std::stod(r.err.substr(begin, at - begin));
}

TEST(FusionExact, UltraShapedAllReducesDropToOnePerFusedRun) {
  ModelFiles original = open_model("synthetic:" + kUltra);
  ASSERT_EQ(original.config.n_blocks(), 162);
  // The paper's default: every maximal run of consecutive FFNs with no attention between them
  // (an attention block's FFN followed by the attention-free blocks after it) fused, except its
  // last FFN.
  FusionPlan plan;
  plan.model_blocks = 162;
  for (int i = 0; i < 162;) {
    int j = i + 1;
    while (j < 162 && original.config.blocks[size_t(j)].attention == AttentionKind::None) ++j;
    // FFNs of blocks i..j-1 are consecutive without attention between them.
    if (j - 1 - i >= 2) {
      std::vector<int> group;
      for (int b = i; b < j - 1; ++b) group.push_back(b);  // the last FFN stays unfused
      plan.fuse.push_back(group);
    }
    i = j;
  }
  const fs::path out = temp_dir("ultra");
  const FuseStats stats =
      write_fused_checkpoint(original.config, *original.weights, plan, out.string(), nullptr);
  // 1 (embedding) + 64 attention + 162 FFNs before.
  EXPECT_EQ(stats.all_reduces_before, 1 + 64 + 162);
  ModelFiles fused = open_model(out.string());
  int ffns_after = 0;
  for (const auto& b : fused.config.blocks) ffns_after += b.ffn != FfnKind::None;
  EXPECT_EQ(stats.all_reduces_after, 1 + 64 + ffns_after);
  EXPECT_LT(ffns_after, 162);
  for (int tp : {2, 4}) {
    EXPECT_DOUBLE_EQ(all_reduces_per_step("synthetic:" + kUltra, tp), stats.all_reduces_before)
        << "tp=" << tp;
    EXPECT_DOUBLE_EQ(all_reduces_per_step(out.string(), tp), stats.all_reduces_after)
        << "tp=" << tp;
  }
  std::cout << "Ultra-shaped: all-reduces per token " << stats.all_reduces_before << " -> "
            << stats.all_reduces_after << " (" << plan.fuse.size() << " fused runs, " << ffns_after
            << " FFN blocks after fusion)\n";
  fs::remove_all(out);
}

}  // namespace

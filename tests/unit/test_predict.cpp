// The predictor (runtime/predict): what a user of `parafuse predict` relies on — weight bytes of
// known configs, the all-reduce formula, what fits, which layout it recommends — and the cluster
// file's errors (one line naming the file, the line and the key).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include <unistd.h>  // getpid

#include "cli_runner.h"
#include "error_of.h"
#include "runtime/model/model_config.h"
#include "runtime/predict/cluster.h"
#include "runtime/predict/perf_model.h"
#include "temp_yaml.h"

namespace parafuse {
namespace {

const std::string kSource = std::string(PF_TEST_DATA) + "/../..";  // the source tree

ModelConfig model(const std::string& name) {
  return load_hf_config(kSource + "/configs/models/" + name);
}
ClusterSpec cluster(const std::string& name) {
  return load_cluster(kSource + "/configs/clusters/" + name);
}

constexpr double kGB = 1e9;

TEST(PredictModel, WeightBytesOfKnownConfigs) {
  // Llama-3.1-405B: 405.85B parameters; fp8 blocks, bf16 embedding and LM head.
  const ModelConfig llama = model("llama-3.1-405b.json");
  const double embed = 2.0 * 128256 * 16384;  // two tables
  EXPECT_NEAR(model_weight_bytes(llama, PredictDType::BF16), 2 * 405.849e9, 0.01 * kGB);
  EXPECT_NEAR(model_weight_bytes(llama, PredictDType::FP8), (405.849e9 - embed) + 2 * embed,
              0.01 * kGB);
  // Fusion moves FFN weights between blocks but keeps every byte.
  EXPECT_NEAR(model_weight_bytes(model("ultra-prefusion.json"), PredictDType::BF16),
              model_weight_bytes(model("ultra-253b-base.json"), PredictDType::BF16), 1e6);
}

TEST(PredictModel, AllReduceTimeFollowsNcclRingModel) {
  const ClusterSpec one = cluster("h100-sxm-1node.yaml");
  EXPECT_EQ(all_reduce_us(one, 1, 1, 1e6), 0.0);
  // 8 ranks in a node: 3.6 + 14 * 0.47 us, plus 2*7/8 of the bytes at 370 GB/s.
  EXPECT_NEAR(all_reduce_us(one, 8, 1, 32768), 3.6 + 14 * 0.47 + 32768 * 1.75 / 370e3, 1e-9);
  // 16 ranks on 2 nodes: 28 NVLink steps at 1.8x and 2 network steps; the rails together carry
  // min(370, 8 * 46) GB/s.
  const ClusterSpec two = cluster("h100-sxm-2node.yaml");
  EXPECT_NEAR(all_reduce_us(two, 16, 2, 1e6),
              3.6 + 28 * 0.47 * 1.8 + 2 * 2.7 + 1e6 * 2 * 15 / 16 / 368e3, 1e-9);
}

TEST(PredictModel, MeasuredAllReduceWinsOverTheModel) {
  TempYaml y(R"(name: box
nodes: 1
devices_per_node: 3
device: {name: cpu, memory_gib: 4, memory_bandwidth_gbs: 10, gemm_tflops: {f32: 0.05}, kernel_launch_us: 1}
intra_node: {allreduce_busbw_gbs: 5, allreduce_base_latency_us: 0, hop_latency_us: 0, p2p_bandwidth_gbs: 5, p2p_latency_us: 0}
allreduce_measured:
  - {ranks: 3, latency_us: 40, busbw_gbs: 2}
)");
  const ClusterSpec c = load_cluster(y.path());
  EXPECT_NEAR(all_reduce_us(c, 3, 1, 3000), 40 + 3000 * 4.0 / 3 / 2e3, 1e-9);
}

TEST(PredictModel, OverlapZeroAddsComputeToReadsOneIsTheRoofline) {
  auto spec = [](const char* overlap) {
    TempYaml y(std::string(R"(name: box
nodes: 1
devices_per_node: 1
device: {name: cpu, memory_gib: 4, memory_bandwidth_gbs: 10, gemm_tflops: {f32: 0.05}, kernel_launch_us: 0)") +
               overlap + "}\nintra_node: {allreduce_busbw_gbs: 5, allreduce_base_latency_us: 0, "
                         "hop_latency_us: 0, p2p_bandwidth_gbs: 5, p2p_latency_us: 0}\n");
    return load_cluster(y.path());
  };
  const ModelConfig m = model("bench-llama-140m.json");
  const Workload work{32, 16, PredictDType::F32};
  const PointPrediction roof = predict_point(m, spec(""), {1, 1}, work, 32);
  const PointPrediction sum = predict_point(m, spec(", compute_memory_overlap: 0"), {1, 1}, work, 32);
  const PointPrediction half = predict_point(m, spec(", compute_memory_overlap: 0.5"), {1, 1}, work, 32);
  // 32 rows at 0.05 TFLOP/s: every GEMM's compute exceeds its reads, so the roofline hides all
  // the reads behind compute and the sum shows them again.
  const double reads = roof.step.weights + roof.step.kv;
  EXPECT_GT(roof.step.compute, reads);
  EXPECT_NEAR(sum.step.compute - roof.step.compute, reads, reads * 0.05);
  EXPECT_NEAR(half.step.compute, (sum.step.compute + roof.step.compute) / 2, 1e-6);
  EXPECT_EQ(roof.step.weights, sum.step.weights);
}

TEST(PredictModel, FitsAndDoesNotFit) {
  const ModelConfig llama = model("llama-3.1-405b.json");
  const ClusterSpec h100 = cluster("h100-sxm-1node.yaml");
  Workload w;
  w.input_len = 1024;
  w.output_len = 256;
  w.dtype = PredictDType::FP8;
  const PointPrediction fp8 = predict_point(llama, h100, {8, 1}, w, 1);
  EXPECT_TRUE(fp8.fits) << fp8.memory.total();
  EXPECT_NEAR(fp8.memory.weights, (405.849e9 + 2.0 * 128256 * 16384) / 8 / (1 << 30), 0.5);
  w.dtype = PredictDType::BF16;  // 810 GB over 8 x 80 GB
  EXPECT_FALSE(predict_point(llama, h100, {8, 1}, w, 1).fits);
}

TEST(PredictModel, FusionCutsAllReducesAndSpeedsUpDecode) {
  const ClusterSpec h100 = cluster("h100-sxm-1node.yaml");
  Workload w;
  w.dtype = PredictDType::FP8;
  const PointPrediction pre = predict_point(model("ultra-prefusion.json"), h100, {8, 1}, w, 1);
  const PointPrediction post = predict_point(model("ultra-253b-base.json"), h100, {8, 1}, w, 1);
  // embedding + 64 attention + 152 FFNs before; 64 + 81 after.
  EXPECT_EQ(pre.step.all_reduces, 1 + 64 + 152);
  EXPECT_EQ(post.step.all_reduces, 1 + 64 + 81);
  EXPECT_NEAR(pre.step.weights, post.step.weights, 1e-6);
  EXPECT_GT(post.tokens_per_s_per_user, pre.tokens_per_s_per_user);
}

TEST(PredictModel, RecommendsOneNodeTp8ForLatency) {
  const ModelConfig ultra = model("ultra-253b-base.json");
  const ClusterSpec h100 = cluster("h100-sxm-1node.yaml");
  Workload w;
  w.dtype = PredictDType::FP8;
  std::vector<PointPrediction> points;
  for (const Layout& l : candidate_layouts(ultra, h100))
    points.push_back(predict_point(ultra, h100, l, w, 1));
  ASSERT_GE(points.size(), 3u);  // 1x8, 2x4, 4x2, 8x1 (tp 1 does not fit)
  const Recommendation r = recommend(points, "latency", 0);
  ASSERT_TRUE(r.found);
  EXPECT_EQ(r.best.layout.tp, 8);
  EXPECT_EQ(r.best.layout.pp, 1);
  EXPECT_NE(r.why.find("TP8 x PP1 at batch 1"), std::string::npos) << r.why;
}

TEST(PredictModel, LayoutProblemsInWords) {
  const ModelConfig smol = [] {
    ModelConfig m = load_hf_config(kSource + "/configs/models/llama-3.1-8b.json");
    return m;
  }();
  const ClusterSpec two = cluster("h100-sxm-2node.yaml");
  EXPECT_EQ(layout_problem(smol, two, {3, 1}), "tp 3 does not divide the 32 attention heads");
  EXPECT_EQ(layout_problem(smol, two, {8, 4}), "needs 32 devices, 2 nodes of 8x H100 SXM has 16");
}

TEST(PredictCluster, EveryShippedClusterLoads) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSource + "/configs/clusters")) {
    if (entry.path().extension() != ".yaml") continue;
    ++files;
    const ClusterSpec c = load_cluster(entry.path().string());
    EXPECT_EQ(c.devices_per_node, 8) << entry.path();
    for (const ClusterConstant& k : c.constants)
      EXPECT_FALSE(k.source.empty()) << entry.path() << " " << k.key;
  }
  EXPECT_EQ(files, 6);  // 1, 2 and 4 nodes of 8x H100 SXM and of 8x H200
}

const char* kGood = R"(name: box
nodes: 1
devices_per_node: 8
device:
  name: gpu
  memory_gib: 80
  memory_bandwidth_gbs: 3000
  gemm_tflops: {bf16: 700}
  kernel_launch_us: 2
intra_node:
  allreduce_busbw_gbs: 370
  allreduce_base_latency_us: 3.6
  hop_latency_us: 0.47
  p2p_bandwidth_gbs: 450
  p2p_latency_us: 4
)";

TEST(PredictCluster, WrongKeyIsOneErrorWithFileAndLine) {
  std::string text = kGood;
  text.replace(text.find("memory_bandwidth_gbs"), 20, "memory_bandwith_gbs");
  TempYaml y(text);
  EXPECT_EQ(error_of([&] { load_cluster(y.path()); }),
            y.path() +
                ":7: unknown key 'memory_bandwith_gbs' in 'device' (did you mean "
                "'memory_bandwidth_gbs'?)");
}

TEST(PredictCluster, MissingFieldNamesItsSection) {
  std::string text = kGood;
  text.erase(text.find("  kernel_launch_us: 2\n"), 21);
  TempYaml y(text);
  EXPECT_EQ(error_of([&] { load_cluster(y.path()); }),
            y.path() + ":4: required key 'device.kernel_launch_us' is missing");
}

TEST(PredictCluster, MultiNodeNeedsInterNode) {
  std::string text = kGood;
  text.replace(text.find("nodes: 1"), 8, "nodes: 2");
  TempYaml y(text);
  EXPECT_EQ(error_of([&] { load_cluster(y.path()); }),
            y.path() +
                ":1: the top level needs an 'inter_node' section: nodes is 2, so ranks "
                "talk across nodes");
}

TEST(PredictCli, BadClusterIsOneLineAndExitOne) {
  std::string text = kGood;
  text.replace(text.find("hop_latency_us"), 14, "hop_latncy_us");
  TempYaml y(text);
  const CliResult r =
      run_cli("predict -m " + kSource + "/configs/models/llama-3.1-8b.json --cluster " + y.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "parafuse: error: " + y.path() +
                       ":13: unknown key 'hop_latncy_us' in 'intra_node' (did you mean "
                       "'hop_latency_us'?)\n");
}

TEST(PredictCli, BadModelKeyIsOneLine) {
  TempYaml y(
      R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2,
  "num_hidden_layer": 2, "intermediate_size": 16})");
  const CliResult r = run_cli("predict -m " + y.path() + " --cluster " + kSource +
                              "/configs/clusters/h100-sxm-1node.yaml");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("parafuse: error: " + y.path() + ": ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("num_hidden_layer"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(PredictCli, PrintsConstantsTableAndRecommendation) {
  const CliResult r =
      run_cli("predict -m " + kSource + "/configs/models/ultra-253b-base.json --cluster " +
              kSource + "/configs/clusters/h100-sxm-1node.yaml --dtype fp8 --tp 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("device.memory_bandwidth_gbs"), std::string::npos);
  EXPECT_NE(r.out.find("[source: "), std::string::npos);
  EXPECT_NE(r.out.find("recommendation (lowest latency): TP8 x PP1 at batch 1"), std::string::npos)
      << r.out;
}

TEST(PredictCli, CalibrateWritesAClusterFilePredictReadsBack) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("pf_calibrate_" + std::to_string(getpid()) +
                                                 ".yaml"))
          .string();
  const CliResult cal = run_cli("predict --calibrate --out " + path);
  ASSERT_EQ(cal.exit_code, 0) << cal.err;
  EXPECT_NE(cal.err.find("decode weight reads"), std::string::npos) << cal.err;
  const ClusterSpec spec = load_cluster(path);
  EXPECT_GT(spec.memory_bandwidth_gbs, 0);
  EXPECT_GT(spec.gemm_tflops("f32"), 0);
  EXPECT_NE(spec.constants.front().source.find("1-row GEMM"), std::string::npos);
  const CliResult r = run_cli("predict -m " + kSource +
                              "/configs/models/bench-llama-140m.json --dtype f32 --cluster " + path);
  std::filesystem::remove(path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("recommendation (lowest latency): TP1 x PP1 at batch 1"), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace parafuse

// FP8 (E4M3) checkpoints on the CPU reference path: the E4M3 codes, and a small Llama written
// as ModelOpt (per-tensor scales) and compressed-tensors (per-channel scales) FP8 checkpoints
// gives exactly the logits of the same weights dequantized into an F32 checkpoint; each kind of
// malformed FP8 checkpoint is one Error naming what is wrong.
#include <gtest/gtest.h>

#include <unistd.h>  // getpid

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>

#include <nlohmann/json.hpp>

#include "kernels/core/fp8.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/generate.h"
#include "runtime/model/fp8_quantize.h"
#include "runtime/model/model_files.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/synthetic.h"
#include "tests/unit/cli_runner.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kTinyLlama = std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";

TEST(Fp8E4M3, KnownCodes) {
  EXPECT_EQ(f8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0x38), 1.0f);    // exponent 7 = 2^0
  EXPECT_EQ(f8_e4m3_to_f32(0x7e), 448.0f);  // the largest finite value
  EXPECT_EQ(f8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(f8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(f8_e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(f8_e4m3_to_f32(0x3c), 1.5f);
  EXPECT_TRUE(std::isnan(f8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(f8_e4m3_to_f32(0xff)));
  EXPECT_TRUE(std::signbit(f8_e4m3_to_f32(0x80)));  // -0
}

TEST(Fp8E4M3, EveryFiniteCodeRoundTripsAndValuesAscend) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    EXPECT_EQ(f32_to_f8_e4m3(f8_e4m3_to_f32(uint8_t(c))), c) << "code " << c;
    if ((c & 0x7f) > 0) {
      EXPECT_LT(std::fabs(f8_e4m3_to_f32(uint8_t(c - 1))), std::fabs(f8_e4m3_to_f32(uint8_t(c))));
    }
  }
}

TEST(Fp8E4M3, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(f32_to_f8_e4m3(1.0625f), 0x38);                // halfway 1 and 1.125: even mantissa (1)
  EXPECT_EQ(f32_to_f8_e4m3(1.1875f), 0x3a);                // halfway 1.125 and 1.25: even (1.25)
  EXPECT_EQ(f32_to_f8_e4m3(1.07f), 0x39);                  // nearer 1.125
  EXPECT_EQ(f32_to_f8_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: 0
  EXPECT_EQ(f32_to_f8_e4m3(std::ldexp(1.5f, -10)), 0x01);
  EXPECT_EQ(f32_to_f8_e4m3(1000.0f), 0x7e);  // saturates at 448
  EXPECT_EQ(f32_to_f8_e4m3(-1e30f), 0xfe);
  EXPECT_EQ(f32_to_f8_e4m3(INFINITY), 0x7e);
  EXPECT_EQ(f32_to_f8_e4m3(-0.0f), 0x80);
  EXPECT_EQ(f32_to_f8_e4m3(NAN) & 0x7f, 0x7f);
}

// The encoder's bit arithmetic against the definition: the code whose value is nearest (ties
// to the even code), found by searching the ascending codes, for every 61st float up to 512
// and 200000 random ones.
uint8_t nearest_code_by_search(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (a >= kF8E4M3Max) return uint8_t(sign | 0x7e);
  int lo = 0, hi = 0x7e;  // the largest code whose value is <= a
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (f8_e4m3_to_f32(uint8_t(mid)) <= a) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  int code = lo;
  if (code < 0x7e) {
    const float to_below = a - f8_e4m3_to_f32(uint8_t(code));
    const float to_above = f8_e4m3_to_f32(uint8_t(code + 1)) - a;
    if (to_above < to_below || (to_above == to_below && (code & 1))) ++code;
  }
  return uint8_t(sign | code);
}

TEST(Fp8E4M3, EncoderEqualsTheNearestCodeSearch) {
  const float limit = 512.0f;
  uint32_t limit_bits = 0;
  std::memcpy(&limit_bits, &limit, 4);
  for (uint32_t bits = 0; bits <= limit_bits; bits += 61) {
    float x = 0;
    std::memcpy(&x, &bits, 4);
    ASSERT_EQ(f32_to_f8_e4m3(x), nearest_code_by_search(x)) << x;
    ASSERT_EQ(f32_to_f8_e4m3(-x), nearest_code_by_search(-x)) << -x;
  }
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exponent(-14.0f, 10.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::exp2(exponent(rng)) * (i % 2 ? -1.0f : 1.0f);
    ASSERT_EQ(f32_to_f8_e4m3(x), nearest_code_by_search(x)) << x;
  }
  // Every midpoint between neighbouring codes: ties go to the even code.
  for (int c = 0; c < 0x7e; ++c) {
    const float mid = (f8_e4m3_to_f32(uint8_t(c)) + f8_e4m3_to_f32(uint8_t(c + 1))) / 2;
    ASSERT_EQ(f32_to_f8_e4m3(mid), nearest_code_by_search(mid)) << "between codes " << c;
  }
}

// --- checkpoints ------------------------------------------------------------------------------

enum class Scheme { ModelOpt, CompressedTensors };

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / ("pf_fp8_" + std::to_string(::getpid()) + "_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

bool is_linear(const std::string& name, const TensorInfo& info) {
  return info.shape.size() == 2 && name.find("_proj.weight") != std::string::npos;
}

// The tiny Llama's synthetic weights written twice: `fp8` with every projection in F8_E4M3
// plus scales (scheme's layout), `f32` with the same values dequantized (code * scale, the one
// float multiply the reader does). `edit` may change the FP8 writer's tensors before writing.
struct Checkpoints {
  TempDir fp8, f32;
  Checkpoints(Scheme scheme, const std::string& name,
              const std::function<void(SafetensorsWriter&, const ModelConfig&)>& edit = {})
      : fp8(name + "_fp8"), f32(name + "_f32") {
    const ModelFiles m = open_model("synthetic:" + kTinyLlama + "@7");
    SafetensorsWriter q, d;
    for (const auto& [tname, info] : m.weights->tensors()) {
      std::vector<float> v = m.weights->read_all(tname);
      if (!is_linear(tname, info)) {
        d.add(tname, info.shape, v);
        q.add(tname, info.shape, std::move(v));
        continue;
      }
      const int64_t rows = info.rows(), cols = info.cols();
      const bool per_channel = scheme == Scheme::CompressedTensors;
      std::vector<float> scales, codes(v.size()), dequantized(v.size());
      std::vector<uint8_t> row_codes(static_cast<size_t>(cols));
      if (per_channel) {  // as --dtype fp8 quantizes at load
        for (int64_t r = 0; r < rows; ++r)
          scales.push_back(quantize_row_e4m3(&v[size_t(r * cols)], cols, row_codes.data()));
      } else {  // one scale: the tensor's max |v| / 448
        float amax = 0;
        for (float x : v) amax = std::max(amax, std::fabs(x));
        scales.push_back(amax / kF8E4M3Max);
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = size_t(r * cols + c);
          const float s = scales[per_channel ? size_t(r) : 0];
          const float code = f8_e4m3_to_f32(f32_to_f8_e4m3(v[i] / s));
          codes[i] = code;
          dequantized[i] = code * s;
        }
      const std::string base = tname.substr(0, tname.size() - std::string(".weight").size());
      q.add(tname, info.shape, std::move(codes), DType::F8_E4M3);
      if (per_channel) {
        q.add(base + ".weight_scale", {rows, 1}, scales);
      } else {
        q.add(base + ".weight_scale", {}, scales);
        q.add(base + ".input_scale", {}, {0.05f});
      }
      d.add(tname, info.shape, std::move(dequantized));
    }
    if (edit) edit(q, m.config);
    q.write((fp8.path / "model.safetensors").string());
    d.write((f32.path / "model.safetensors").string());
    json config = json::parse(to_hf_config_json(m.config));
    write_text(f32.path / "config.json", config.dump(2));
    if (scheme == Scheme::ModelOpt) {
      write_text(fp8.path / "hf_quant_config.json",
                 R"({"producer": {"name": "modelopt", "version": "0.19.0"},
                     "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": null,
                                      "exclude_modules": ["lm_head"]}})");
    } else {
      config["quantization_config"] = json::parse(R"({
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"],
          "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": false,
                      "symmetric": true},
          "input_activations": {"num_bits": 8, "type": "float", "strategy": "token",
                                "dynamic": true, "symmetric": true}}},
        "ignore": ["lm_head"]})");
    }
    write_text(fp8.path / "config.json", config.dump(2));
  }
};

std::vector<float> logits_of(const ModelConfig& config, const WeightSource& weights,
                             const std::vector<int32_t>& tokens) {
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 64;
  Engine e(config, weights, *backend, eo);
  // FP8 weights keep the cache in F32 (kv_cache_dtype auto): the logits are the exact reference
  EXPECT_EQ(e.kv_cache().dtype(), DType::F32);
  e.add_sequence(0);
  SeqTokens s{0, tokens, true};
  return e.to_host(e.forward(std::span<const SeqTokens>(&s, 1)));
}

std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& tokens) {
  const ModelFiles m = open_model(path);
  return logits_of(m.config, *m.weights, tokens);
}

std::vector<int32_t> greedy_ids(const std::string& path, const std::vector<int32_t>& prompt) {
  const ModelFiles m = open_model(path);
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 64;
  Engine e(m.config, *m.weights, *backend, eo);
  GenerateOptions options;
  options.max_tokens = 12;
  return generate(e, prompt, options).ids;
}

class Fp8Checkpoint : public ::testing::TestWithParam<Scheme> {};

TEST_P(Fp8Checkpoint, LogitsEqualTheDequantizedF32CheckpointExactly) {
  const Checkpoints ck(GetParam(), GetParam() == Scheme::ModelOpt ? "modelopt" : "ct");
  const ModelFiles m = open_model(ck.fp8.path.string());
  const auto* source = dynamic_cast<const SafetensorsWeightSource*>(m.weights.get());
  ASSERT_NE(source, nullptr);
  EXPECT_EQ(source->quantization(),
            GetParam() == Scheme::ModelOpt ? "FP8 (ModelOpt)" : "FP8 (compressed-tensors)");
  // The scales belong to their weights: not model tensors.
  for (const auto& [name, info] : m.weights->tensors())
    EXPECT_EQ(name.find("_scale"), std::string::npos) << name;
  EXPECT_EQ(m.weights->info("model.layers.0.mlp.up_proj.weight").dtype, DType::F8_E4M3);

  const std::vector<int32_t> tokens = {1, 17, 42, 99, 3, 250, 7};
  const std::vector<float> fp8 = logits_of(ck.fp8.path.string(), tokens);
  const std::vector<float> f32 = logits_of(ck.f32.path.string(), tokens);
  ASSERT_EQ(fp8.size(), f32.size());
  for (size_t i = 0; i < fp8.size(); ++i) ASSERT_EQ(fp8[i], f32[i]) << "logit " << i;
  // Not vacuous: the unquantized weights give other logits.
  const std::vector<float> original = logits_of("synthetic:" + kTinyLlama + "@7", tokens);
  double diff = 0;
  for (size_t i = 0; i < fp8.size(); ++i)
    diff = std::max(diff, double(std::fabs(fp8[i] - original[i])));
  EXPECT_GT(diff, 1e-4);
  // And it generates: the same greedy tokens as the dequantized checkpoint.
  EXPECT_EQ(greedy_ids(ck.fp8.path.string(), {1, 5, 9}),
            greedy_ids(ck.f32.path.string(), {1, 5, 9}));
}

INSTANTIATE_TEST_SUITE_P(Schemes, Fp8Checkpoint,
                         ::testing::Values(Scheme::ModelOpt, Scheme::CompressedTensors),
                         [](const auto& info) {
                           return info.param == Scheme::ModelOpt ? "ModelOptPerTensor"
                                                                 : "CompressedTensorsPerChannel";
                         });

TEST(Fp8Checkpoint, SlicedReadsScaleTheirOwnRows) {
  const Checkpoints ck(Scheme::CompressedTensors, "slices");
  const ModelFiles fp8 = open_model(ck.fp8.path.string());
  const ModelFiles f32 = open_model(ck.f32.path.string());
  const std::string name = "model.layers.1.mlp.down_proj.weight";
  const TensorInfo& info = fp8.weights->info(name);
  const Range rows{3, info.rows() - 2}, cols{5, info.cols() - 1};
  const size_t n = size_t((rows.end - rows.begin) * (cols.end - cols.begin));
  std::vector<float> a(n), b(n);
  fp8.weights->read_f32(name, rows, cols, a.data());
  f32.weights->read_f32(name, rows, cols, b.data());
  EXPECT_EQ(a, b);
}

// Native reads: the codes of a slice and its rows' scales give read_f32's values exactly, for
// both sources of FP8 weights (a checkpoint, and quantization at load).
void expect_native_equals_f32(const WeightSource& w, const std::string& name) {
  ASSERT_TRUE(w.reads_native(name)) << name;
  ASSERT_EQ(w.info(name).dtype, DType::F8_E4M3);
  const TensorInfo& info = w.info(name);
  const Range rows{2, info.rows() - 1}, cols{3, info.cols() - 5};
  const int64_t nr = rows.end - rows.begin, nc = cols.end - cols.begin;
  std::vector<uint8_t> codes(static_cast<size_t>(nr * nc));
  std::vector<float> scales(static_cast<size_t>(nr)), values(static_cast<size_t>(nr * nc));
  w.read_native(name, rows, cols, codes.data());
  w.read_row_scales(name, rows, scales.data());
  w.read_f32(name, rows, cols, values.data());
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t c = 0; c < nc; ++c)
      ASSERT_EQ(f8_e4m3_to_f32(codes[size_t(r * nc + c)]) * scales[size_t(r)],
                values[size_t(r * nc + c)])
          << name << " row " << r << " col " << c;
}

TEST(Fp8Native, CodesAndRowScalesGiveTheF32Values) {
  for (Scheme scheme : {Scheme::ModelOpt, Scheme::CompressedTensors}) {
    const Checkpoints ck(scheme, scheme == Scheme::ModelOpt ? "native_mo" : "native_ct");
    const ModelFiles m = open_model(ck.fp8.path.string());
    expect_native_equals_f32(*m.weights, "model.layers.1.mlp.down_proj.weight");
    expect_native_equals_f32(*m.weights, "model.layers.0.self_attn.k_proj.weight");
    EXPECT_EQ(m.weights->input_scale("model.layers.0.self_attn.k_proj.weight"),
              scheme == Scheme::ModelOpt ? 0.05f : 0.0f);
    // A float tensor has no row scales.
    std::vector<float> s(4);
    EXPECT_NE(error_of([&] {
                m.weights->read_row_scales("model.layers.0.input_layernorm.weight", {}, s.data());
              }).find("has no FP8 row scales"),
              std::string::npos);
  }
  ModelFiles m = open_model("synthetic:" + kTinyLlama + "@7");
  const Fp8QuantizedWeights quantized(std::move(m.weights));
  expect_native_equals_f32(quantized, "model.layers.2.mlp.gate_proj.weight");
  expect_native_equals_f32(quantized, "model.layers.0.self_attn.o_proj.weight");
}

// The CPU backend keeps FP8 weights as codes + row scales (1 byte a weight) and computes the
// same logits as with the weights read as F32.
TEST(Fp8Native, CpuKeepsFp8WeightsAndMatchesTheF32Path) {
  const Checkpoints ck(Scheme::CompressedTensors, "native_cpu");
  const ModelFiles m = open_model(ck.fp8.path.string());
  const std::vector<int32_t> tokens = {1, 17, 42, 99, 3, 250, 7, 8, 9, 10};
  std::vector<float> logits[2];
  size_t resident[2];
  for (int native = 0; native < 2; ++native) {
    CpuBackendOptions o;
    o.native_weights = native == 1;
    auto backend = make_cpu_backend(o);
    EngineOptions eo;
    eo.kv_cache_tokens = 64;
    Engine e(m.config, *m.weights, *backend, eo);
    resident[native] = e.stage().resident_weight_bytes();
    e.add_sequence(0);
    // A prefill (10 rows: the tiled path) and a decode row (the GEMV path).
    SeqTokens s{0, tokens, true};
    logits[native] = e.to_host(e.forward(std::span<const SeqTokens>(&s, 1)));
    const std::vector<int32_t> next = {11};
    SeqTokens d{0, next, true};
    const std::vector<float> step = e.to_host(e.forward(std::span<const SeqTokens>(&d, 1)));
    logits[native].insert(logits[native].end(), step.begin(), step.end());
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i) ASSERT_EQ(logits[1][i], logits[0][i]) << i;
  EXPECT_LT(resident[1], resident[0]) << "FP8 weights should stay 1 byte per element";
}

// --- --dtype fp8: quantized at load ---------------------------------------------------------

TEST(Fp8QuantizeAtLoad, EqualsTheCompressedTensorsCheckpointOfTheSameWeights) {
  const Checkpoints ck(Scheme::CompressedTensors, "at_load");
  ModelFiles m = open_model("synthetic:" + kTinyLlama + "@7");
  const Fp8QuantizedWeights quantized(std::move(m.weights));
  EXPECT_EQ(quantized.quantized_tensors(), 3 * 7);  // q k v o gate up down per block
  EXPECT_EQ(quantized.info("model.layers.2.self_attn.o_proj.weight").dtype, DType::F8_E4M3);
  EXPECT_EQ(quantized.info("model.embed_tokens.weight").dtype, DType::F32);
  EXPECT_EQ(quantized.info("lm_head.weight").dtype, DType::F32);
  const std::vector<int32_t> tokens = {1, 17, 42, 99, 3, 250, 7};
  const std::vector<float> at_load = logits_of(m.config, quantized, tokens);
  const std::vector<float> checkpoint = logits_of(ck.fp8.path.string(), tokens);
  ASSERT_EQ(at_load.size(), checkpoint.size());
  for (size_t i = 0; i < at_load.size(); ++i) ASSERT_EQ(at_load[i], checkpoint[i]) << i;
  // A slice of a quantized weight is the slice of the whole (rows keep their own scale).
  const std::string name = "model.layers.0.mlp.gate_proj.weight";
  const std::vector<float> whole = quantized.read_all(name);
  std::vector<float> part(size_t(4 * 10));
  quantized.read_f32(name, Range{5, 9}, Range{20, 30}, part.data());
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t c = 0; c < 10; ++c)
      EXPECT_EQ(part[size_t(r * 10 + c)], whole[size_t((5 + r) * 64 + 20 + c)]);
}

TEST(Fp8QuantizeAtLoad, WeightDtypeFp8FromTheCommandLine) {
  const CliResult r = run_cli("generate -q -m synthetic:" + kTinyLlama +
                              "@7 --prompt-ids 1,5,9 -n 12 --print-ids --weight-dtype fp8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ModelFiles m = open_model("synthetic:" + kTinyLlama + "@7");
  const Fp8QuantizedWeights quantized(std::move(m.weights));
  auto backend = make_cpu_backend(1);
  EngineOptions eo;
  eo.kv_cache_tokens = 64;
  Engine e(m.config, quantized, *backend, eo);
  GenerateOptions options;
  options.max_tokens = 12;
  const std::vector<int32_t> prompt = {1, 5, 9};
  std::string expected;
  for (int32_t id : generate(e, prompt, options).ids)
    expected += (expected.empty() ? "" : " ") + std::to_string(id);
  EXPECT_NE(r.out.find(expected), std::string::npos) << r.out << "\nexpected " << expected;
}

// --- malformed --------------------------------------------------------------------------------

// The error of opening a ModelOpt FP8 checkpoint after `edit`.
std::string open_error(const std::string& name,
                       const std::function<void(SafetensorsWriter&, const ModelConfig&)>& edit,
                       Scheme scheme = Scheme::ModelOpt,
                       const std::function<void(const fs::path&)>& edit_dir = {}) {
  const Checkpoints ck(scheme, name, edit);
  if (edit_dir) edit_dir(ck.fp8.path);
  return error_of([&] { open_model(ck.fp8.path.string()); });
}

struct Replacement {
  std::vector<int64_t> shape;
  std::vector<float> values;
  DType storage = DType::F32;
};

// The error of opening the ModelOpt FP8 checkpoint with `tensor` replaced (or, for nullopt,
// left out), without the "DIR: " prefix.
std::string error_with_replaced(const std::string& test, const std::string& tensor,
                                const std::optional<Replacement>& replacement) {
  TempDir dir(test);
  const Checkpoints ck(Scheme::ModelOpt, test + "_src");
  SafetensorsWriter w;
  const SafetensorsFile file((ck.fp8.path / "model.safetensors").string());
  for (const auto& [name, e] : file.entries()) {
    if (name == tensor) {
      if (replacement) w.add(name, replacement->shape, replacement->values, replacement->storage);
      continue;
    }
    std::vector<float> v(size_t(e.info.rows() * e.info.cols()));
    file.read_f32(e, Range{}, Range{}, v.data());
    w.add(name, e.info.shape, std::move(v), e.info.dtype);
  }
  w.write((dir.path / "model.safetensors").string());
  fs::copy(ck.fp8.path / "config.json", dir.path / "config.json");
  fs::copy(ck.fp8.path / "hf_quant_config.json", dir.path / "hf_quant_config.json");
  const std::string e = error_of([&] { open_model(dir.path.string()); });
  const std::string prefix = dir.path.string() + ": ";
  return e.rfind(prefix, 0) == 0 ? e.substr(prefix.size()) : e;
}

TEST(Fp8Malformed, MissingScaleNamesIt) {
  EXPECT_EQ(error_with_replaced("missing", "model.layers.0.mlp.up_proj.weight_scale", std::nullopt),
            "tensor 'model.layers.0.mlp.up_proj.weight' is F8_E4M3 but its dequantization scale "
            "'model.layers.0.mlp.up_proj.weight_scale' is missing");
}

TEST(Fp8Malformed, ScaleOfTheWrongShape) {
  EXPECT_EQ(error_with_replaced("shape", "model.layers.0.mlp.up_proj.weight_scale",
                                Replacement{{2, 3}, std::vector<float>(6, 0.01f)}),
            "scale 'model.layers.0.mlp.up_proj.weight_scale' has shape [2, 3], but weight "
            "'model.layers.0.mlp.up_proj.weight' of shape [160, 64] needs one scale ([] or [1]) "
            "or one per output channel ([160] or [160, 1])");
}

TEST(Fp8Malformed, ScaleOfTheWrongDtype) {
  EXPECT_EQ(error_with_replaced("scale_dtype", "model.layers.0.mlp.up_proj.weight_scale",
                                Replacement{{}, {0.5f}, DType::F8_E4M3}),
            "scale 'model.layers.0.mlp.up_proj.weight_scale' has dtype F8_E4M3; a weight scale "
            "must be F32, BF16 or F16");
}

TEST(Fp8Malformed, FloatWeightWithAScale) {
  EXPECT_EQ(
      error_with_replaced("orphan", "model.layers.0.mlp.up_proj.weight",
                          Replacement{{160, 64}, std::vector<float>(160 * 64, 0.01f), DType::BF16}),
      "scale 'model.layers.0.mlp.up_proj.input_scale' belongs to no F8_E4M3 weight "
      "('model.layers.0.mlp.up_proj.weight' is BF16)");
}

TEST(Fp8Malformed, InputScaleMustBeOneValue) {
  EXPECT_EQ(error_with_replaced("input", "model.layers.0.mlp.up_proj.input_scale",
                                Replacement{{4}, std::vector<float>(4, 0.01f)}),
            "activation scale 'model.layers.0.mlp.up_proj.input_scale' has shape [4]; a static "
            "input_scale is one value");
}

TEST(Fp8Malformed, InputScaleOfTheWrongDtype) {  // (the reader refuses scalars in FP8 first)
  EXPECT_EQ(error_with_replaced("input_dtype", "model.layers.0.mlp.up_proj.input_scale",
                                Replacement{{}, {0.5f}, DType::F8_E4M3}),
            "tensor 'model.layers.0.mlp.up_proj.input_scale' [] is F8_E4M3, but only 2-D "
            "'.weight' tensors of an FP8 checkpoint can be (FP8 KV caches and FP8 norms are not "
            "read)");
}

// A static activation scale must be a usable divisor: checked when the weight is loaded.
TEST(Fp8Malformed, InputScaleMustBePositive) {
  TempDir dir("input_zero");
  const Checkpoints ck(Scheme::ModelOpt, "input_zero_src");
  SafetensorsWriter w;
  const SafetensorsFile file((ck.fp8.path / "model.safetensors").string());
  for (const auto& [name, e] : file.entries()) {
    std::vector<float> v(size_t(e.info.rows() * e.info.cols()));
    file.read_f32(e, Range{}, Range{}, v.data());
    if (name == "model.layers.0.mlp.up_proj.input_scale") v.assign(v.size(), 0.0f);
    w.add(name, e.info.shape, std::move(v), e.info.dtype);
  }
  w.write((dir.path / "model.safetensors").string());
  fs::copy(ck.fp8.path / "config.json", dir.path / "config.json");
  fs::copy(ck.fp8.path / "hf_quant_config.json", dir.path / "hf_quant_config.json");
  const ModelFiles m = open_model(dir.path.string());
  const std::string e =
      error_of([&] { (void)m.weights->input_scale("model.layers.0.mlp.up_proj.weight"); });
  EXPECT_NE(e.find("input_scale of 'model.layers.0.mlp.up_proj.weight' is 0; it must be "
                   "positive"),
            std::string::npos)
      << e;
}

TEST(Fp8Malformed, BlockWiseScalesAreRefusedByName) {
  const std::string e = open_error("block", [](SafetensorsWriter& w, const ModelConfig&) {
    w.add("model.layers.0.mlp.up_proj.weight_scale_inv", {1, 1}, {1.0f});
  });
  EXPECT_NE(e.find("block-wise FP8 is not supported"), std::string::npos) << e;
}

TEST(Fp8Malformed, OtherFp8FormatIsNotRead) {
  // F8_E5M2 has the same byte length as F8_E4M3: patch the header's dtype name in place.
  const Checkpoints ck(Scheme::ModelOpt, "e5m2");
  const fs::path file = ck.fp8.path / "model.safetensors";
  std::string bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t at = bytes.find("F8_E4M3");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 7, "F8_E5M2");
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;
  const std::string e = error_of([&] { open_model(ck.fp8.path.string()); });
  EXPECT_NE(e.find("has dtype F8_E5M2, which parafuse does not read (F32, F16, BF16, F8_E4M3 "
                   "only)"),
            std::string::npos)
      << e;
}

TEST(Fp8Malformed, UnsupportedQuantizationConfigs) {
  const auto modelopt = [](const std::string& algo) {
    return open_error("algo", {}, Scheme::ModelOpt, [&](const fs::path& dir) {
      write_text(dir / "hf_quant_config.json",
                 R"({"quantization": {"quant_algo": ")" + algo + R"("}})");
    });
  };
  EXPECT_NE(modelopt("NVFP4").find("hf_quant_config.json: quant_algo NVFP4 is not supported"),
            std::string::npos);
  const auto with_config = [](const std::string& q) {
    return open_error("cfg", {}, Scheme::CompressedTensors, [&](const fs::path& dir) {
      std::ifstream in(dir / "config.json");
      json c = json::parse(in);
      c["quantization_config"] = json::parse(q);
      write_text(dir / "config.json", c.dump());
    });
  };
  EXPECT_NE(with_config(R"({"quant_method": "awq", "bits": 4})")
                .find("quantization_config.quant_method 'awq' is not supported"),
            std::string::npos);
  EXPECT_NE(with_config(R"({"quant_method": "compressed-tensors", "config_groups": {"g": {
                "weights": {"num_bits": 4, "type": "int", "strategy": "group"}}}})")
                .find("group 'g' has 4-bit int weights; parafuse reads 8-bit float (FP8) "
                      "weights only"),
            std::string::npos);
  EXPECT_NE(with_config(R"({"quant_method": "fp8", "weight_block_size": [128, 128]})")
                .find("block-wise FP8 (weight_block_size [128,128]) is not supported"),
            std::string::npos);
}

}  // namespace
}  // namespace parafuse

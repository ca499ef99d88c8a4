// The CPU backend, op by op, against the naive reference loops (the test-backend-ops pattern).
//
// The cases, the guarded-memory harness and the reference live in backend_op_*.h so a device
// backend's test reuses them; this file states the CPU tolerances and adds CPU-only checks
// (supports(), alignment, host transfers, thread count, attention speed sanity).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>

#include "kernels/core/quant.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "tests/unit/backend_op_cases.h"

namespace parafuse {
namespace {

using op_test::OpCase;
using op_test::Tolerances;

// NMSE tolerances of the CPU backend against double-precision loops. F32 rounding gives NMSE
// ~1e-14 per op here; each bound leaves 10-100x headroom over the worst case of the table
// (measured on x86-64 with OpenBLAS 0.3.21, printed by the ToleranceReport test) and no more.
//   op         tolerance   measured   why
//   gemm       1e-12       9.3e-14    float accumulation over k <= 576 in OpenBLAS
//   rmsnorm    1e-13       3.9e-15    float product x * inv_rms * w (sum of squares in double)
//   rope       1e-13       5.5e-15    float rotation, double cos/sin of the same float angle
//   kv_store   0           0          a copy: bit-exact
//   attention  1e-11       1.1e-13    float dot products, online-softmax rescaling, float sums
//   swiglu     1e-13       3.3e-15    float expf
//   add        0           0          one float rounding of the exact sum: bit-exact
//   embedding  0           0          a gather: bit-exact
//   copy       0           0          bit-exact
//   sample     0           0          the same token ids
Tolerances cpu_tolerances() {
  Tolerances t;
  t.set(Op::Gemm, 1e-12)
      .set(Op::RmsNorm, 1e-13)
      .set(Op::Rope, 1e-13)
      .set(Op::KvStore, 0.0)
      .set(Op::Attention, 1e-11)
      .set(Op::SwiGlu, 1e-13)
      .set(Op::Add, 0.0)
      .set(Op::Embedding, 0.0)
      .set(Op::Copy, 0.0)
      .set(Op::Sample, 0.0);
  return t;
}

const std::vector<OpCase>& all_cases() {
  static const std::vector<OpCase> cases = op_test::backend_op_cases();
  return cases;
}

class CpuBackendOps : public ::testing::TestWithParam<size_t> {};

TEST_P(CpuBackendOps, MatchesReference) {
  CpuBackend backend(1);
  const OpCase& c = all_cases()[GetParam()];
  const op_test::CaseResult r = op_test::check_op_case(c, backend, cpu_tolerances());
  EXPECT_TRUE(r.ok) << r.message;
}

INSTANTIATE_TEST_SUITE_P(Table, CpuBackendOps, ::testing::Range(size_t(0), all_cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return all_cases()[info.param].name;
                         });

// Prints the worst NMSE per op next to its tolerance (the numbers behind the table above).
TEST(CpuBackendOps, ToleranceReport) {
  CpuBackend backend(1);
  std::map<Op, double> worst;
  for (const OpCase& c : all_cases()) {
    const op_test::CaseResult r = op_test::check_op_case(c, backend, cpu_tolerances());
    worst[c.op] = std::max(worst[c.op], r.worst_nmse);
  }
  for (const auto& [op, nmse] : worst) {
    std::printf("  %-10s worst NMSE %-9.3g tolerance %.3g\n", std::string(op_name(op)).c_str(),
                nmse, cpu_tolerances()(op));
    EXPECT_LE(nmse, cpu_tolerances()(op)) << op_name(op);
  }
}

// ---- gemm and embedding with weights kept in a file format ----------------------------------
//
// Each case quantizes a random weight to its format with the reference quantizer
// (kernels/core/quant.h), uploads the bytes with upload_weight, and compares the backend with
// double-precision loops over the *dequantized* weight: the weight's own rounding is not error.
// What remains, and the NMSE tolerance per path (worst measured on x86-64 in the comment):
//   F32, F16, BF16             1e-12   float accumulation only (measured <= 4e-13)
//   Q8_0/Q4_0/Q4_1             5e-9    activations rounded to int16 per 32-block, in the GEMV
//                                      (m <= 8) and in the prefill panels alike:
//                                      ~(amax/32767)^2/12 relative, ~5e-10 for normal data
//                                      (measured <= 7.1e-10; int8 activations measured 4e-5)
//   embedding (any format)     0       the looked-up rows dequantized exactly
// Every case runs on every kernel set this CPU has (generic, avx2, avx512-vnni) and at 1 and 2
// threads.
struct WeightCase {
  std::string name;
  DType dtype;
  int64_t m, n, k;
  float beta;
  uint64_t seed;
};

double weight_tolerance(DType dtype) {
  return cpu_kernels::KernelSet::activations_quantized(dtype) ? 5e-9 : 1e-12;
}

std::vector<WeightCase> weight_cases() {
  std::vector<WeightCase> cases;
  uint64_t seed = 900;
  for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const std::string t(dtype_name(dtype));
    cases.push_back({t + "_decode_m1_n257_k96", dtype, 1, 257, 96, 0.0f, ++seed});
    cases.push_back({t + "_decode_m1_n576_k1536_beta1", dtype, 1, 576, 1536, 1.0f, ++seed});
    cases.push_back({t + "_small_m5_n33_k64_beta_half", dtype, 5, 33, 64, 0.5f, ++seed});
    cases.push_back({t + "_gemv_m8_n300_k576", dtype, 8, 300, 576, 0.0f, ++seed});
    cases.push_back({t + "_prefill_m37_n96_k160", dtype, 37, 96, 160, 0.0f, ++seed});
    cases.push_back({t + "_prefill_m64_n700_k128_beta1", dtype, 64, 700, 128, 1.0f, ++seed});
    // (quantized weights: a row tail of 2 after three 3-row tiles, one partial 20-column panel)
    cases.push_back({t + "_prefill_m11_n20_k64_beta_half", dtype, 11, 20, 64, 0.5f, ++seed});
  }
  return cases;
}

// Raw bytes of `values` (rows x cols) in `dtype`, and their exact dequantized values.
struct StoredWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};
StoredWeight store_weight(DType dtype, const std::vector<float>& w, int64_t rows, int64_t cols) {
  StoredWeight s;
  const size_t row_bytes = dtype_row_bytes(dtype, cols);
  s.bytes.resize(size_t(rows) * row_bytes);
  s.values.resize(w.size());
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(dtype, w.data() + r * cols, cols, s.bytes.data() + size_t(r) * row_bytes);
    dequantize_row(dtype, s.bytes.data() + size_t(r) * row_bytes, cols, s.values.data() + r * cols);
  }
  return s;
}

std::vector<std::string> kernel_sets_here() {
  std::vector<std::string> sets;
  for (const char* isa : {"generic", "avx2", "avx512-vnni"})
    if (cpu_kernels::kernels_named(isa)) sets.push_back(isa);
  return sets;
}

op_test::CaseResult check_weight_case(const WeightCase& c, CpuBackend& backend) {
  std::mt19937_64 rng(c.seed);
  const auto x = op_test::random_normal(rng, c.m * c.k);
  const auto w = op_test::random_normal(rng, c.n * c.k, 0.05f);
  const auto y0 = c.beta == 0.0f ? op_test::filled(c.m * c.n, op_test::nan_f32())
                                 : op_test::random_normal(rng, c.m * c.n);
  const StoredWeight stored = store_weight(c.dtype, w, c.n, c.k);
  op_test::OpCase oc{c.name, Op::Gemm, {}, {}};
  oc.run = [&](Backend& be) {
    op_test::GuardedTensors g(be);
    Tensor tx = g.f32(x, c.m, c.k);
    Tensor ty = g.f32(y0, c.m, c.n, -1, true);
    Buffer owner;
    Tensor tw = be.alloc_tensor(owner, c.dtype, c.n, c.k);
    be.upload_weight(stored.bytes.data(), tw);
    be.gemm(tx, tw, ty, c.beta);
    return op_test::CaseOutput{{g.read(ty)}, g.memory_errors()};
  };
  oc.reference = [&] {
    return op_test::Outputs{op_test::ref_gemm(x, stored.values, y0, c.m, c.n, c.k, c.beta)};
  };
  op_test::Tolerances tol;
  tol.set(Op::Gemm, weight_tolerance(c.dtype));
  return op_test::check_op_case(oc, backend, tol);
}

class CpuWeightFormats : public ::testing::TestWithParam<WeightCase> {};

TEST_P(CpuWeightFormats, GemmMatchesReferenceOnEveryKernelSet) {
  const WeightCase& c = GetParam();
  for (const std::string& isa : kernel_sets_here()) {
    for (int threads : {1, 2}) {
      CpuBackend backend(CpuBackendOptions{threads, true, isa});
      ASSERT_TRUE(backend.supports_weight(c.dtype));
      const op_test::CaseResult r = check_weight_case(c, backend);
      EXPECT_TRUE(r.ok) << isa << ", " << threads << " threads: " << r.message;
      std::printf("  %-40s %-12s %d thread(s): NMSE %.3g (tolerance %.3g)\n", c.name.c_str(),
                  isa.c_str(), threads, r.worst_nmse, weight_tolerance(c.dtype));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Table, CpuWeightFormats, ::testing::ValuesIn(weight_cases()),
                         [](const ::testing::TestParamInfo<WeightCase>& info) {
                           return info.param.name;
                         });

TEST(CpuWeightFormats, EmbeddingDequantizesTheRowsItLooksUp) {
  const int64_t vocab = 40, d = 96;
  std::mt19937_64 rng(4321);
  const auto table = op_test::random_normal(rng, vocab * d);
  const std::vector<int32_t> ids = {0, 39, 7, 55, 7};  // 55: another rank's row (zeros)
  for (DType dtype : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const StoredWeight stored = store_weight(dtype, table, vocab, d);
    CpuBackend backend(2);
    Buffer owner;
    Tensor tt = backend.alloc_tensor(owner, dtype, vocab, d);
    backend.upload_weight(stored.bytes.data(), tt);
    op_test::GuardedTensors g(backend);
    Tensor ti = g.i32(ids, int64_t(ids.size()), 1);
    Tensor to = g.f32(op_test::filled(int64_t(ids.size()) * d, op_test::nan_f32()),
                      int64_t(ids.size()), d, -1, true);
    backend.embedding(tt, ti, 0, to);
    const std::vector<float> got = g.read(to);
    for (size_t r = 0; r < ids.size(); ++r) {
      for (int64_t c = 0; c < d; ++c) {
        const float want = ids[r] < vocab ? stored.values[size_t(ids[r] * d + c)] : 0.0f;
        ASSERT_EQ(got[r * size_t(d) + size_t(c)], want) << dtype_name(dtype) << " row " << r;
      }
    }
    EXPECT_TRUE(g.memory_errors().empty());
    // download_f32 of a weight in a file format dequantizes it.
    std::vector<float> back(size_t(vocab * d));
    backend.download_f32(tt, back.data());
    EXPECT_EQ(back, stored.values) << dtype_name(dtype);
  }
}

TEST(CpuWeightFormats, ActivationQuantizationIsBitIdenticalOnEveryKernelSet) {
  std::mt19937_64 rng(77);
  auto x = op_test::random_normal(rng, 32 * 40, 3.0f);
  for (int i = 0; i < 32; ++i) x[size_t(32 + i)] = 0.0f;  // an all-zero block
  x[size_t(70)] = op_test::nan_f32();                     // a NaN block
  x[size_t(100)] = op_test::inf_f32();                    // an Inf block
  std::vector<ActivationBlock> want(40);
  quantize_activations(x.data(), int64_t(x.size()), want.data());
  EXPECT_TRUE(std::isnan(want[2].d) && std::isnan(want[3].d));
  for (const std::string& isa : kernel_sets_here()) {
    std::vector<ActivationBlock> got(40);
    cpu_kernels::kernels_named(isa.c_str())->quantize(x.data(), int64_t(x.size()), got.data());
    for (size_t b = 0; b < got.size(); ++b) {
      EXPECT_EQ(std::memcmp(got[b].q, want[b].q, sizeof want[b].q), 0) << isa << " block " << b;
      if (std::isnan(want[b].d)) {
        EXPECT_TRUE(std::isnan(got[b].d)) << isa << " block " << b;
      } else {
        EXPECT_EQ(got[b].d, want[b].d) << isa << " block " << b;
        EXPECT_EQ(got[b].sum, want[b].sum) << isa << " block " << b;
      }
    }
  }
}

// The prefill panels: every set packs the same bytes and computes the same floats as the
// generic one (integer dots, then the same float operations in the same order), over a tail
// panel of 9 columns and every row count from 1 to 13.
TEST(CpuWeightFormats, QuantizedPanelsAreBitIdenticalOnEveryKernelSet) {
  const cpu_kernels::KernelSet& generic = *cpu_kernels::kernels_named("generic");
  constexpr int kCols = cpu_kernels::kPanelCols;
  const int64_t k = 96, nb = k / 32, n = kCols + 9;
  std::mt19937_64 rng(78);
  constexpr int kMaxRows = 13;  // every row tail of every set's tile (3 generic / AVX2, 6 AVX-512)
  const auto x = op_test::random_normal(rng, kMaxRows * k, 2.0f);
  std::vector<ActivationBlock> act(size_t(kMaxRows * nb));
  for (int r = 0; r < kMaxRows; ++r) quantize_activations(x.data() + r * k, k, act.data() + r * nb);
  for (DType dtype : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const StoredWeight w = store_weight(dtype, op_test::random_normal(rng, n * k, 0.05f), n, k);
    const size_t row_bytes = dtype_row_bytes(dtype, k);
    for (int64_t c0 : {int64_t(0), int64_t(kCols)}) {
      const int cols = int(std::min<int64_t>(kCols, n - c0));
      std::vector<int32_t> want_pairs(size_t(nb * 16 * kCols), -1);
      std::vector<float> want_dm(size_t(nb * 2 * kCols), -1.0f);
      generic.pack_panel(dtype)(w.bytes.data() + size_t(c0) * row_bytes, row_bytes, cols, nb,
                                want_pairs.data(), want_dm.data());
      for (int rows = 1; rows <= kMaxRows; ++rows) {
        for (float beta : {0.0f, 0.5f}) {
          std::vector<float> want(size_t(rows * cols), 1.0f);
          generic.panel_gemm(act.data(), rows, nb, want_pairs.data(), want_dm.data(), cols, beta,
                             want.data(), cols);
          for (const std::string& isa : kernel_sets_here()) {
            const cpu_kernels::KernelSet& set = *cpu_kernels::kernels_named(isa.c_str());
            std::vector<int32_t> pairs(want_pairs.size(), -1);
            std::vector<float> dm(want_dm.size(), -1.0f);
            set.pack_panel(dtype)(w.bytes.data() + size_t(c0) * row_bytes, row_bytes, cols, nb,
                                  pairs.data(), dm.data());
            EXPECT_EQ(pairs, want_pairs) << isa << " " << dtype_name(dtype) << " cols " << cols;
            EXPECT_EQ(dm, want_dm) << isa << " " << dtype_name(dtype) << " cols " << cols;
            std::vector<float> got(want.size(), 1.0f);
            set.panel_gemm(act.data(), rows, nb, pairs.data(), dm.data(), cols, beta, got.data(),
                           cols);
            EXPECT_EQ(got, want) << isa << " " << dtype_name(dtype) << " rows " << rows << " beta "
                                 << beta;
          }
        }
      }
    }
  }
}

TEST(CpuWeightFormats, NativeWeightsOffMeansF32Only) {
  CpuBackend reference(CpuBackendOptions{1, false, "best"});
  CpuBackend native(1);
  for (DType dtype : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    EXPECT_FALSE(reference.supports_weight(dtype)) << dtype_name(dtype);
    EXPECT_TRUE(native.supports_weight(dtype)) << dtype_name(dtype);
  }
  EXPECT_TRUE(reference.supports_weight(DType::F32));
  EXPECT_FALSE(native.supports_weight(DType::I32));
  op_test::expect_error(
      [] {
        CpuBackend bad(CpuBackendOptions{1, true, "sse9"});
      },
      {"kernel set", "sse9"});
}

// ---- KV caches in F16 ---------------------------------------------------------------------
//
// kv_store rounds new rows to halves, attention widens them as it reads. The reference is the
// same naive loops over caches that hold the same halves, so the tolerances are the F32 table's:
// kv_store bit-exact (one round-to-nearest-even of each value), attention 1e-11. Every kernel set
// here, at 1, 2 and 3 threads (decode at batch 1 splits the keys into chunks).
std::vector<OpCase> f16_cache_cases() {
  using op_test::attention_case;
  using op_test::kv_store_case;
  const DType f16 = DType::F16;
  std::vector<OpCase> c;
  c.push_back(kv_store_case("kv_store_prefill_20", {{0, 20, 0, {}}}, 192, 401, -1, 16, f16));
  c.push_back(kv_store_case("kv_store_mixed_strided",
                            {{1, 7, 10, {}}, {0, 1, 0, {}}, {8, 2, 47, {}}}, 48, 403, 160, 16,
                            f16));
  c.push_back(attention_case("attention_decode_gqa1", {{0, 1, 40, {}}}, {4, 4, 64, 0.0f}, 501, 1.0f,
                             -1, -1, 16, f16));
  c.push_back(attention_case("attention_decode_long_gqa4_hd128", {{0, 1, 1001, {}}, {1, 1, 3, {}}},
                             {32, 8, 128, 0.0f}, 512, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_decode_smollm2_700_keys", {{0, 1, 699, {}}},
                             {9, 3, 64, 0.0f}, 513, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_prefill_gqa3", {{0, 37, 0, {}}}, {6, 2, 32, 0.0f}, 502,
                             1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_batch_3seqs_gqa3",
                             {{4, 5, 0, {}}, {0, 1, 17, {}}, {1, 3, 100, {}}}, {9, 3, 64, 0.0f},
                             504, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_chunked_prefill_many_tiles", {{0, 70, 130, {}}},
                             {2, 1, 64, 0.0f}, 505, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_odd_head_dim17_scale", {{0, 5, 11, {}}}, {3, 3, 17, 0.3f},
                             506, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_head_dim72_two_seqs", {{0, 3, 30, {}}, {3, 1, 0, {}}},
                             {4, 2, 72, 0.0f}, 507, 1.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_large_scores", {{0, 16, 16, {}}}, {4, 2, 64, 0.0f}, 509,
                             8.0f, -1, -1, 16, f16));
  c.push_back(attention_case("attention_batch_with_empty_seq", {{0, 2, 5, {}}, {2, 0, 7, {}}},
                             {2, 2, 16, 0.0f}, 510, 1.0f, -1, -1, 16, f16));
  return c;
}

TEST(CpuF16KvCache, EveryKernelSetAndThreadCountMatchesReference) {
  const std::vector<OpCase> cases = f16_cache_cases();
  for (const std::string& isa : kernel_sets_here()) {
    for (int threads : {1, 2, 3}) {
      CpuBackend backend(CpuBackendOptions{threads, true, isa});
      for (const OpCase& c : cases) {
        const op_test::CaseResult r = op_test::check_op_case(c, backend, cpu_tolerances());
        EXPECT_TRUE(r.ok) << "f16 cache, " << isa << ", " << threads << " threads: " << r.message;
        if (threads == 1)
          std::printf("  f16 cache %-40s %-12s NMSE %.3g\n", c.name.c_str(), isa.c_str(),
                      r.worst_nmse);
      }
    }
  }
}

// The same rounding as parafuse::f32_to_f16 in every set: ties to even, subnormal halves,
// overflow to Inf, Inf; a NaN stays a NaN.
TEST(CpuF16KvCache, HalfConversionIsBitIdenticalOnEveryKernelSet) {
  std::mt19937_64 rng(99);
  std::vector<float> x = op_test::random_normal(rng, 1000, 10.0f);
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f + 1.0f / 2048,
                            1.0f + 3.0f / 2048,  // ties
                            6e-8f,
                            3e-8f,
                            5.9604645e-8f,
                            -1e-5f,
                            6.1e-5f,  // subnormals
                            65504.0f,
                            65519.0f,
                            65520.0f,
                            1e6f,
                            -1e6f,  // overflow
                            op_test::inf_f32(),
                            -op_test::inf_f32(),
                            1e-30f,
                            2049.0f};
  x.insert(x.end(), std::begin(specials), std::end(specials));
  x.push_back(op_test::nan_f32());
  for (const std::string& isa : kernel_sets_here()) {
    std::vector<uint16_t> got(x.size());
    cpu_kernels::kernels_named(isa.c_str())->to_f16(x.data(), int64_t(x.size()), got.data());
    for (size_t i = 0; i + 1 < x.size(); ++i)
      EXPECT_EQ(got[i], f32_to_f16(x[i])) << isa << " x " << x[i];
    EXPECT_TRUE(std::isnan(f16_to_f32(got.back()))) << isa;
  }
}

TEST(CpuF16KvCache, CachesAreF32OrF16AndOneDtype) {
  CpuBackend backend(1);
  EXPECT_TRUE(backend.supports_kv_cache(DType::F32));
  EXPECT_TRUE(backend.supports_kv_cache(DType::F16));
  EXPECT_FALSE(backend.supports_kv_cache(DType::BF16));
  EXPECT_FALSE(backend.supports_kv_cache(DType::Q8_0));
  Buffer b1, b2, b3, b4, b5;
  const AttentionShape shape{2, 1, 8, 0.25f};
  Tensor k = backend.alloc_tensor(b1, DType::F32, 1, 8);
  Tensor q = backend.alloc_tensor(b2, DType::F32, 1, 16);
  Tensor k16 = backend.alloc_tensor(b3, DType::F16, 16, 8);
  Tensor v32 = backend.alloc_tensor(b4, DType::F32, 16, 8);
  Tensor bf = backend.alloc_tensor(b5, DType::BF16, 16, 8);
  const int32_t table[] = {0};
  AttentionBatch batch;
  batch.seqs = {AttentionSeq{0, 1, 0, table}};
  op_test::expect_error([&] { backend.kv_store(k, k, k16, v32, batch); },
                        {"kv_store", "k_cache is F16 but v_cache is F32"});
  op_test::expect_error([&] { backend.attention(q, bf, bf, batch, shape, q); },
                        {"attention", "BF16", "F32 or F16"});
  // download_f32 reads an F16 cache back even where native weights are off
  CpuBackend reference(CpuBackendOptions{1, false, "best"});
  const std::vector<float> halves = {1.5f, -2.0f, 0.099975586f};
  Buffer b6;
  Tensor t = reference.alloc_tensor(b6, DType::F16, 1, 3);
  reference.upload_f32(halves.data(), t);
  std::vector<float> back(3);
  reference.download_f32(t, back.data());
  EXPECT_EQ(back, halves);
}

TEST(CpuThreadPool, SplitsEveryItemOnceAndRethrows) {
  ThreadPool pool(3);
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(2), int64_t(7), int64_t(1000)}) {
    for (int64_t grain : {int64_t(1), int64_t(64)}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      for (int rep = 0; rep < 50; ++rep) {
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) seen[size_t(i)]++;
        });
      }
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[size_t(i)].load(), 50) << n << " " << i;
    }
  }
  op_test::expect_error(
      [&] {
        pool.parallel_for(
            100, 1, [](int64_t b, int64_t) { PF_CHECK(b == 0, "part starting at {} failed", b); });
      },
      {"part starting at"});
}

// The whole op table again on every other kernel set this CPU has and on two and three threads
// (the table above runs the best set on one; three splits decode attention's keys unevenly):
// same tolerances.
TEST(CpuBackendOps, EveryKernelSetAndThreadCountMatchesReference) {
  for (const std::string& isa : kernel_sets_here()) {
    for (int threads : {1, 2, 3}) {
      CpuBackend backend(CpuBackendOptions{threads, true, isa});
      for (const OpCase& c : all_cases()) {
        const op_test::CaseResult r = op_test::check_op_case(c, backend, cpu_tolerances());
        EXPECT_TRUE(r.ok) << isa << ", " << threads << " threads: " << r.message;
      }
    }
  }
}

TEST(CpuBackend, ThreadedGemmMatchesReferenceToo) {
  CpuBackend backend(2);
  EXPECT_EQ(backend.threads(), 2);
  for (const OpCase& c : all_cases()) {
    if (c.op != Op::Gemm) continue;
    const op_test::CaseResult r = op_test::check_op_case(c, backend, cpu_tolerances());
    EXPECT_TRUE(r.ok) << r.message;
  }
  CpuBackend single(1);  // puts OpenBLAS back to one thread for the other tests
}

TEST(CpuBackend, SamplingProperties) {
  CpuBackend backend(1);
  op_test::expect_sampling_properties(backend);
}

TEST(CpuBackend, OpErrors) {
  CpuBackend backend(1);
  op_test::expect_op_errors(backend);
}

TEST(CpuBackend, SupportsF32EverywhereAndI32Copies) {
  CpuBackend backend(1);
  EXPECT_EQ(backend.name(), "cpu");
  EXPECT_EQ(backend.weight_dtype(), DType::F32);
  EXPECT_EQ(backend.activation_dtype(), DType::F32);
  for (Op op : {Op::Gemm, Op::RmsNorm, Op::Rope, Op::KvStore, Op::Attention, Op::SwiGlu, Op::Add,
                Op::Embedding, Op::Sample, Op::Copy}) {
    EXPECT_TRUE(backend.supports(op, DType::F32)) << op_name(op);
    EXPECT_FALSE(backend.supports(op, DType::F16)) << op_name(op);
    EXPECT_FALSE(backend.supports(op, DType::BF16)) << op_name(op);
    EXPECT_EQ(backend.supports(op, DType::I32), op == Op::Copy) << op_name(op);
  }
}

TEST(CpuBackend, UnsupportedDtypeNamesOpAndDtype) {
  CpuBackend backend(1);
  Buffer bx, by;
  Tensor x = backend.alloc_tensor(bx, DType::F32, 2, 4);
  Tensor y = backend.alloc_tensor(by, DType::F32, 2, 4);
  Tensor x16 = x;
  x16.dtype = DType::BF16;
  op_test::expect_error([&] { backend.add(x16, x, y); }, {"add", "BF16"});
  op_test::expect_error([&] { backend.swiglu(x, x16, y); }, {"swiglu", "BF16"});
  op_test::expect_error([&] { backend.rmsnorm(x16, Tensor{}, 1e-5f, y); }, {"rmsnorm", "BF16"});
  op_test::expect_error([&] { backend.upload_f32(nullptr, x16); }, {"BF16"});
  op_test::expect_error([&] { CpuBackend bad(0); }, {"threads"});
}

TEST(CpuBackend, AllocIsAlignedAndNonEmpty) {
  CpuBackend backend(1);
  for (size_t bytes : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(1000)}) {
    Buffer b = backend.alloc(bytes);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u) << bytes;
    EXPECT_EQ(b.bytes(), bytes);
  }
}

TEST(CpuBackend, StridedUploadDownloadAndI32Download) {
  auto backend = make_cpu_backend(1);
  Buffer owner;
  Tensor wide = backend->alloc_tensor(owner, DType::F32, 3, 10);
  std::vector<float> zeros(30, 0.0f);
  backend->upload_f32(zeros.data(), wide);
  Tensor view = wide.cols_view(2, 6);  // (3, 4) with row_stride 10
  std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  backend->upload_f32(values.data(), view);
  std::vector<float> back(12), all(30);
  backend->download_f32(view, back.data());
  EXPECT_EQ(back, values);
  backend->download_f32(wide, all.data());
  EXPECT_EQ(all[2], 1.0f);
  EXPECT_EQ(all[12], 5.0f);
  EXPECT_EQ(all[1], 0.0f);
  EXPECT_EQ(all[6], 0.0f);
  Buffer ids_owner;
  Tensor ids = backend->alloc_tensor(ids_owner, DType::I32, 3, 1);
  const std::vector<int32_t> id_values = {7, -2, 49151};
  backend->upload_i32(id_values.data(), ids);
  std::vector<float> ids_back(3);
  backend->download_f32(ids, ids_back.data());
  EXPECT_EQ(ids_back, (std::vector<float>{7.0f, -2.0f, 49151.0f}));
  op_test::expect_error([&] { backend->upload_i32(id_values.data(), view); }, {"I32"});
}

// Not a benchmark: a guard against an accidentally quadratic-per-element or unvectorized
// attention. A 512-token prefill at SmolLM2-135M's shape (9 heads, 3 kv heads, head_dim 64) is
// ~0.3 GFLOP and takes well under a second even in a debug build.
TEST(CpuBackend, AttentionPrefill512IsFastEnough) {
  std::vector<op_test::SeqSpec> seqs = {{0, 512, 0, {}}};
  const OpCase c = op_test::attention_case("prefill512", seqs, {9, 3, 64, 0.0f}, 4242);
  CpuBackend backend(1);
  const auto start = std::chrono::steady_clock::now();
  const op_test::CaseOutput out = c.run(backend);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("  attention prefill 512 x (9 heads, 3 kv, hd 64): %.1f ms\n", seconds * 1e3);
  EXPECT_LT(seconds, 2.0);
  EXPECT_TRUE(out.memory_errors.empty());
}

}  // namespace
}  // namespace parafuse

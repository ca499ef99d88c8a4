// The CUDA backend, op by op, against the CPU backend (the test-backend-ops pattern), plus the
// CUDA-only checks: bf16 paths, the fused residual+norm, the memory pool, chunked transfers,
// lazily reported device errors and CUDA graphs. Every test skips, with the runtime's reason,
// where there is no CUDA device (the development machines have the toolkit but no GPU).
//
// The table runs twice: on F32 tensors (the kernels' float instantiation; tight tolerances),
// and through Bf16Adapter, which converts each op's F32 inputs to BF16 tensors with the same
// strides in guarded device buffers, runs the bf16 kernels and converts outputs back: the
// bf16 path the engine uses, with bf16 tolerances and its own out-of-bounds checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "kernels/core/fp8.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/unit/backend_op_cases.h"

namespace parafuse {
namespace {

using op_test::OpCase;
using op_test::Tolerances;

#define PF_SKIP_WITHOUT_CUDA()                   \
  do {                                           \
    std::string why;                             \
    if (cuda_device_count(&why) == 0) {          \
      GTEST_SKIP() << "no CUDA device: " << why; \
    }                                            \
  } while (0)

// F32 tensors: the same float math as the CPU backend up to summation order and libm.
//   gemm 1e-10 (cuBLASLt CUBLAS_COMPUTE_32F, no TF32), rmsnorm 1e-11 (fp32 vs fp64 sum of
//   squares), rope 1e-12 (both fp64 sincos of the same fp32 angle), attention 1e-10,
//   swiglu 1e-12 (expf vs std::exp), the copies and gathers bit-exact, sampling the same ids.
Tolerances f32_tolerances() {
  Tolerances t;
  t.set(Op::Gemm, 1e-10).set(Op::RmsNorm, 1e-11).set(Op::Rope, 1e-12).set(Op::KvStore, 0.0);
  t.set(Op::Attention, 1e-10).set(Op::SwiGlu, 1e-12).set(Op::Add, 0.0).set(Op::Embedding, 0.0);
  t.set(Op::Copy, 0.0).set(Op::Sample, 0.0);
  return t;
}

// BF16 tensors: each rounding to bf16 adds NMSE ~ (2^-8)^2 / 12 ~ 1.3e-6; an op sees two to
// four roundings, so 1e-4 leaves ~20x headroom; a pure copy or gather has one rounding.
// Sampling reads F32 logits (no conversion): the same ids.
Tolerances bf16_tolerances() {
  Tolerances t;
  t.set(Op::Gemm, 1e-4).set(Op::RmsNorm, 1e-4).set(Op::Rope, 1e-4).set(Op::KvStore, 1e-5);
  t.set(Op::Attention, 1e-4).set(Op::SwiGlu, 1e-4).set(Op::Add, 2e-5).set(Op::Embedding, 1e-5);
  t.set(Op::Copy, 1e-5).set(Op::Sample, 0.0);
  return t;
}

// Cases whose inputs make bf16 rounding matter more, with their looser NMSE bound and why.
const std::map<std::string, double>& bf16_exceptions() {
  // attention_large_scores: q ~ N(0, 8) gives scores in the hundreds, where a 2^-8 relative
  // rounding of q and k moves a score by ~1: the softmax itself changes.
  static const std::map<std::string, double> m = {{"attention_large_scores", 5e-2}};
  return m;
}

const std::vector<OpCase>& all_cases() {
  static const std::vector<OpCase> cases = op_test::backend_op_cases();
  return cases;
}

// Runs the ops of a CudaBackend on BF16 copies of the F32 tensors the op test hands it.
class Bf16Adapter final : public Backend {
 public:
  explicit Bf16Adapter(CudaBackend& be) : be_(be) {}
  std::string_view name() const override { return "cuda-bf16"; }
  bool supports(Op op, DType dtype) const override { return be_.supports(op, dtype); }
  DType weight_dtype() const override { return DType::F32; }
  DType activation_dtype() const override { return DType::F32; }
  Buffer alloc(size_t bytes) override { return be_.alloc(bytes); }
  void upload_f32(const float* host, const Tensor& dst) override { be_.upload_f32(host, dst); }
  void upload_i32(const int32_t* host, const Tensor& dst) override { be_.upload_i32(host, dst); }
  void download_f32(const Tensor& src, float* host) override { be_.download_f32(src, host); }
  void synchronize() override { be_.synchronize(); }
  void copy(const Tensor& src, const Tensor& dst) override {
    if (src.dtype != DType::F32) return be_.copy(src, dst);
    be_.copy(bf(src), bf(dst, true));
    finish();
  }
  void gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta) override {
    be_.gemm(bf(x), bf(w), bf(y, true), beta);
    finish();
  }
  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    Tensor xb = bf(x, x.data == y.data);
    be_.rmsnorm(xb, weight.empty() ? Tensor{} : bf(weight), eps, bf(y, true));
    finish();
  }
  void rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
            int head_dim) override {
    be_.rope(bf(x, true), positions, inv_freq, n_heads, head_dim);
    finish();
  }
  void kv_store(const Tensor& k, const Tensor& v, const Tensor& kc, const Tensor& vc,
                const AttentionBatch& batch) override {
    be_.kv_store(bf(k), bf(v), bf(kc, true), bf(vc, true), batch);
    finish();
  }
  void attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const AttentionBatch& batch,
                 const AttentionShape& shape, const Tensor& out) override {
    be_.attention(bf(q), bf(kc), bf(vc), batch, shape, bf(out, true));
    finish();
  }
  void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    be_.swiglu(bf(gate), bf(up), bf(out, true));
    finish();
  }
  void add(const Tensor& a, const Tensor& b, const Tensor& out) override {
    Tensor ab = bf(a, a.data == out.data), bb = bf(b, b.data == out.data);
    be_.add(ab, bb, bf(out, true));
    finish();
  }
  void embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                 const Tensor& out) override {
    be_.embedding(bf(table), ids, vocab_begin, bf(out, true));
    finish();
  }
  void sample(const Tensor& logits, const SamplingParams* params, int32_t* ids) override {
    be_.sample(logits, params, ids);
  }
  std::vector<std::string> errors;  // out-of-bounds writes into the bf16 copies

 private:
  static constexpr int64_t kGuard = 64;
  // Exact in bf16 and far from any value the cases produce (a NaN would not survive the
  // device's F32 -> BF16 conversion bit for bit: CUDA canonicalizes NaN payloads).
  static constexpr float kCanary = -12288.0f;
  struct Copy {
    Buffer buffer;
    Tensor flat, view, original;
    bool output = false;
  };
  // The BF16 copy of an F32 view (same rows, cols and row stride), guarded by NaN canaries.
  Tensor bf(const Tensor& t, bool output = false) {
    if (t.dtype != DType::F32) return t;
    for (auto& c : copies_) {
      if (c->original.data == t.data && c->original.rows == t.rows && c->original.cols == t.cols) {
        c->output = c->output || output;
        return c->view;
      }
    }
    auto c = std::make_unique<Copy>();
    const int64_t stride = t.rows <= 1 ? t.cols : t.row_stride;
    const int64_t total = 2 * kGuard + std::max<int64_t>(t.rows, 1) * stride;
    c->flat = be_.alloc_tensor(c->buffer, DType::BF16, 1, total);
    const std::vector<float> canary(size_t(total), kCanary);
    be_.upload_f32(canary.data(), c->flat);
    c->view =
        Tensor{static_cast<char*>(c->flat.data) + kGuard * 2, DType::BF16, t.rows, t.cols, stride};
    c->original = t;
    c->output = output;
    if (t.numel() > 0) be_.convert(t, c->view);
    copies_.push_back(std::move(c));
    return copies_.back()->view;
  }
  // Outputs back to F32; every bf16 element outside an output view must still be the canary.
  void finish() {
    for (auto& c : copies_) {
      if (c->output && c->view.numel() > 0) be_.convert(c->view, c->original);
      std::vector<float> flat(size_t(c->flat.cols));
      be_.download_f32(c->flat, flat.data());
      const float canary = kCanary;
      for (int64_t i = 0; i < c->flat.cols; ++i) {
        const int64_t j = i - kGuard;
        const int64_t r = c->view.row_stride ? j / c->view.row_stride : 0;
        const int64_t col = c->view.row_stride ? j % c->view.row_stride : 0;
        const bool in_view = j >= 0 && r < c->view.rows && col < c->view.cols;
        if (in_view) continue;
        if (std::memcmp(&flat[size_t(i)], &canary, 4) != 0) {
          errors.push_back(fmt::format("bf16 copy of ({}, {}) stride {}: element {} changed",
                                       c->view.rows, c->view.cols, c->view.row_stride, i));
          break;
        }
      }
    }
    copies_.clear();
  }
  CudaBackend& be_;
  std::vector<std::unique_ptr<Copy>> copies_;
};

class CudaBackendOps : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaBackendOps, F32MatchesCpu) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  CpuBackend cpu(1);
  const OpCase& c = all_cases()[GetParam()];
  const op_test::CaseResult r = op_test::check_op_case(c, cuda, f32_tolerances(), &cpu);
  EXPECT_TRUE(r.ok) << r.message;
}

TEST_P(CudaBackendOps, Bf16MatchesCpu) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  Bf16Adapter adapter(cuda);
  CpuBackend cpu(1);
  const OpCase& c = all_cases()[GetParam()];
  Tolerances tol = bf16_tolerances();
  if (auto it = bf16_exceptions().find(c.name); it != bf16_exceptions().end())
    tol.set(c.op, it->second);
  const op_test::CaseResult r = op_test::check_op_case(c, adapter, tol, &cpu);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_TRUE(adapter.errors.empty()) << adapter.errors.front();
  std::printf("  %-40s bf16 NMSE %.3g (tolerance %.3g)\n", c.name.c_str(), r.worst_nmse, tol(c.op));
}

INSTANTIATE_TEST_SUITE_P(Table, CudaBackendOps, ::testing::Range(size_t(0), all_cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return all_cases()[info.param].name;
                         });

TEST(CudaBackend, SamplingProperties) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  op_test::expect_sampling_properties(cuda);
}

TEST(CudaBackend, OpErrors) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackendOptions options;
  options.check_every_op = true;  // negative ids/positions throw at the call, as on the CPU
  CudaBackend cuda(options);
  op_test::expect_op_errors(cuda);
}

TEST(CudaBackend, DeviceDataErrorsSurfaceAtTheNextSynchronization) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  Buffer bt, bi, bo;
  Tensor table = cuda.alloc_tensor(bt, DType::BF16, 10, 8);
  Tensor ids = cuda.alloc_tensor(bi, DType::I32, 3, 1);
  Tensor out = cuda.alloc_tensor(bo, DType::BF16, 3, 8);
  const std::vector<int32_t> bad = {1, -5, 2};
  cuda.upload_i32(bad.data(), ids);
  cuda.embedding(table, ids, 0, out);  // asynchronous: no error yet
  op_test::expect_error([&] { cuda.synchronize(); }, {"embedding", "-5"});
  cuda.synchronize();  // reported once
}

TEST(CudaBackend, SupportsF32AndBf16) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  EXPECT_EQ(cuda.name(), "cuda");
  EXPECT_EQ(cuda.weight_dtype(), DType::BF16);
  EXPECT_EQ(cuda.activation_dtype(), DType::BF16);
  EXPECT_TRUE(cuda.supports(Op::Gemm, DType::BF16));
  EXPECT_TRUE(cuda.supports(Op::Copy, DType::I32));
  EXPECT_FALSE(cuda.supports(Op::Sample, DType::BF16));
  EXPECT_FALSE(cuda.supports(Op::Gemm, DType::Q4_0));
}

// The engine's LM head: bf16 activations and weights, F32 logits.
TEST(CudaBackend, GemmBf16InF32Out) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  CpuBackend cpu(1);
  std::mt19937_64 rng(5);
  const int64_t m = 7, n = 300, k = 576;
  auto x = op_test::random_normal(rng, m * k), w = op_test::random_normal(rng, n * k);
  // Round the inputs to bf16 first, so only accumulation differs.
  for (float& v : x) v = bf16_to_f32(f32_to_bf16(v));
  for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
  Buffer b1, b2, b3, c1, c2, c3;
  Tensor xd = cuda.alloc_tensor(b1, DType::BF16, m, k),
         wd = cuda.alloc_tensor(b2, DType::BF16, n, k);
  Tensor yd = cuda.alloc_tensor(b3, DType::F32, m, n);
  cuda.upload_f32(x.data(), xd);
  cuda.upload_f32(w.data(), wd);
  cuda.gemm(xd, wd, yd);
  Tensor xc = cpu.alloc_tensor(c1, DType::F32, m, k), wc = cpu.alloc_tensor(c2, DType::F32, n, k);
  Tensor yc = cpu.alloc_tensor(c3, DType::F32, m, n);
  cpu.upload_f32(x.data(), xc);
  cpu.upload_f32(w.data(), wc);
  cpu.gemm(xc, wc, yc);
  std::vector<float> got(size_t(m * n)), want(size_t(m * n));
  cuda.download_f32(yd, got.data());
  cpu.download_f32(yc, want.data());
  const auto cmp = op_test::compare_nmse(got, want, 1e-10);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}

// --- FP8 weights ----------------------------------------------------------------------------
// An F8_E4M3 weight (codes + one scale per row, a strided view inside a wider buffer) against
// the CPU backend's FP8 reference (code * scale in F32, exact activations). Paths by M: the
// GEMV (m <= 8) reads the codes and keeps the activations as they are, so only their BF16
// rounding and the summation order differ (1e-5); the cuBLASLt FP8 GEMM (m > 8) quantizes the
// activations to E4M3 too, per token or with the static input_scale: 3 mantissa bits give an
// NMSE of about 2^-8/12 ~ 3e-4 per product, so 2e-3; with k % 16 != 0 the weight is dequantized
// and multiplied in the activation dtype (1e-4).
struct Fp8Case {
  int64_t m, n, k;
  DType x_dtype, y_dtype;
  float beta, input_scale;
  double tolerance;
  std::string name() const {
    return fmt::format("m{}_n{}_k{}_{}_{}_beta{}_{}", m, n, k, dtype_name(x_dtype),
                       dtype_name(y_dtype), int(beta * 10), input_scale > 0 ? "static" : "dynamic");
  }
};

std::vector<Fp8Case> fp8_cases() {
  std::vector<Fp8Case> cases;
  for (int64_t m : {1, 3, 8}) {
    cases.push_back({m, 300, 576, DType::BF16, DType::BF16, 0.0f, 0.0f, 1e-5});
    cases.push_back({m, 257, 96, DType::BF16, DType::F32, 1.0f, 0.0f, 1e-5});
    cases.push_back({m, 64, 40, DType::F32, DType::F32, 0.5f, 0.0f, 1e-10});  // scalar loads
  }
  for (int64_t m : {9, 64, 200}) {
    cases.push_back({m, 320, 576, DType::BF16, DType::BF16, 0.0f, 0.0f, 2e-3});
    cases.push_back({m, 256, 512, DType::BF16, DType::F32, 1.0f, 0.0f, 2e-3});
    cases.push_back({m, 256, 512, DType::BF16, DType::BF16, 0.0f, 0.02f, 2e-3});
  }
  cases.push_back({37, 96, 40, DType::BF16, DType::BF16, 0.0f, 0.0f, 1e-4});  // dequantized
  cases.push_back({37, 96, 40, DType::F32, DType::F32, 1.0f, 0.0f, 1e-10});
  return cases;
}

class CudaFp8Gemm : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaFp8Gemm, MatchesTheCpuFp8Reference) {
  PF_SKIP_WITHOUT_CUDA();
  const Fp8Case c = fp8_cases()[GetParam()];
  CudaBackend cuda;
  std::mt19937_64 rng(11 + GetParam());
  const int64_t stride = c.k + 32;  // the weight is a column view of a wider matrix
  auto x = op_test::random_normal(rng, c.m * c.k);
  if (c.x_dtype == DType::BF16)
    for (float& v : x) v = bf16_to_f32(f32_to_bf16(v));
  if (c.input_scale > 0)  // a static scale is chosen for the data: keep |x| / scale in range
    for (float& v : x) v = std::clamp(v, -400 * c.input_scale, 400 * c.input_scale);
  std::vector<uint8_t> codes(size_t(c.n * stride));
  std::vector<float> scales(size_t(c.n)), w = op_test::random_normal(rng, c.n * stride);
  for (int64_t r = 0; r < c.n; ++r)
    scales[size_t(r)] =
        quantize_row_e4m3(&w[size_t(r * stride)], stride, &codes[size_t(r * stride)]);
  auto y0 = op_test::random_normal(rng, c.m * c.n);
  if (c.y_dtype == DType::BF16)
    for (float& v : y0) v = bf16_to_f32(f32_to_bf16(v));

  auto run = [&](Backend& be) {
    Buffer bx, bw, bs, by;
    const bool cpu_side = be.name() == "cpu";  // the CPU computes in F32
    Tensor xt = be.alloc_tensor(bx, cpu_side ? DType::F32 : c.x_dtype, c.m, c.k);
    Tensor wt = be.alloc_tensor(bw, DType::F8_E4M3, c.n, stride);
    Tensor st = be.alloc_tensor(bs, DType::F32, 1, c.n);
    Tensor yt = be.alloc_tensor(by, cpu_side ? DType::F32 : c.y_dtype, c.m, c.n);
    be.upload_f32(x.data(), xt);
    be.upload_weight(codes.data(), wt);
    be.upload_f32(scales.data(), st);
    be.upload_f32(y0.data(), yt);
    Tensor wv = wt.cols_view(16, 16 + c.k);
    wv.scales = st.f32();
    wv.input_scale = c.input_scale;
    be.gemm(xt, wv, yt, c.beta);
    std::vector<float> out(size_t(c.m * c.n));
    be.download_f32(yt, out.data());
    return out;
  };
  CpuBackendOptions o;
  CpuBackend reference(o);
  const std::vector<float> want = run(reference), got = run(cuda);
  const auto cmp = op_test::compare_nmse(got, want, c.tolerance);
  EXPECT_TRUE(cmp.ok) << c.name() << ": " << cmp.detail;
}

INSTANTIATE_TEST_SUITE_P(Table, CudaFp8Gemm, ::testing::Range(size_t(0), fp8_cases().size()),
                         [](const auto& info) { return fp8_cases()[info.param].name(); });

TEST(CudaBackend, Fp8WeightsRoundTripAndRefuseMissingScales) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  EXPECT_TRUE(cuda.supports_weight(DType::F8_E4M3));
  const int64_t n = 5, k = 48;
  std::vector<uint8_t> codes(size_t(n * k));
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint8_t((i * 37) % 255);  // no NaN code
  for (uint8_t& c : codes)
    if ((c & 0x7f) == 0x7f) c = 0x10;
  std::vector<float> scales = {0.5f, 1.0f, 2.0f, 0.25f, 3.0f};
  Buffer bw, bs, bx, by;
  Tensor w = cuda.alloc_tensor(bw, DType::F8_E4M3, n, k);
  Tensor s = cuda.alloc_tensor(bs, DType::F32, 1, n);
  cuda.upload_weight(codes.data(), w);
  cuda.upload_f32(scales.data(), s);
  w.scales = s.f32();
  std::vector<float> back(size_t(n * k));
  cuda.download_f32(w, back.data());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      ASSERT_EQ(back[size_t(r * k + c)],
                f8_e4m3_to_f32(codes[size_t(r * k + c)]) * scales[size_t(r)]);
  Tensor x = cuda.alloc_tensor(bx, DType::BF16, 2, k), y = cuda.alloc_tensor(by, DType::BF16, 2, n);
  Tensor bare = w;
  bare.scales = nullptr;
  op_test::expect_error([&] { cuda.gemm(x, bare, y); }, {"without row scales"});
}

TEST(CudaBackend, AddRmsnormEqualsAddThenRmsnorm) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  std::mt19937_64 rng(9);
  const int64_t m = 5, d = 576;
  auto h = op_test::random_normal(rng, m * d), r = op_test::random_normal(rng, m * d);
  auto w = op_test::random_normal(rng, d);
  Buffer bh1, bh2, br, bw, by1, by2;
  Tensor h1 = cuda.alloc_tensor(bh1, DType::BF16, m, d),
         h2 = cuda.alloc_tensor(bh2, DType::BF16, m, d);
  Tensor rr = cuda.alloc_tensor(br, DType::BF16, m, d),
         ww = cuda.alloc_tensor(bw, DType::BF16, 1, d);
  Tensor y1 = cuda.alloc_tensor(by1, DType::BF16, m, d),
         y2 = cuda.alloc_tensor(by2, DType::BF16, m, d);
  cuda.upload_f32(h.data(), h1);
  cuda.upload_f32(h.data(), h2);
  cuda.upload_f32(r.data(), rr);
  cuda.upload_f32(w.data(), ww);
  cuda.add(h1, rr, h1);
  cuda.rmsnorm(h1, ww, 1e-5f, y1);
  cuda.add_rmsnorm(h2, rr, ww, 1e-5f, y2);
  std::vector<float> a(size_t(m * d)), b(size_t(m * d)), ha(size_t(m * d)), hb(size_t(m * d));
  cuda.download_f32(y1, a.data());
  cuda.download_f32(y2, b.data());
  cuda.download_f32(h1, ha.data());
  cuda.download_f32(h2, hb.data());
  EXPECT_EQ(ha, hb);
  const auto cmp = op_test::compare_nmse(b, a, 1e-10);
  EXPECT_TRUE(cmp.ok) << cmp.detail;
}

TEST(CudaBackend, PoolReusesFreedBlocks) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  void* first = nullptr;
  {
    Buffer b = cuda.alloc(1000);
    first = b.data();
    EXPECT_EQ(b.bytes(), 1000u);
  }
  Buffer again = cuda.alloc(900);  // rounds to the same 1024-byte class
  EXPECT_EQ(again.data(), first);
  EXPECT_GE(cuda.pool().stats().reuses, 1u);
  Buffer zero = cuda.alloc(0);
  EXPECT_NE(zero.data(), nullptr);
}

TEST(CudaBackend, ChunkedStridedTransfersRoundTrip) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackendOptions options;
  options.staging_slot_bytes = 4096;  // forces row blocks and column pieces
  CudaBackend cuda(options);
  std::mt19937_64 rng(3);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t cols : {int64_t(7), int64_t(3000)}) {
      const int64_t rows = 40, stride = cols + 5;
      auto v = op_test::random_normal(rng, rows * cols);
      for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
      Buffer owner;
      Tensor wide = cuda.alloc_tensor(owner, dt, rows, stride);
      Tensor view = wide.cols_view(2, 2 + cols);
      cuda.upload_f32(v.data(), view);
      std::vector<float> back(v.size());
      cuda.download_f32(view, back.data());
      EXPECT_EQ(back, v) << dtype_name(dt) << " cols " << cols;
    }
  }
}

TEST(CudaBackend, GraphCapturesOnceAndReplays) {
  PF_SKIP_WITHOUT_CUDA();
  CudaBackend cuda;
  Buffer ba, bb, bo;
  Tensor a = cuda.alloc_tensor(ba, DType::BF16, 4, 64),
         b = cuda.alloc_tensor(bb, DType::BF16, 4, 64);
  Tensor o = cuda.alloc_tensor(bo, DType::BF16, 4, 64);
  std::vector<float> ones(256, 1.0f), twos(256, 2.0f), out(256);
  cuda.upload_f32(ones.data(), a);
  cuda.upload_f32(ones.data(), b);
  int captures = 0;
  auto step = [&] {
    ++captures;
    cuda.add(a, b, o);
    cuda.swiglu(o, b, o);
  };
  cuda.run_graph("step", step);
  cuda.download_f32(o, out.data());
  EXPECT_NEAR(out[0], 2.0f / (1.0f + std::exp(-2.0f)), 1e-2);
  cuda.upload_f32(twos.data(), a);  // new inputs at the same addresses
  cuda.run_graph("step", step);
  cuda.download_f32(o, out.data());
  EXPECT_NEAR(out[0], 3.0f / (1.0f + std::exp(-3.0f)), 1e-2);
  EXPECT_EQ(captures, 1);
  EXPECT_EQ(cuda.graph_count(), 1u);
  op_test::expect_error([&] { cuda.run_graph("bad", [&] { cuda.download_f32(o, out.data()); }); },
                        {"capture"});
  cuda.clear_graphs();
  EXPECT_EQ(cuda.graph_count(), 0u);
}

}  // namespace
}  // namespace parafuse

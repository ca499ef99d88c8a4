// The CPU backend, op by op, against the naive reference loops (the test-backend-ops pattern).
//
// The cases, the guarded-memory harness and the reference live in backend_op_*.h so a device
// backend's test reuses them; this file states the CPU tolerances and adds CPU-only checks
// (supports(), alignment, host transfers, thread count, attention speed sanity).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>

#include "kernels/cpu/cpu_backend.h"
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

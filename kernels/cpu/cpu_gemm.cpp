// CPU backend: gemm, for F32 weights and for weights kept in their file's format.
//
// Two paths, by the number of activation rows m:
//   m <= kGemvMaxRows (decode, small batches): matrix-vector products. The thread pool splits
//     the weight's output rows; each thread streams its rows once per activation row through
//     the SIMD dot kernels (cpu_kernels.h) straight from the stored format. For Q4_0 / Q4_1 the
//     activation rows are first quantized per 32-element block (int16 + scale), so the dot is
//     an integer dot product; Q8_0, F16 and BF16 weights are widened to floats against F32
//     activations. No packing GEMM, no fp32 copy of the weight.
//   larger m (prefill): Q8_0 / Q4_0 / Q4_1 weights meet the same int16 activation blocks as in
//     the GEMV: each thread packs kPanelCols weight rows at a time into an int16 panel and runs
//     the tile kernel (cpu_kernels.h, PanelGemmFn) over every activation row. A vpmaddwd does 16
//     multiply-adds to a ymm FMA's 8, and with its vpaddd it can use all four of Zen 3's vector
//     pipes where FMAs have two: at SmolLM2's prefill shapes (m = 512, one thread, this
//     project's Zen 3) this ran 1.1-1.3x as fast as OpenBLAS's sgemm on the same weight in F32,
//     and the old path dequantized tiles before that sgemm. It also makes prefill and decode
//     compute the same integer dots.
//     F16 / BF16 weights are dequantized tile by tile into an F32 scratch tile and multiplied
//     with cblas_sgemm (OpenBLAS, run at one thread inside the pool's threads); F32 weights go
//     to cblas_sgemm directly.
// y = x * w^T + beta * y throughout; beta = 0 overwrites y (NaNs in y never leak through).
#include <cblas.h>  // cblas_sgemm (OpenBLAS's cblas.h)

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

constexpr int64_t kGemvMaxRows = 8;      // activation rows up to which gemm runs as matrix-vector
constexpr int64_t kGemvGrain = 32;       // fewest weight rows worth handing to a thread
constexpr int64_t kGemvChunkRows = 256;  // weight rows per pass over the activations
constexpr size_t kGemvChunkBytes = size_t(128) << 10;  // ... and at most this many bytes
constexpr size_t kTileBytes = size_t(2) << 20;         // F32 scratch tile of the prefill path

// y[c] = out[c] + beta * y[c] (beta 0: out alone).
void finish_row(const float* out, float beta, float* y, int64_t n) {
  if (beta == 0.0f) {
    std::copy(out, out + n, y);
  } else {
    for (int64_t c = 0; c < n; ++c) y[c] = out[c] + beta * y[c];
  }
}

// n elements of `v` from its first 64-byte aligned one (v grows as needed).
template <class T>
T* aligned_scratch(std::vector<T>& v, size_t n) {
  v.resize(n + 64 / sizeof(T));
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(v.data()) + 63) & ~uintptr_t(63));
}

void sgemm(int64_t m, int64_t n, int64_t k, const float* x, int64_t ldx, const float* w,
           int64_t ldw, float beta, float* y, int64_t ldy) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, x, int(ldx), w,
              int(ldw), beta, y, int(ldy));
}

}  // namespace

void CpuBackend::gemm(const Tensor& x, const Tensor& w, const Tensor& y, float beta) {
  require_tensors(Op::Gemm, {{x, "x", DType::F32}, {y, "y", DType::F32}});
  require_view(Op::Gemm, w, "w");
  PF_CHECK(supports_weight(w.dtype),
           "gemm: w has dtype {}, which the cpu backend cannot multiply by", dtype_name(w.dtype));
  check_gemm_shapes(x, w, y);
  if (w.dtype == DType::F8_E4M3) return gemm_fp8(x, w, y, beta);
  const int64_t m = x.rows, k = x.cols, n = w.rows;
  PF_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX && x.row_stride <= INT32_MAX &&
               w.row_stride <= INT32_MAX && y.row_stride <= INT32_MAX,
           "gemm: shape ({}, {}, {}) exceeds the 32-bit BLAS interface", m, n, k);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // BLAS's lda >= max(1, k) rule makes k == 0 awkward; y = beta * y directly.
    for (int64_t r = 0; r < m; ++r) {
      float* yr = y.f32() + r * y.row_stride;
      for (int64_t c = 0; c < n; ++c) yr[c] = beta == 0.0f ? 0.0f : beta * yr[c];
    }
    return;
  }
  const cpu_kernels::KernelSet& kernels = *kernels_;
  const size_t w_row_bytes = dtype_row_bytes(w.dtype, w.row_stride);
  const auto* w_bytes = static_cast<const uint8_t*>(w.data);

  // Activations in the form the weight's dot wants: int16 blocks, or the F32 rows as they are.
  const bool blocks = cpu_kernels::KernelSet::activations_quantized(w.dtype);
  const int64_t nb = k / kQuantBlockElements;
  std::vector<ActivationBlock>& act = activation_scratch_;
  if (blocks) {
    act.resize(size_t(m * nb));
    auto quantize_rows = [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r)
        kernels.quantize(x.f32() + r * x.row_stride, k, act.data() + r * nb);
    };
    if (m <= kGemvMaxRows)
      quantize_rows(0, m);
    else
      pool_->parallel_for(m, kGemvMaxRows,
                          [&](int64_t begin, int64_t end) { quantize_rows(begin, end); });
  }

  if (m <= kGemvMaxRows) {
    const cpu_kernels::GemvFn gemv = kernels.gemv(w.dtype);
    // With several activation rows, each chunk of weight rows is read once from memory and then
    // from L2 for the other rows: chunks of at most kGemvChunkBytes.
    const int64_t chunk_rows = std::clamp<int64_t>(
        int64_t(kGemvChunkBytes / std::max<size_t>(w_row_bytes, 1)), 4, kGemvChunkRows);
    pool_->parallel_for(n, kGemvGrain, [&](int64_t begin, int64_t end) {
      float out[kGemvChunkRows];
      for (int64_t c0 = begin; c0 < end; c0 += chunk_rows) {
        const int64_t rows = std::min<int64_t>(chunk_rows, end - c0);
        for (int64_t r = 0; r < m; ++r) {
          const void* xr = blocks ? static_cast<const void*>(act.data() + r * nb)
                                  : static_cast<const void*>(x.f32() + r * x.row_stride);
          gemv(w_bytes + size_t(c0) * w_row_bytes, w_row_bytes, rows, xr, k, out);
          finish_row(out, beta, y.f32() + r * y.row_stride + c0, rows);
        }
      }
    });
    return;
  }

  if (blocks) {
    const cpu_kernels::PackPanelFn pack = kernels.pack_panel(w.dtype);
    const int64_t panels = (n + cpu_kernels::kPanelCols - 1) / cpu_kernels::kPanelCols;
    pool_->parallel_for(panels, 1, [&](int64_t begin, int64_t end) {
      // The panel 64-byte aligned: its 32-byte rows are read as memory operands of vpmaddwd,
      // and at malloc's 16-byte alignment half of them would straddle two cache lines.
      thread_local std::vector<int32_t> pair_scratch;
      thread_local std::vector<float> dm_scratch;
      int32_t* pairs = aligned_scratch(pair_scratch, size_t(nb * 16 * cpu_kernels::kPanelCols));
      float* dm = aligned_scratch(dm_scratch, size_t(nb * 2 * cpu_kernels::kPanelCols));
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c0 = p * cpu_kernels::kPanelCols;
        const int cols = int(std::min<int64_t>(cpu_kernels::kPanelCols, n - c0));
        pack(w_bytes + size_t(c0) * w_row_bytes, w_row_bytes, cols, nb, pairs, dm);
        kernels.panel_gemm(act.data(), m, nb, pairs, dm, cols, beta, y.f32() + c0, y.row_stride);
      }
    });
    return;
  }

  // Strides of single-row views can be anything; BLAS only wants them >= the row length.
  auto ld = [](const Tensor& t) { return t.rows == 1 ? t.cols : t.row_stride; };
  if (w.dtype == DType::F32) {
    pool_->parallel_for(n, kGemvGrain, [&](int64_t begin, int64_t end) {
      sgemm(m, end - begin, k, x.f32(), ld(x), w.f32() + begin * w.row_stride, ld(w), beta,
            y.f32() + begin, ld(y));
    });
    return;
  }
  const cpu_kernels::DequantizeFn dequantize = kernels.dequantize(w.dtype);
  const int64_t tile_rows =
      std::max<int64_t>(16, int64_t(kTileBytes / (size_t(k) * sizeof(float))) / 16 * 16);
  pool_->parallel_for(n, kGemvGrain, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> tile;
    tile.resize(size_t(std::min(tile_rows, end - begin) * k));
    for (int64_t t0 = begin; t0 < end; t0 += tile_rows) {
      const int64_t rows = std::min(tile_rows, end - t0);
      for (int64_t r = 0; r < rows; ++r)
        dequantize(w_bytes + size_t(t0 + r) * w_row_bytes, k, tile.data() + r * k);
      sgemm(m, rows, k, x.f32(), ld(x), tile.data(), k, beta, y.f32() + t0, ld(y));
    }
  });
}

}  // namespace parafuse

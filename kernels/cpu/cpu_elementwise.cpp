// CPU backend: the row-wise ops — rmsnorm, rope, swiglu, add, embedding.
//
// Each op walks rows (honouring row_stride) and runs a flat inner loop over the columns that -O2
// can vectorize. Numerics follow the HF PyTorch reference in float32: rmsnorm's mean of squares
// is accumulated in double, RoPE angles are float(pos) * inv_freq in float32 with cos/sin of
// that float angle evaluated in double.
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

void CpuBackend::rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) {
  require_tensors(Op::RmsNorm, {{x, "x", DType::F32}, {y, "y", DType::F32}});
  const bool has_weight = !weight.empty();
  if (has_weight) {
    require_view(Op::RmsNorm, weight, "weight");
    require_dtype(Op::RmsNorm, weight, "weight", DType::F32);
  }
  check_rmsnorm_shapes(x, weight, eps, y);
  const int64_t d = x.cols;
  if (d == 0) return;
  const float* w = has_weight ? weight.f32() : nullptr;
  for (int64_t r = 0; r < x.rows; ++r) {
    const float* xr = x.f32() + r * x.row_stride;
    float* yr = y.f32() + r * y.row_stride;  // may alias xr: the sum is taken first
    double sum_sq = 0.0;
    for (int64_t c = 0; c < d; ++c) sum_sq += double(xr[c]) * double(xr[c]);
    const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(d) + double(eps)));
    if (w) {
      for (int64_t c = 0; c < d; ++c) yr[c] = (xr[c] * inv_rms) * w[c];
    } else {
      for (int64_t c = 0; c < d; ++c) yr[c] = xr[c] * inv_rms;
    }
  }
}

void CpuBackend::rope(const Tensor& x, const Tensor& positions, const Tensor& inv_freq, int n_heads,
                      int head_dim) {
  require_tensors(Op::Rope, {{x, "x", DType::F32},
                             {positions, "positions", DType::I32},
                             {inv_freq, "inv_freq", DType::F32}});
  check_rope_shapes(x, positions, inv_freq, n_heads, head_dim);
  const int half = head_dim / 2;
  for (int64_t r = 0; r < x.rows; ++r) {  // validate every position before rotating anything
    const int32_t pos = positions.i32()[r * positions.row_stride];
    PF_CHECK(pos >= 0, "rope: row {} has negative position {}", r, pos);
  }
  std::vector<float> cos_row(static_cast<size_t>(half)), sin_row(static_cast<size_t>(half));
  const float* freq = inv_freq.f32();
  for (int64_t r = 0; r < x.rows; ++r) {
    const int32_t pos = positions.i32()[r * positions.row_stride];
    for (int i = 0; i < half; ++i) {
      const float angle = float(pos) * freq[i];  // float32, as HF computes it
      cos_row[size_t(i)] = float(std::cos(double(angle)));
      sin_row[size_t(i)] = float(std::sin(double(angle)));
    }
    const float* cs = cos_row.data();
    const float* sn = sin_row.data();
    for (int h = 0; h < n_heads; ++h) {
      float* lo = x.f32() + r * x.row_stride + int64_t(h) * head_dim;  // x[i]
      float* hi = lo + half;                                           // x[i + head_dim/2]
      for (int i = 0; i < half; ++i) {
        const float x0 = lo[i], x1 = hi[i];
        lo[i] = x0 * cs[i] - x1 * sn[i];
        hi[i] = x1 * cs[i] + x0 * sn[i];
      }
    }
  }
}

void CpuBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
  require_tensors(Op::SwiGlu,
                  {{gate, "gate", DType::F32}, {up, "up", DType::F32}, {out, "out", DType::F32}});
  check_swiglu_shapes(gate, up, out);
  for (int64_t r = 0; r < gate.rows; ++r) {
    const float* g = gate.f32() + r * gate.row_stride;
    const float* u = up.f32() + r * up.row_stride;
    float* o = out.f32() + r * out.row_stride;
    for (int64_t c = 0; c < gate.cols; ++c) {
      const float gc = g[c];
      o[c] = gc / (1.0f + std::exp(-gc)) * u[c];  // silu(g) * u
    }
  }
}

void CpuBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
  require_tensors(Op::Add, {{a, "a", DType::F32}, {b, "b", DType::F32}, {out, "out", DType::F32}});
  check_add_shapes(a, b, out);
  for (int64_t r = 0; r < a.rows; ++r) {
    const float* ar = a.f32() + r * a.row_stride;
    const float* br = b.f32() + r * b.row_stride;
    float* o = out.f32() + r * out.row_stride;  // may alias ar or br element for element
    for (int64_t c = 0; c < a.cols; ++c) o[c] = ar[c] + br[c];
  }
}

void CpuBackend::embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                           const Tensor& out) {
  require_tensors(
      Op::Embedding,
      {{table, "table", DType::F32}, {ids, "ids", DType::I32}, {out, "out", DType::F32}});
  check_embedding_shapes(table, ids, vocab_begin, out);
  for (int64_t r = 0; r < out.rows; ++r) {  // validate every id before writing anything
    const int32_t id = ids.i32()[r * ids.row_stride];
    PF_CHECK(id >= 0, "embedding: row {} has negative token id {}", r, id);
  }
  const size_t row_bytes = size_t(out.cols) * sizeof(float);
  for (int64_t r = 0; r < out.rows; ++r) {
    const int32_t id = ids.i32()[r * ids.row_stride];
    float* o = out.f32() + r * out.row_stride;
    const int64_t local = int64_t(id) - vocab_begin;
    if (local < 0 || local >= table.rows) {  // another rank's vocabulary slice
      std::memset(o, 0, row_bytes);
    } else {
      std::memcpy(o, table.f32() + local * table.row_stride, row_bytes);
    }
  }
}

}  // namespace parafuse

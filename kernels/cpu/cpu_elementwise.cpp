// CPU backend: the row-wise ops — rmsnorm, rope, swiglu, add, embedding.
//
// Each op walks rows (honouring row_stride) and runs a flat inner loop over the columns that -O2
// can vectorize; the pool splits the rows (rmsnorm, rope, embedding) or the elements (swiglu,
// add) between its threads, in parts big enough to be worth a thread. Numerics follow the HF
// PyTorch reference in float32: rmsnorm's mean of squares is accumulated in double, RoPE angles are
// float(pos) * inv_freq in float32 with cos/sin of that float angle evaluated in double.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/core/quant.h"  // dequantize_row
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

using namespace cpu_detail;

namespace {

constexpr int64_t kGrainElements = 16384;   // fewest elements worth handing to a thread
constexpr int kSumLanes = 8;                // independent partial sums of rmsnorm's sum of squares
constexpr int64_t kRopeTableGrainRows = 8;  // fewest rows of rope's cos/sin table per thread

int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(cols, 1));
}

// fn(row, col_begin, col_end) over the rows x cols elements, split between the pool's threads
// by flat element index.
template <class Fn>
void for_each_span(ThreadPool& pool, int64_t rows, int64_t cols, Fn&& fn) {
  pool.parallel_for(rows * cols, kGrainElements, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t r = i / cols, c0 = i % cols, c1 = std::min(cols, c0 + (end - i));
      fn(r, c0, c1);
      i += c1 - c0;
    }
  });
}

}  // namespace

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
  pool_->parallel_for(x.rows, row_grain(d), [&](int64_t row_begin, int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* xr = x.f32() + r * x.row_stride;
      float* yr = y.f32() + r * y.row_stride;  // may alias xr: the sum is taken first
      // (kSumLanes partial sums: one chain of dependent double adds waits on each add's latency,
      // and at batch 1 every other thread waits for this row)
      double part[kSumLanes] = {};
      int64_t c = 0;
      for (; c + kSumLanes <= d; c += kSumLanes) {
        for (int j = 0; j < kSumLanes; ++j) part[j] += double(xr[c + j]) * double(xr[c + j]);
      }
      double sum_sq = 0.0;
      for (int j = 0; j < kSumLanes; ++j) sum_sq += part[j];
      for (; c < d; ++c) sum_sq += double(xr[c]) * double(xr[c]);
      const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(d) + double(eps)));
      if (w) {
        for (int64_t c = 0; c < d; ++c) yr[c] = (xr[c] * inv_rms) * w[c];
      } else {
        for (int64_t c = 0; c < d; ++c) yr[c] = xr[c] * inv_rms;
      }
    }
  });
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
  // cos/sin of every row's angles. Every layer of a step rotates the same positions by the same
  // frequencies, so the last call's table is kept and reused while both match (decode at batch 1
  // waited for 32 sin/cos pairs in each of 30 layers).
  const float* freq = inv_freq.f32();
  RopeTable& table = rope_table_;
  bool same = table.freq.size() == size_t(half) &&
              std::equal(freq, freq + half, table.freq.begin()) &&
              table.pos.size() == size_t(x.rows);
  for (int64_t r = 0; same && r < x.rows; ++r)
    same = table.pos[size_t(r)] == positions.i32()[r * positions.row_stride];
  if (!same) {
    table.freq.assign(freq, freq + half);
    table.pos.resize(size_t(x.rows));
    for (int64_t r = 0; r < x.rows; ++r)
      table.pos[size_t(r)] = positions.i32()[r * positions.row_stride];
    table.cos.resize(size_t(x.rows) * size_t(half));
    table.sin.resize(size_t(x.rows) * size_t(half));
    // (a row's sin/cos pairs cost far more than its elements: a few rows per thread suffice)
    pool_->parallel_for(x.rows, kRopeTableGrainRows, [&](int64_t row_begin, int64_t row_end) {
      for (int64_t r = row_begin; r < row_end; ++r) {
        const int32_t pos = table.pos[size_t(r)];
        for (int i = 0; i < half; ++i) {
          const float angle = float(pos) * freq[i];  // float32, as HF computes it
          table.cos[size_t(r * half + i)] = float(std::cos(double(angle)));
          table.sin[size_t(r * half + i)] = float(std::sin(double(angle)));
        }
      }
    });
  }
  pool_->parallel_for(x.rows, row_grain(x.cols), [&](int64_t row_begin, int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const float* cs = table.cos.data() + r * half;
      const float* sn = table.sin.data() + r * half;
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
  });
}

void CpuBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
  require_tensors(Op::SwiGlu,
                  {{gate, "gate", DType::F32}, {up, "up", DType::F32}, {out, "out", DType::F32}});
  check_swiglu_shapes(gate, up, out);
  for_each_span(*pool_, gate.rows, gate.cols, [&](int64_t r, int64_t c0, int64_t c1) {
    const float* g = gate.f32() + r * gate.row_stride;
    const float* u = up.f32() + r * up.row_stride;
    float* o = out.f32() + r * out.row_stride;
    kernels_->silu_mul(g + c0, u + c0, o + c0, c1 - c0);  // silu(g) * u
  });
}

void CpuBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
  require_tensors(Op::Add, {{a, "a", DType::F32}, {b, "b", DType::F32}, {out, "out", DType::F32}});
  check_add_shapes(a, b, out);
  for_each_span(*pool_, a.rows, a.cols, [&](int64_t r, int64_t c0, int64_t c1) {
    const float* ar = a.f32() + r * a.row_stride;
    const float* br = b.f32() + r * b.row_stride;
    float* o = out.f32() + r * out.row_stride;  // may alias ar or br element for element
    for (int64_t c = c0; c < c1; ++c) o[c] = ar[c] + br[c];
  });
}

void CpuBackend::embedding(const Tensor& table, const Tensor& ids, int64_t vocab_begin,
                           const Tensor& out) {
  require_tensors(Op::Embedding, {{ids, "ids", DType::I32}, {out, "out", DType::F32}});
  require_view(Op::Embedding, table, "table");
  PF_CHECK(supports_weight(table.dtype),
           "embedding: table has dtype {}, which the cpu backend does not hold",
           dtype_name(table.dtype));
  check_embedding_shapes(table, ids, vocab_begin, out);
  for (int64_t r = 0; r < out.rows; ++r) {  // validate every id before writing anything
    const int32_t id = ids.i32()[r * ids.row_stride];
    PF_CHECK(id >= 0, "embedding: row {} has negative token id {}", r, id);
  }
  // A table kept in a file format (quantized, half) dequantizes just the rows looked up.
  const size_t table_stride = dtype_row_bytes(table.dtype, table.row_stride);
  pool_->parallel_for(out.rows, row_grain(out.cols), [&](int64_t row_begin, int64_t row_end) {
    for (int64_t r = row_begin; r < row_end; ++r) {
      const int32_t id = ids.i32()[r * ids.row_stride];
      float* o = out.f32() + r * out.row_stride;
      const int64_t local = int64_t(id) - vocab_begin;
      if (local < 0 || local >= table.rows) {  // another rank's vocabulary slice
        std::fill(o, o + out.cols, 0.0f);
      } else {
        dequantize_row(table.dtype, static_cast<const char*>(table.data) + local * table_stride,
                       out.cols, o);
      }
    }
  });
}

}  // namespace parafuse

// Device sampling: one block per row, the CPU rule without sorting.
//
// Greedy is an argmax reduction (lowest id on ties). Temperature sampling needs the k largest
// weights (top-k) and the heaviest prefix reaching top_p of the mass (top-p), both in
// "weight descending, lower id first" order. Weights are monotone in the logit, so each is a
// radix select over the logits' order-preserving 32-bit keys: four passes of a 256-bin
// histogram (counts for top-k, weight mass for top-p) find the boundary key, and an ordered
// block scan over ids finds how many of the tokens at that key (lowest ids first) are kept.
// The draw is the same ordered scan: the first kept id whose running weight exceeds
// u * (kept mass), u = counter_uniform(seed, counter) from kernels/core/random.h. Weights are
// exp((l - max) / T) in fp64 as on the CPU; only summation order differs (a histogram bin and
// a block scan instead of a sequential loop), which matters only at a rounding tie.
#include <climits>
#include <cmath>

#include "kernels/core/error.h"
#include "kernels/core/random.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sample.cuh"

namespace parafuse::cuda {
namespace {

constexpr int kThreads = 512;

// Order-preserving key of a (non-NaN) float: larger float, larger key; -0 maps to +0.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f == 0.0f) f = 0.0f;
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

struct Row {
  const float* logits;
  int64_t vocab;
  float max_logit;
  double inv_t;
  __device__ __forceinline__ double weight(int64_t i) const {
    return exp((double(logits[i]) - double(max_logit)) * inv_t);
  }
};

// Tokens kept so far: key > boundary, or key == boundary and id <= cut (when `on`).
struct Filter {
  bool on = false;
  uint32_t boundary = 0;
  int64_t cut = -1;
  __device__ __forceinline__ bool keeps(int64_t i, uint32_t key) const {
    return !on || key > boundary || (key == boundary && i <= cut);
  }
};

struct Shared {
  double hist[256];
  double warp_total[32];
  double running;
  double above;
  uint32_t prefix;
  long long found;
  long long last;
};

// Inclusive prefix sum over the block in thread order; `total` gets the block's sum.
__device__ double block_inclusive_scan(double v, Shared& sh, double& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double n = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) sh.warp_total[warp] = v;
  __syncthreads();
  double offset = 0.0;
  total = 0.0;
  for (int w = 0; w < kThreads / 32; ++w) {
    if (w < warp) offset += sh.warp_total[w];
    total += sh.warp_total[w];
  }
  __syncthreads();
  return v + offset;
}

// Walking ids upward from running sum `base`, the first id with value > 0 at which the running
// sum reaches `target` (> target when strict, >= otherwise); if none (rounding at the very top),
// the last id with value > 0. value(i) must be >= 0.
template <typename Value>
__device__ int64_t first_crossing(const Row& row, Value value, double base, double target,
                                  bool strict, Shared& sh) {
  if (threadIdx.x == 0) {
    sh.running = base;
    sh.found = LLONG_MAX;
    sh.last = -1;
  }
  __syncthreads();
  for (int64_t c0 = 0; c0 < row.vocab; c0 += kThreads) {
    const int64_t i = c0 + threadIdx.x;
    const double v = i < row.vocab ? value(i) : 0.0;
    double chunk_total;
    const double sum = sh.running + block_inclusive_scan(v, sh, chunk_total);
    if (v > 0.0) {
      if (strict ? sum > target : sum >= target) atomicMin(&sh.found, (long long)i);
      atomicMax(&sh.last, (long long)i);
    }
    __syncthreads();
    if (threadIdx.x == 0) sh.running += chunk_total;
    __syncthreads();
    if (sh.found != LLONG_MAX) break;
  }
  const int64_t result = sh.found != LLONG_MAX ? sh.found : sh.last;
  __syncthreads();
  return result;
}

// Radix select, descending: the key B such that the tokens passing `filter` with key > B hold
// less than `target` (count, or weight mass when `by_mass`) and those with key >= B reach it.
// Returns B; `above` gets the amount held by keys > B.
__device__ uint32_t select_boundary(const Row& row, const Filter& filter, bool by_mass,
                                    double target, double& above, Shared& sh) {
  if (threadIdx.x == 0) {
    sh.prefix = 0;
    sh.above = 0.0;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.hist[b] = 0.0;
    __syncthreads();
    const uint32_t prefix = sh.prefix;
    for (int64_t i = threadIdx.x; i < row.vocab; i += kThreads) {
      const uint32_t key = order_key(row.logits[i]);
      if ((key & mask) != prefix || !filter.keeps(i, key)) continue;
      atomicAdd(&sh.hist[(key >> shift) & 255u], by_mass ? row.weight(i) : 1.0);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = sh.above;
      int chosen = -1, lowest_nonempty = -1;
      for (int b = 255; b >= 0; --b) {
        if (sh.hist[b] <= 0.0) continue;
        lowest_nonempty = b;
        if (acc + sh.hist[b] >= target) {
          chosen = b;
          break;
        }
        acc += sh.hist[b];
      }
      if (chosen < 0) {  // rounding left the total just under target: take the lightest bin
        chosen = lowest_nonempty < 0 ? 0 : lowest_nonempty;
        acc -= lowest_nonempty < 0 ? 0.0 : sh.hist[lowest_nonempty];
      }
      sh.above = acc;
      sh.prefix = prefix | (uint32_t(chosen) << shift);
    }
    mask |= 255u << shift;
    __syncthreads();
  }
  above = sh.above;
  const uint32_t boundary = sh.prefix;
  __syncthreads();
  return boundary;
}

struct ArgBest {
  float value;
  int64_t id;
};

__device__ __forceinline__ ArgBest better(ArgBest a, ArgBest b) {
  return (a.value > b.value || (a.value == b.value && a.id < b.id)) ? a : b;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int64_t stride, int64_t vocab, const SamplingParams* params,
                  SampleResult* results) {
  __shared__ Shared sh;
  __shared__ ArgBest warp_best[kThreads / 32];
  __shared__ long long nan_id;
  const SamplingParams p = params[blockIdx.x];
  const float* l = logits + blockIdx.x * stride;
  SampleResult* out = results + blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Argmax (lowest id on ties) and the first NaN.
  if (threadIdx.x == 0) nan_id = LLONG_MAX;
  __syncthreads();
  ArgBest best{-INFINITY, vocab};
  // kArgUnroll independent loads in flight per thread: the scan is latency-bound otherwise
  // (a 128k vocabulary is 250 dependent rounds at 512 threads).
  constexpr int kArgUnroll = 8;
  for (int64_t base = threadIdx.x; base < vocab; base += int64_t(kThreads) * kArgUnroll) {
    float xs[kArgUnroll];
#pragma unroll
    for (int u = 0; u < kArgUnroll; ++u) {
      const int64_t i = base + int64_t(u) * kThreads;
      xs[u] = i < vocab ? l[i] : -INFINITY;
    }
#pragma unroll
    for (int u = 0; u < kArgUnroll; ++u) {
      const int64_t i = base + int64_t(u) * kThreads;
      if (i >= vocab) continue;
      if (isnan(xs[u])) {
        atomicMin(&nan_id, (long long)i);
      } else {
        best = better(best, ArgBest{xs[u], i});
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const ArgBest other{__shfl_xor_sync(0xffffffffu, best.value, o),
                        __shfl_xor_sync(0xffffffffu, best.id, o)};
    best = better(best, other);
  }
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  for (int w = 0; w < kThreads / 32; ++w) best = better(best, warp_best[w]);
  if (nan_id != LLONG_MAX) {
    if (threadIdx.x == 0) *out = SampleResult{-1, kSampleNaN, nan_id};
    return;
  }
  if (p.temperature == 0.0f) {
    if (threadIdx.x == 0) *out = SampleResult{int32_t(best.id), 0, -1};
    return;
  }
  if (!isfinite(best.value)) {
    if (threadIdx.x == 0) *out = SampleResult{-1, kSampleNonFiniteMax, -1};
    return;
  }
  const Row row{l, vocab, best.value, 1.0 / double(p.temperature)};

  Filter top_k;
  if (p.top_k > 0 && p.top_k < vocab) {
    double above = 0.0;
    const uint32_t b = select_boundary(row, Filter{}, false, double(p.top_k), above, sh);
    top_k.cut = first_crossing(
        row, [&](int64_t i) { return order_key(l[i]) == b ? 1.0 : 0.0; }, above, double(p.top_k),
        false, sh);
    top_k.on = true;
    top_k.boundary = b;
  }
  Filter top_p;
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
      if (top_k.keeps(i, order_key(l[i]))) mass += row.weight(i);
    mass = block_sum(mass, sh.warp_total);
    const double threshold = double(p.top_p) * mass;
    double above = 0.0;
    const uint32_t b = select_boundary(row, top_k, true, threshold, above, sh);
    top_p.cut = first_crossing(
        row,
        [&](int64_t i) {
          const uint32_t key = order_key(l[i]);
          return key == b && top_k.keeps(i, key) ? row.weight(i) : 0.0;
        },
        above, threshold, false, sh);
    top_p.on = true;
    top_p.boundary = b;
  }
  auto kept_weight = [&](int64_t i) {
    const uint32_t key = order_key(l[i]);
    return top_k.keeps(i, key) && top_p.keeps(i, key) ? row.weight(i) : 0.0;
  };
  double mass = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) mass += kept_weight(i);
  mass = block_sum(mass, sh.warp_total);
  const double target = counter_uniform(p.seed, p.counter) * mass;
  const int64_t id = first_crossing(row, kept_weight, 0.0, target, true, sh);
  if (threadIdx.x == 0) *out = SampleResult{int32_t(id), 0, -1};
}

}  // namespace

void launch_sample(const Tensor& logits, const SamplingParams* params, SampleResult* results,
                   cudaStream_t stream) {
  PF_CHECK(logits.dtype == DType::F32, "sample: logits must be F32");
  PF_CHECK(logits.rows <= int64_t(INT32_MAX), "sample: {} rows exceed one grid", logits.rows);
  if (logits.rows == 0) return;
  const int64_t stride = logits.rows <= 1 ? logits.cols : logits.row_stride;
  sample_kernel<<<unsigned(logits.rows), kThreads, 0, stream>>>(
      static_cast<const float*>(logits.data), stride, logits.cols, params, results);
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace parafuse::cuda

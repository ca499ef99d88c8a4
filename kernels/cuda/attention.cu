// Paged-KV-cache attention: kv_store, tiled prefill and split-K decode.
//
// Prefill (sequences with more than kDecodeMaxNew new rows): one block of 256 threads per
// (tile of 16 query rows, query head). Key/value tiles of 32 positions are gathered through the
// block table into shared memory (fp32, rows padded by one float against bank conflicts); the
// scores of the tile go to shared memory, each warp runs the online softmax of two query rows
// (running max and sum, one rescale per tile), and each thread keeps 16 output accumulators in
// registers (16 rows x head_dim <= 4096 outputs over 256 threads). Causality is a per-row key
// bound, so the last tile of a row is masked and later tiles are never loaded.
// Decode (the other rows): one block of 4 warps per (row, head, split); a warp takes one key at
// a time, its lanes split head_dim (lane d, d+32, ...), and keeps its own running max/sum and
// accumulators; the 4 warps merge in shared memory. With n_splits > 1 the keys of a row are cut
// into n_splits ranges whose partial (max, sum, accumulator) go to a workspace and a combine
// kernel merges them: enough blocks for the GPU at batch 1 with long contexts.
#include <cfloat>

#include "kernels/core/error.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common.cuh"

namespace parafuse::cuda {
namespace {

constexpr int kKeyTile = 32;
constexpr int kPrefillThreads = 256;
constexpr int kAccPerThread = kPrefillRows * kMaxHeadDim / kPrefillThreads;  // 16
constexpr int kDecodeWarps = 4;
constexpr int kDecodePerLane = kMaxHeadDim / 32;  // 8
constexpr int kDecodeKeys = 4;                    // keys in flight per warp

__device__ __forceinline__ int64_t slot_of(const AttentionMeta& m, int32_t table_offset,
                                           int64_t pos) {
  return int64_t(m.block_tables[table_offset + pos / m.block_size]) * m.block_size +
         pos % m.block_size;
}

template <typename T>
__global__ void kv_store_kernel(const T* k, int64_t k_stride, const T* v, int64_t v_stride,
                                T* k_cache, int64_t kc_stride, T* v_cache, int64_t vc_stride,
                                int64_t cols, AttentionMeta meta) {
  const int64_t row = meta.kv_rows[2 * blockIdx.x], slot = meta.kv_rows[2 * blockIdx.x + 1];
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    k_cache[slot * kc_stride + c] = k[row * k_stride + c];
    v_cache[slot * vc_stride + c] = v[row * v_stride + c];
  }
}

struct AttnArgs {
  int64_t q_stride, kc_stride, vc_stride, out_stride;
  int group, head_dim;
  float scale;
};

// grid (n_tiles, n_heads), kPrefillThreads threads, dynamic shared memory prefill_smem_bytes().
template <typename T>
__global__ void __launch_bounds__(kPrefillThreads)
    prefill_kernel(const T* q, const T* k_cache, const T* v_cache, T* out, AttentionMeta meta,
                   AttnArgs a) {
  extern __shared__ float smem[];
  const int hd = a.head_dim, ld = hd + 1;
  float* qs = smem;                             // (16, hd), pre-scaled
  float* ks = qs + kPrefillRows * hd;           // (32, hd+1)
  float* vs = ks + kKeyTile * ld;               // (32, hd+1)
  float* ps = vs + kKeyTile * ld;               // (16, 32) scores, then probabilities
  float* row_m = ps + kPrefillRows * kKeyTile;  // running max per row
  float* row_l = row_m + kPrefillRows;          // running sum per row
  float* row_c = row_l + kPrefillRows;          // this tile's rescale factor per row
  int64_t* slots = reinterpret_cast<int64_t*>(row_c + kPrefillRows + 2);  // 8-byte aligned
  const int seq = meta.prefill_tiles[2 * blockIdx.x], i0 = meta.prefill_tiles[2 * blockIdx.x + 1];
  const int q_begin = meta.seqs[4 * seq], n_new = meta.seqs[4 * seq + 1];
  const int n_past = meta.seqs[4 * seq + 2], table = meta.seqs[4 * seq + 3];
  const int rows = min(kPrefillRows, n_new - i0);
  const int h = blockIdx.y, kv_col = (h / a.group) * hd;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  for (int e = tid; e < kPrefillRows * hd; e += kPrefillThreads) {
    const int i = e / hd, d = e % hd;
    qs[e] = i < rows ? to_float(q[int64_t(q_begin + i0 + i) * a.q_stride + int64_t(h) * hd + d]) *
                           a.scale
                     : 0.0f;
  }
  if (tid < kPrefillRows) {
    row_m[tid] = -INFINITY;
    row_l[tid] = 0.0f;
  }
  float acc[kAccPerThread];
#pragma unroll
  for (int r = 0; r < kAccPerThread; ++r) acc[r] = 0.0f;

  const int64_t n_keys = int64_t(n_past) + i0 + rows;  // keys of the tile's last row
  for (int64_t k0 = 0; k0 < n_keys; k0 += kKeyTile) {
    __syncthreads();  // the previous tile's ks/vs/ps are consumed
    if (tid < kKeyTile) slots[tid] = k0 + tid < n_keys ? slot_of(meta, table, k0 + tid) : -1;
    __syncthreads();
    for (int e = tid; e < kKeyTile * hd; e += kPrefillThreads) {
      const int j = e / hd, d = e % hd;
      const int64_t slot = slots[j];
      ks[j * ld + d] = slot >= 0 ? to_float(k_cache[slot * a.kc_stride + kv_col + d]) : 0.0f;
      vs[j * ld + d] = slot >= 0 ? to_float(v_cache[slot * a.vc_stride + kv_col + d]) : 0.0f;
    }
    __syncthreads();
    for (int e = tid; e < kPrefillRows * kKeyTile; e += kPrefillThreads) {
      const int i = e / kKeyTile, j = e % kKeyTile;
      const int64_t key = k0 + j;
      float s = -INFINITY;
      if (i < rows && key <= int64_t(n_past) + i0 + i) {
        s = 0.0f;
        const float* qi = qs + i * hd;
        const float* kj = ks + j * ld;
        for (int d = 0; d < hd; ++d) s = fmaf(qi[d], kj[d], s);
      }
      ps[e] = s;
    }
    __syncthreads();
    for (int i = warp; i < kPrefillRows; i += kPrefillThreads / 32) {
      const float s = ps[i * kKeyTile + lane];
      const float old_m = row_m[i];
      const float new_m = fmaxf(old_m, warp_max(s));
      const float p = s == -INFINITY ? 0.0f : expf(s - new_m);
      const float p_sum = warp_sum(p);
      ps[i * kKeyTile + lane] = p;
      if (lane == 0) {
        const float c = old_m == -INFINITY ? 0.0f : expf(old_m - new_m);
        row_c[i] = c;
        row_l[i] = row_l[i] * c + p_sum;
        row_m[i] = new_m;
      }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kAccPerThread; ++r) {
      const int e = tid + r * kPrefillThreads;
      if (e < kPrefillRows * hd) {
        const int i = e / hd, d = e % hd;
        float v = acc[r] * row_c[i];
        const float* pi = ps + i * kKeyTile;
#pragma unroll 8
        for (int j = 0; j < kKeyTile; ++j) v = fmaf(pi[j], vs[j * ld + d], v);
        acc[r] = v;
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kAccPerThread; ++r) {
    const int e = tid + r * kPrefillThreads;
    if (e < rows * hd) {
      const int i = e / hd, d = e % hd;
      out[int64_t(q_begin + i0 + i) * a.out_stride + int64_t(h) * hd + d] =
          from_float<T>(acc[r] / row_l[i]);
    }
  }
}

size_t prefill_smem_bytes(int hd) {
  return sizeof(float) * (size_t(kPrefillRows) * hd + 2 * size_t(kKeyTile) * (hd + 1) +
                          kPrefillRows * kKeyTile + 3 * kPrefillRows + 2) +
         sizeof(int64_t) * kKeyTile;
}

// grid (n_decode, n_heads, n_splits), kDecodeWarps warps. With n_splits == 1 writes out;
// else writes (max, sum, acc[hd]) per (item, head, split) to `partial`.
template <typename T>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_kernel(const T* q, const T* k_cache, const T* v_cache, T* out, float* partial,
                  AttentionMeta meta, AttnArgs a) {
  __shared__ float warp_m[kDecodeWarps], warp_l[kDecodeWarps];
  __shared__ float warp_acc[kDecodeWarps][kMaxHeadDim];
  const int item = blockIdx.x, h = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
  const int seq = meta.decode_items[2 * item], i = meta.decode_items[2 * item + 1];
  const int q_begin = meta.seqs[4 * seq], n_past = meta.seqs[4 * seq + 2];
  const int table = meta.seqs[4 * seq + 3];
  const int64_t row = int64_t(q_begin) + i, n_keys = int64_t(n_past) + i + 1;
  const int hd = a.head_dim, kv_col = (h / a.group) * hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t chunk = ceil_div(n_keys, n_splits);
  const int64_t k_begin = split * chunk, k_end = min(n_keys, k_begin + chunk);

  float qr[kDecodePerLane], acc[kDecodePerLane];
#pragma unroll
  for (int j = 0; j < kDecodePerLane; ++j) {
    const int d = lane + 32 * j;
    qr[j] = d < hd ? to_float(q[row * a.q_stride + int64_t(h) * hd + d]) * a.scale : 0.0f;
    acc[j] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  // Each warp takes kDecodeKeys consecutive keys at a time and issues all their block-table,
  // K and V loads before using any: the loop is latency-bound, not bandwidth-bound.
  for (int64_t key0 = k_begin + int64_t(warp) * kDecodeKeys; key0 < k_end;
       key0 += int64_t(kDecodeWarps) * kDecodeKeys) {
    T kv[kDecodeKeys][kDecodePerLane], vv[kDecodeKeys][kDecodePerLane];
#pragma unroll
    for (int u = 0; u < kDecodeKeys; ++u) {
      if (key0 + u >= k_end) continue;
      const int64_t slot = slot_of(meta, table, key0 + u);
      const T* kr = k_cache + slot * a.kc_stride + kv_col;
      const T* vr = v_cache + slot * a.vc_stride + kv_col;
#pragma unroll
      for (int j = 0; j < kDecodePerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < hd) {
          kv[u][j] = kr[d];
          vv[u][j] = vr[d];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kDecodeKeys; ++u) {
      if (key0 + u >= k_end) continue;
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < kDecodePerLane; ++j) {
        const int d = lane + 32 * j;
        if (d < hd) s = fmaf(qr[j], to_float(kv[u][j]), s);
      }
      s = warp_sum(s);
      const float new_m = fmaxf(m, s);
      const float c = m == -INFINITY ? 0.0f : expf(m - new_m);
      const float p = expf(s - new_m);
      l = l * c + p;
#pragma unroll
      for (int j = 0; j < kDecodePerLane; ++j) {
        const int d = lane + 32 * j;
        acc[j] = acc[j] * c + (d < hd ? p * to_float(vv[u][j]) : 0.0f);
      }
      m = new_m;
    }
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kDecodePerLane; ++j) {
    const int d = lane + 32 * j;
    if (d < hd) warp_acc[warp][d] = acc[j];
  }
  __syncthreads();
  float block_m = -INFINITY;
  for (int w = 0; w < kDecodeWarps; ++w) block_m = fmaxf(block_m, warp_m[w]);
  float block_l = 0.0f;
  for (int w = 0; w < kDecodeWarps; ++w)
    if (warp_m[w] != -INFINITY) block_l += warp_l[w] * expf(warp_m[w] - block_m);
  float* part =
      partial ? partial + ((int64_t(item) * gridDim.y + h) * n_splits + split) * (hd + 2) : nullptr;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kDecodeWarps; ++w)
      if (warp_m[w] != -INFINITY) o += warp_acc[w][d] * expf(warp_m[w] - block_m);
    if (part) {
      part[2 + d] = o;
    } else {
      out[row * a.out_stride + int64_t(h) * hd + d] = from_float<T>(o / block_l);
    }
  }
  if (part && threadIdx.x == 0) {
    part[0] = block_m;
    part[1] = block_l;
  }
}

// grid (n_decode, n_heads): merges the n_splits partial results of decode_kernel.
template <typename T>
__global__ void decode_combine_kernel(const float* partial, int n_splits, T* out,
                                      AttentionMeta meta, AttnArgs a) {
  const int item = blockIdx.x, h = blockIdx.y, hd = a.head_dim;
  const int seq = meta.decode_items[2 * item], i = meta.decode_items[2 * item + 1];
  const int64_t row = int64_t(meta.seqs[4 * seq]) + i;
  const float* base = partial + (int64_t(item) * gridDim.y + h) * n_splits * (hd + 2);
  // The splits' (max, sum) pairs are loaded once, in parallel, and their weights computed
  // once; then every thread's loads over the splits are independent.
  __shared__ float split_m[kMaxSplits], split_w[kMaxSplits];
  __shared__ float total_l;
  if (threadIdx.x < n_splits) split_m[threadIdx.x] = base[threadIdx.x * (hd + 2)];
  __syncthreads();
  float m = -INFINITY;
  for (int s = 0; s < n_splits; ++s) m = fmaxf(m, split_m[s]);
  __syncthreads();
  if (threadIdx.x < n_splits) {
    const float ms = split_m[threadIdx.x];
    split_w[threadIdx.x] = ms == -INFINITY ? 0.0f : expf(ms - m);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float l = 0.0f;
    for (int s = 0; s < n_splits; ++s)
      if (split_w[s] != 0.0f) l += base[s * (hd + 2) + 1] * split_w[s];
    total_l = l;
  }
  __syncthreads();
  const float l = total_l;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
#pragma unroll 4
    for (int s = 0; s < n_splits; ++s) {
      const float w = split_w[s];
      if (w != 0.0f) o += base[s * (hd + 2) + 2 + d] * w;
    }
    out[row * a.out_stride + int64_t(h) * hd + d] = from_float<T>(o / l);
  }
}

template <typename T>
void run_attention(const Tensor& q, const Tensor& kc, const Tensor& vc, const AttentionMeta& meta,
                   const AttnArgs& args, int n_heads, const Tensor& out, int n_splits,
                   float* workspace, cudaStream_t stream) {
  const T* qp = static_cast<const T*>(q.data);
  const T* kp = static_cast<const T*>(kc.data);
  const T* vp = static_cast<const T*>(vc.data);
  T* op = static_cast<T*>(out.data);
  if (meta.n_tiles > 0) {
    const size_t smem = prefill_smem_bytes(args.head_dim);
    static bool raised = false;  // per instantiation: allow up to the head_dim 256 footprint
    if (!raised) {
      PF_CUDA_CHECK(cudaFuncSetAttribute(prefill_kernel<T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(prefill_smem_bytes(kMaxHeadDim))));
      raised = true;
    }
    prefill_kernel<T>
        <<<dim3(unsigned(meta.n_tiles), unsigned(n_heads)), kPrefillThreads, smem, stream>>>(
            qp, kp, vp, op, meta, args);
    PF_CUDA_CHECK_LAUNCH();
  }
  if (meta.n_decode > 0) {
    const dim3 grid(unsigned(meta.n_decode), unsigned(n_heads), unsigned(n_splits));
    decode_kernel<T><<<grid, kDecodeWarps * 32, 0, stream>>>(
        qp, kp, vp, op, n_splits > 1 ? workspace : nullptr, meta, args);
    PF_CUDA_CHECK_LAUNCH();
    if (n_splits > 1) {
      decode_combine_kernel<T>
          <<<dim3(unsigned(meta.n_decode), unsigned(n_heads)), 128, 0, stream>>>(
              workspace, n_splits, op, meta, args);
      PF_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace

int64_t attention_workspace_floats(const AttentionMeta& meta, const AttentionShape& shape,
                                   int n_splits) {
  if (n_splits <= 1) return 0;
  return int64_t(meta.n_decode) * shape.n_heads * n_splits * (shape.head_dim + 2);
}

void launch_kv_store(const Tensor& k, const Tensor& v, const Tensor& k_cache, const Tensor& v_cache,
                     const AttentionMeta& meta, cudaStream_t stream) {
  PF_CHECK(k.cols == k_cache.cols && v.cols == v_cache.cols && k.cols == v.cols,
           "kv_store: widths differ");
  if (meta.n_kv_rows == 0 || k.cols == 0) return;
  const int threads = int(std::min<int64_t>(1024, ceil_div(k.cols, 32) * 32));  // ~1 per column
  if (k.dtype == DType::BF16) {
    kv_store_kernel<<<unsigned(meta.n_kv_rows), threads, 0, stream>>>(
        static_cast<const bf16*>(k.data), k.row_stride, static_cast<const bf16*>(v.data),
        v.row_stride, static_cast<bf16*>(k_cache.data), k_cache.row_stride,
        static_cast<bf16*>(v_cache.data), v_cache.row_stride, k.cols, meta);
  } else {
    kv_store_kernel<<<unsigned(meta.n_kv_rows), threads, 0, stream>>>(
        static_cast<const float*>(k.data), k.row_stride, static_cast<const float*>(v.data),
        v.row_stride, static_cast<float*>(k_cache.data), k_cache.row_stride,
        static_cast<float*>(v_cache.data), v_cache.row_stride, k.cols, meta);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void launch_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const AttentionMeta& meta, const AttentionShape& shape, const Tensor& out,
                      int n_splits, float* workspace, cudaStream_t stream) {
  PF_CHECK(shape.head_dim > 0 && shape.head_dim <= kMaxHeadDim,
           "attention: head_dim {} is outside [1, {}] on the cuda backend", shape.head_dim,
           kMaxHeadDim);
  PF_CHECK(n_splits >= 1 && n_splits <= kMaxSplits && (n_splits == 1 || workspace != nullptr),
           "attention: {} splits need a workspace (at most {} splits)", n_splits, kMaxSplits);
  PF_CHECK(q.cols == int64_t(shape.n_heads) * shape.head_dim &&
               k_cache.cols == int64_t(shape.n_kv_heads) * shape.head_dim,
           "attention: shapes differ");
  const AttnArgs args{q.row_stride,
                      k_cache.row_stride,
                      v_cache.row_stride,
                      out.row_stride,
                      shape.n_heads / shape.n_kv_heads,
                      shape.head_dim,
                      shape.scale};
  if (q.dtype == DType::BF16) {
    run_attention<bf16>(q, k_cache, v_cache, meta, args, shape.n_heads, out, n_splits, workspace,
                        stream);
  } else {
    run_attention<float>(q, k_cache, v_cache, meta, args, shape.n_heads, out, n_splits, workspace,
                         stream);
  }
}

}  // namespace parafuse::cuda

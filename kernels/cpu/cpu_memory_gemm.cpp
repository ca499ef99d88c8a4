// CPU backend: construction, memory, host transfers and copy.
//
// Host memory is the device memory here, so upload/download are row-by-row memcpy that honour
// the tensor's row_stride (weights in a block format: whole rows of blocks).
#include <cblas.h>  // openblas_set_num_threads (OpenBLAS's cblas.h)

#include <sys/mman.h>  // madvise

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/op_checks.h"

namespace parafuse {

namespace cpu_detail {

// A 2 MiB-aligned block of host memory that large allocations are carved from; freed when the
// backend has moved on to another chunk and the last buffer carved from it is freed (each
// buffer's free function holds a reference).
struct HugePageChunk {
  char* base = nullptr;
  size_t size = 0;
  size_t used = 0;
  ~HugePageChunk() { std::free(base); }
};

void require_dtype(Op op, const Tensor& t, const char* what, DType dtype) {
  PF_CHECK(t.dtype == dtype, "{}: {} has dtype {}, but the cpu backend needs {} here", op_name(op),
           what, dtype_name(t.dtype), dtype_name(dtype));
}

void require_tensors(Op op, std::initializer_list<TensorArg> tensors) {
  for (const TensorArg& t : tensors) require_view(op, t.tensor, t.name);
  for (const TensorArg& t : tensors) require_dtype(op, t.tensor, t.name, t.dtype);
}

}  // namespace cpu_detail

using namespace cpu_detail;

CpuBackend::CpuBackend(int threads) : CpuBackend(CpuBackendOptions{threads, true, "best"}) {}

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : threads_(options.threads), native_weights_(options.native_weights) {
  PF_CHECK(options.threads >= 1, "cpu backend: threads must be >= 1, got {}", options.threads);
  if (options.isa == "best") {
    kernels_ = &cpu_kernels::best_kernels();
  } else {
    kernels_ = cpu_kernels::kernels_named(options.isa.c_str());
    PF_CHECK(kernels_ != nullptr,
             "cpu backend: kernel set '{}' is unknown or this CPU lacks it (best here: {})",
             options.isa, cpu_kernels::best_kernels().isa);
  }
  pool_ = std::make_unique<ThreadPool>(options.threads);
  // The pool's threads call OpenBLAS; its own threads would only compete with them.
  openblas_set_num_threads(1);
}

CpuBackend::~CpuBackend() = default;

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

const char* CpuBackend::isa() const {
  return kernels_->isa;
}

bool CpuBackend::supports(Op op, DType dtype) const {
  if (dtype == DType::F32) return true;
  return op == Op::Copy && dtype == DType::I32;
}

bool CpuBackend::supports_weight(DType dtype) const {
  switch (dtype) {
    case DType::F32:
      return true;
    case DType::F16:
    case DType::BF16:
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::F8_E4M3:
      return native_weights_;
    default:
      return false;
  }
}

// Large buffers in 2 MiB pages. Decode streams every weight and the whole KV cache once per token;
// in 4 KiB pages every page costs a TLB miss and stops the hardware prefetchers at its boundary.
// A plain read stream on the project's 2-core machine: 15 GB/s on one core with 4 KiB pages and
// 20 GB/s with 2 MiB pages (24.5 and 33.5 on two). The weights of a layer come in tensors of a
// few hundred KiB, so allocations of kChunkMinBytes and more are carved one after another from
// chunks of kChunkBytes (or one allocation rounded up to 2 MiB) that madvise asks to back with
// transparent huge pages; where the kernel has them off, the hint does nothing. The engine
// allocates its large buffers once (weights, KV cache) or only ever grows them (scratch), so a
// chunk's space is not reused; a chunk is freed with the last of its buffers.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kChunkBytes = size_t(32) << 20;
constexpr size_t kChunkMinBytes = size_t(64) << 10;
// Under AddressSanitizer every buffer gets its own allocation, so that a read or write past one
// is reported rather than landing in its neighbour in the chunk.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kOwnAllocations = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kOwnAllocations = true;
#else
constexpr bool kOwnAllocations = false;
#endif
#else
constexpr bool kOwnAllocations = false;
#endif

Buffer CpuBackend::alloc(size_t bytes) {
  constexpr size_t kAlign = 64;
  // aligned_alloc wants a multiple of the alignment; a zero-byte request still gets real
  // memory so that the tensor over it is not empty().
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  if (!kOwnAllocations && rounded >= kChunkMinBytes) {
    if (!chunk_ || chunk_->size - chunk_->used < rounded) {
      const size_t size = std::max(kChunkBytes, (rounded + kHugePage - 1) / kHugePage * kHugePage);
      auto chunk = std::make_shared<HugePageChunk>();
      chunk->base = static_cast<char*>(std::aligned_alloc(kHugePage, size));
      PF_CHECK(chunk->base != nullptr, "cpu backend: out of host memory allocating {} bytes", size);
      chunk->size = size;
#ifdef MADV_HUGEPAGE
      (void)::madvise(chunk->base, size, MADV_HUGEPAGE);  // a hint: failure leaves 4 KiB pages
#endif
      chunk_ = std::move(chunk);
    }
    char* p = chunk_->base + chunk_->used;
    chunk_->used += rounded;
    return Buffer(p, bytes, [chunk = chunk_](void*) {});
  }
  void* p = std::aligned_alloc(kAlign, rounded);
  PF_CHECK(p != nullptr, "cpu backend: out of host memory allocating {} bytes", bytes);
  return Buffer(p, bytes, [](void* q) { std::free(q); });
}

namespace {

// Copies a (rows, cols) block row by row between two strided layouts (strides in elements).
void copy_rows(const void* src, int64_t src_stride, void* dst, int64_t dst_stride, int64_t rows,
               int64_t cols, size_t elem) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  for (int64_t r = 0; r < rows; ++r) {
    std::memmove(d + size_t(r * dst_stride) * elem, s + size_t(r * src_stride) * elem,
                 size_t(cols) * elem);
  }
}

}  // namespace

void CpuBackend::upload_f32(const float* host, const Tensor& dst) {
  require_view(Op::Copy, dst, "upload_f32 dst");
  // F16: a KV cache tensor (supports_kv_cache), rounded to halves
  if (dst.dtype != DType::F16) require_dtype(Op::Copy, dst, "upload_f32 dst", DType::F32);
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_f32: null host pointer");
  if (dst.dtype == DType::F16) {
    for (int64_t r = 0; r < dst.rows; ++r)
      kernels_->to_f16(host + r * dst.cols, dst.cols,
                       static_cast<uint16_t*>(dst.data) + r * dst.row_stride);
    return;
  }
  copy_rows(host, dst.cols, dst.data, dst.row_stride, dst.rows, dst.cols, sizeof(float));
}

void CpuBackend::upload_weight(const void* host, const Tensor& dst) {
  require_view(Op::Copy, dst, "upload_weight dst");
  PF_CHECK(supports_weight(dst.dtype), "upload_weight: the cpu backend does not keep {} weights{}",
           dtype_name(dst.dtype), native_weights_ ? "" : " (native weights are off)");
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_weight: null host pointer");
  const size_t row_bytes = dtype_row_bytes(dst.dtype, dst.cols);
  const size_t stride_bytes = dtype_row_bytes(dst.dtype, dst.row_stride);
  for (int64_t r = 0; r < dst.rows; ++r)
    std::memcpy(static_cast<char*>(dst.data) + size_t(r) * stride_bytes,
                static_cast<const char*>(host) + size_t(r) * row_bytes, row_bytes);
}

void CpuBackend::upload_i32(const int32_t* host, const Tensor& dst) {
  require_view(Op::Copy, dst, "upload_i32 dst");
  require_dtype(Op::Copy, dst, "upload_i32 dst", DType::I32);
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_i32: null host pointer");
  copy_rows(host, dst.cols, dst.data, dst.row_stride, dst.rows, dst.cols, sizeof(int32_t));
}

void CpuBackend::download_f32(const Tensor& src, float* host) {
  require_view(Op::Copy, src, "download_f32 src");
  PF_CHECK(host != nullptr || src.numel() == 0, "download_f32: null host pointer");
  if (src.dtype == DType::F32) {
    copy_rows(src.data, src.row_stride, host, src.cols, src.rows, src.cols, sizeof(float));
    return;
  }
  if (src.dtype == DType::F8_E4M3 && supports_weight(src.dtype)) {
    std::vector<float> rows(size_t(src.numel()));
    dequantize_fp8_rows(src, 0, src.rows, rows.data());
    std::copy(rows.begin(), rows.end(), host);
    return;
  }
  // a weight in its file format, or an F16 KV cache
  if (src.dtype == DType::F16 || (src.dtype != DType::I32 && supports_weight(src.dtype))) {
    const size_t stride_bytes = dtype_row_bytes(src.dtype, src.row_stride);
    for (int64_t r = 0; r < src.rows; ++r)
      dequantize_row(src.dtype, static_cast<const char*>(src.data) + size_t(r) * stride_bytes,
                     src.cols, host + r * src.cols);
    return;
  }
  PF_CHECK(src.dtype == DType::I32,
           "download_f32: src has dtype {}; the cpu backend holds F32, I32, F16 and weight "
           "formats only",
           dtype_name(src.dtype));
  for (int64_t r = 0; r < src.rows; ++r) {
    const int32_t* s = src.i32() + r * src.row_stride;
    float* d = host + r * src.cols;
    for (int64_t c = 0; c < src.cols; ++c) d[c] = float(s[c]);
  }
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  require_view(Op::Copy, src, "src");
  require_view(Op::Copy, dst, "dst");
  check_copy_shapes(src, dst);
  PF_CHECK(supports(Op::Copy, src.dtype), "copy: dtype {} is not supported by the cpu backend",
           dtype_name(src.dtype));
  copy_rows(src.data, src.row_stride, dst.data, dst.row_stride, src.rows, src.cols,
            dtype_size(src.dtype));
}

}  // namespace parafuse

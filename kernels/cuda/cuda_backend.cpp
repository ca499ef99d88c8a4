// CudaBackend: construction, memory, host transfers, synchronization, device error reports and
// CUDA graphs. The ops are in cuda_ops.cpp, GEMM plans in cuda_gemm.cpp, kernels in *.cu.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "kernels/core/error.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_common_host.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/gemv.cuh"
#include "kernels/op_checks.h"

namespace parafuse {

int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    if (why) *why = fmt::format("{} ({})", cudaGetErrorString(rc), cudaGetErrorName(rc));
    return 0;
  }
  if (n == 0 && why) *why = "cudaGetDeviceCount found no device";
  return n;
}

CudaBackend::CudaBackend(const CudaBackendOptions& options) : options_(options) {
  std::string why;
  const int n = cuda_device_count(&why);
  PF_CHECK(n > 0, "cuda backend: no CUDA device: {}", why);
  PF_CHECK(options.device >= 0 && options.device < n,
           "cuda backend: device {} does not exist ({} device(s))", options.device, n);
  PF_CUDA_CHECK(cudaSetDevice(options.device));
  PF_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, options.device));
  PF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  pool_ = std::make_shared<cuda::DevicePool>(options.device);
  staging_ = std::make_unique<cuda::PinnedStaging>(*pool_, options.staging_slot_bytes, 4);
  errors_buffer_ = pool_->allocate(sizeof(cuda::DeviceErrors));
  errors_ = static_cast<cuda::DeviceErrors*>(errors_buffer_.data());
  PF_CUDA_CHECK(cudaMemsetAsync(errors_, 0, sizeof(cuda::DeviceErrors), stream_));
  gemm_ = std::make_unique<cuda::GemmPlans>(*pool_, options.gemm_workspace_bytes);
  PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  gemm_.reset();
  staging_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

bool CudaBackend::supports(Op op, DType dtype) const {
  if (op == Op::Sample) return dtype == DType::F32;
  if (op == Op::Copy) return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::I32;
  return dtype == DType::F32 || dtype == DType::BF16;
}

Buffer CudaBackend::alloc(size_t bytes) {
  return pool_->allocate(bytes);
}

void CudaBackend::refuse_in_capture(const char* what) const {
  PF_CHECK(!capturing_,
           "cuda backend: {} is not allowed while a CUDA graph is being captured (it waits for "
           "the device or reads host memory); do it before run_graph()",
           what);
}

namespace {

// Calls fn(sub-view, first element's flat host index, host row pitch) for pieces of `t` whose
// F32 image fits `slot_bytes`: blocks of whole rows, or column pieces of rows that are larger.
template <typename Fn>
void for_each_piece(const Tensor& t, size_t slot_bytes, Fn&& fn) {
  if (t.numel() == 0) return;
  const int64_t row_bytes = t.cols * int64_t(sizeof(float));
  if (row_bytes <= int64_t(slot_bytes)) {
    const int64_t rows_per = std::max<int64_t>(1, int64_t(slot_bytes) / row_bytes);
    for (int64_t r = 0; r < t.rows; r += rows_per) {
      fn(t.rows_view(r, std::min(t.rows, r + rows_per)), r * t.cols);
    }
    return;
  }
  const int64_t cols_per = int64_t(slot_bytes / sizeof(float));
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t c = 0; c < t.cols; c += cols_per) {
      fn(t.rows_view(r, r + 1).cols_view(c, std::min(t.cols, c + cols_per)), r * t.cols + c);
    }
  }
}

// Host rows of a piece (rows x cols, host row pitch `pitch` elements) <-> contiguous bytes.
void gather_host_rows(const void* host, int64_t pitch, int64_t rows, int64_t cols, size_t elem,
                      void* out) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(out) + size_t(r * cols) * elem,
                static_cast<const char*>(host) + size_t(r * pitch) * elem, size_t(cols) * elem);
  }
}
void scatter_host_rows(const void* in, int64_t pitch, int64_t rows, int64_t cols, size_t elem,
                       void* host) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(host) + size_t(r * pitch) * elem,
                static_cast<const char*>(in) + size_t(r * cols) * elem, size_t(cols) * elem);
  }
}

size_t pitch_bytes(const Tensor& t) {
  return size_t(t.rows <= 1 ? t.cols : t.row_stride) * dtype_size(t.dtype);
}

void require_transfer_view(const Tensor& t, const char* what) {
  PF_CHECK(t.rows >= 0 && t.cols >= 0 && (t.rows <= 1 || t.row_stride >= t.cols),
           "{}: bad view ({}, {}) with row_stride {}", what, t.rows, t.cols, t.row_stride);
  PF_CHECK(t.numel() == 0 || t.data != nullptr, "{}: tensor ({}, {}) has no data", what, t.rows,
           t.cols);
}

}  // namespace

void CudaBackend::upload_f32(const float* host, const Tensor& dst) {
  refuse_in_capture("upload_f32");
  require_transfer_view(dst, "upload_f32 dst");
  PF_CHECK(dst.dtype == DType::F32 || dst.dtype == DType::BF16,
           "upload_f32: dst has dtype {}; the cuda backend uploads into F32 or BF16",
           dtype_name(dst.dtype));
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_f32: null host pointer");
  for_each_piece(dst, staging_->slot_bytes(), [&](const Tensor& piece, int64_t at) {
    cuda::PinnedStaging::Slot& slot = staging_->acquire();
    gather_host_rows(host + at, dst.cols, piece.rows, piece.cols, sizeof(float), slot.host);
    const size_t width = size_t(piece.cols) * sizeof(float);
    if (piece.dtype == DType::F32) {
      PF_CUDA_CHECK(cudaMemcpy2DAsync(piece.data, pitch_bytes(piece), slot.host, width, width,
                                      size_t(piece.rows), cudaMemcpyHostToDevice, stream_));
    } else {
      PF_CUDA_CHECK(cudaMemcpyAsync(slot.device, slot.host, width * size_t(piece.rows),
                                    cudaMemcpyHostToDevice, stream_));
      const Tensor staged{slot.device, DType::F32, piece.rows, piece.cols, piece.cols};
      cuda::launch_convert(staged, piece, stream_);
    }
    staging_->release(slot, stream_);
  });
}

namespace {

// dst[0, bytes) = src[0, bytes) with up to `threads` threads (page-cache reads of an mmap'd
// checkpoint fault pages in parallel; one thread alone tops out well below the DMA rate).
void parallel_copy(void* dst, const void* src, size_t bytes, int threads) {
  constexpr size_t kMinPerThread = size_t(1) << 20;
  const int n = int(
      std::max<size_t>(1, std::min<size_t>(size_t(std::max(threads, 1)), bytes / kMinPerThread)));
  if (n == 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
  std::vector<std::thread> workers;
  const size_t per = (bytes + size_t(n) - 1) / size_t(n);
  for (int t = 1; t < n; ++t) {
    const size_t begin = std::min(bytes, size_t(t) * per), end = std::min(bytes, begin + per);
    workers.emplace_back([=] {
      std::memcpy(static_cast<char*>(dst) + begin, static_cast<const char*>(src) + begin,
                  end - begin);
    });
  }
  std::memcpy(dst, src, std::min(bytes, per));
  for (std::thread& w : workers) w.join();
}

}  // namespace

void CudaBackend::upload_weight(const void* host, const Tensor& dst) {
  refuse_in_capture("upload_weight");
  require_transfer_view(dst, "upload_weight dst");
  PF_CHECK(supports_weight(dst.dtype), "upload_weight: the cuda backend does not take {} weights",
           dtype_name(dst.dtype));
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_weight: null host pointer");
  if (dst.numel() == 0) return;
  const size_t elem = dtype_size(dst.dtype);
  const size_t row_bytes = size_t(dst.cols) * elem, slot = staging_->slot_bytes();
  const char* src = static_cast<const char*>(host);
  // Pieces of whole rows that fit a slot; a row longer than a slot goes in column pieces. Each
  // slot is filled while the device still copies the ones before it (4 slots in the ring).
  auto send = [&](const Tensor& piece, const char* from) {
    cuda::PinnedStaging::Slot& s = staging_->acquire();
    const size_t width = size_t(piece.cols) * elem;
    parallel_copy(s.host, from, width * size_t(piece.rows), options_.upload_threads);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(piece.data, pitch_bytes(piece), s.host, width, width,
                                    size_t(piece.rows), cudaMemcpyHostToDevice, stream_));
    staging_->release(s, stream_);
  };
  if (row_bytes <= slot) {
    const int64_t rows_per = std::max<int64_t>(1, int64_t(slot / row_bytes));
    for (int64_t r = 0; r < dst.rows; r += rows_per)
      send(dst.rows_view(r, std::min(dst.rows, r + rows_per)), src + size_t(r) * row_bytes);
    return;
  }
  const int64_t cols_per = int64_t(slot / elem);
  for (int64_t r = 0; r < dst.rows; ++r)
    for (int64_t c = 0; c < dst.cols; c += cols_per)
      send(dst.rows_view(r, r + 1).cols_view(c, std::min(dst.cols, c + cols_per)),
           src + size_t(r) * row_bytes + size_t(c) * elem);
}

void CudaBackend::upload_i32(const int32_t* host, const Tensor& dst) {
  refuse_in_capture("upload_i32");
  require_transfer_view(dst, "upload_i32 dst");
  PF_CHECK(dst.dtype == DType::I32, "upload_i32: dst has dtype {}, expected I32",
           dtype_name(dst.dtype));
  PF_CHECK(host != nullptr || dst.numel() == 0, "upload_i32: null host pointer");
  for_each_piece(dst, staging_->slot_bytes(), [&](const Tensor& piece, int64_t at) {
    cuda::PinnedStaging::Slot& slot = staging_->acquire();
    gather_host_rows(host + at, dst.cols, piece.rows, piece.cols, sizeof(int32_t), slot.host);
    const size_t width = size_t(piece.cols) * sizeof(int32_t);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(piece.data, pitch_bytes(piece), slot.host, width, width,
                                    size_t(piece.rows), cudaMemcpyHostToDevice, stream_));
    staging_->release(slot, stream_);
  });
}

void CudaBackend::download_f32(const Tensor& src, float* host) {
  refuse_in_capture("download_f32");
  require_transfer_view(src, "download_f32 src");
  PF_CHECK(supports(Op::Copy, src.dtype) || src.dtype == DType::F8_E4M3,
           "download_f32: src has dtype {}; the cuda backend holds F32, BF16, I32 and FP8 "
           "weights",
           dtype_name(src.dtype));
  PF_CHECK(host != nullptr || src.numel() == 0, "download_f32: null host pointer");
  for_each_piece(src, staging_->slot_bytes(), [&](const Tensor& piece, int64_t at) {
    cuda::PinnedStaging::Slot& slot = staging_->acquire();
    const size_t width = size_t(piece.cols) * sizeof(float);
    if (piece.dtype == DType::F32) {
      PF_CUDA_CHECK(cudaMemcpy2DAsync(slot.host, width, piece.data, pitch_bytes(piece), width,
                                      size_t(piece.rows), cudaMemcpyDeviceToHost, stream_));
    } else {
      const Tensor staged{slot.device, DType::F32, piece.rows, piece.cols, piece.cols};
      if (piece.dtype == DType::F8_E4M3) {  // a weight: code * its row's scale
        cuda::launch_dequantize_fp8(piece, staged, stream_);
      } else {
        cuda::launch_convert(piece, staged, stream_);
      }
      PF_CUDA_CHECK(cudaMemcpyAsync(slot.host, slot.device, width * size_t(piece.rows),
                                    cudaMemcpyDeviceToHost, stream_));
    }
    staging_->release(slot, stream_);
    PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    scatter_host_rows(slot.host, src.cols, piece.rows, piece.cols, sizeof(float), host + at);
  });
  check_device_errors();
}

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  require_transfer_view(src, "copy src");
  require_transfer_view(dst, "copy dst");
  check_copy_shapes(src, dst);
  PF_CHECK(supports(Op::Copy, src.dtype), "copy: dtype {} is not supported by the cuda backend",
           dtype_name(src.dtype));
  if (src.numel() == 0) return;
  const size_t width = size_t(src.cols) * dtype_size(src.dtype);
  PF_CUDA_CHECK(cudaMemcpy2DAsync(dst.data, pitch_bytes(dst), src.data, pitch_bytes(src), width,
                                  size_t(src.rows), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::convert(const Tensor& src, const Tensor& dst) {
  require_transfer_view(src, "convert src");
  require_transfer_view(dst, "convert dst");
  cuda::launch_convert(src, dst, stream_);
}

void CudaBackend::synchronize() {
  refuse_in_capture("synchronize");
  PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  check_device_errors();
}

void CudaBackend::check_device_errors() {
  cuda::DeviceErrors record{};
  PF_CUDA_CHECK(cudaMemcpyAsync(&record, errors_, sizeof(record), cudaMemcpyDeviceToHost, stream_));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (record.code == 0) return;
  PF_CUDA_CHECK(cudaMemsetAsync(errors_, 0, sizeof(record), stream_));
  switch (record.code) {
    case cuda::kNegativePosition:
      PF_THROW("rope: row {} has negative position {}", record.row, record.value);
    case cuda::kNegativeTokenId:
      PF_THROW("embedding: row {} has negative token id {}", record.row, record.value);
    default:
      PF_THROW("cuda backend: a kernel reported error code {} at row {} (value {})", record.code,
               record.row, record.value);
  }
}

void CudaBackend::after_data_op() {
  if (options_.check_every_op && !capturing_) synchronize();
}

void CudaBackend::retire(Buffer buffer) {
  if (!graphs_.empty() || capturing_) retired_.push_back(std::move(buffer));
}

void CudaBackend::run_graph(const std::string& key, const std::function<void()>& fn) {
  PF_CHECK(!capturing_, "run_graph('{}'): graphs do not nest", key);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    // Relaxed mode: cudaMalloc by the pool (first use of a size) is allowed during capture.
    PF_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    capturing_ = true;
    cudaGraph_t graph = nullptr;
    try {
      fn();
    } catch (...) {
      capturing_ = false;
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    capturing_ = false;
    PF_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t rc = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    PF_CUDA_CHECK(rc);
    it = graphs_.emplace(key, exec).first;
  }
  PF_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void CudaBackend::clear_graphs() {
  PF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& [key, exec] : graphs_) PF_CUDA_CHECK(cudaGraphExecDestroy(exec));
  graphs_.clear();
  retired_.clear();
}

}  // namespace parafuse

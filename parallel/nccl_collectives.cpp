// NcclComm and NcclCollectives (see nccl_collectives.h).
#include "parallel/nccl_collectives.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <utility>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "parallel/detail.h"

namespace parafuse {

// --- NcclComm ---------------------------------------------------------------------------------

std::string NcclComm::wait(std::chrono::milliseconds timeout,
                           const std::function<bool(std::string&)>& done) {
  if (aborted_) return "the communicator was aborted earlier";
  std::string failure;
  const bool finished = poll_until_done(timeout, [&] {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(comm_, &state);
    if (rc != ncclSuccess) {
      failure = fmt::format("ncclCommGetAsyncError failed: {}", ncclGetErrorString(rc));
      return true;
    }
    if (state == ncclInProgress) return false;
    if (state != ncclSuccess) {
      failure = fmt::format("NCCL reported {}", ncclGetErrorString(state));
      return true;
    }
    return done(failure);
  });
  if (!finished) return fmt::format("no completion within {}", describe_timeout(timeout));
  return failure;
}

NcclComm::NcclComm(MPI_Comm group, const std::string& what, std::chrono::milliseconds timeout) {
  int devices = 0;
  const cudaError_t device_rc = cudaGetDeviceCount(&devices);
  if (device_rc != cudaSuccess || devices == 0) {
    cudaGetLastError();
    PF_THROW("NCCL communicator on {}: no CUDA device: {}", what,
             device_rc != cudaSuccess ? cudaGetErrorString(device_rc) : "no device found");
  }
  PF_MPI_CHECK(MPI_Comm_rank(group, &rank_));
  PF_MPI_CHECK(MPI_Comm_size(group, &size_));
  ncclUniqueId id{};
  if (rank_ == 0) PF_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Request req = MPI_REQUEST_NULL;
  PF_MPI_CHECK(MPI_Ibcast(&id, int(sizeof(id)), MPI_BYTE, 0, group, &req));
  mpi_wait_with_timeout(req, timeout, fmt::format("NCCL unique id broadcast on {}", what));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  PF_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
  const std::string failure = wait(timeout, [](std::string&) { return true; });
  if (!failure.empty()) {
    abort();
    PF_THROW("NCCL communicator init on {} (rank {} of {}) failed: {}; communicator aborted", what,
             rank_, size_, failure);
  }
}

NcclComm::~NcclComm() {
  if (!comm_) return;
  if (aborted_) return;
  // A communicator with work still pending would block ncclCommDestroy: abort it instead.
  ncclResult_t state = ncclSuccess;
  if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || state != ncclSuccess) {
    ncclCommAbort(comm_);
  } else {
    ncclCommDestroy(comm_);
  }
}

void NcclComm::abort() {
  if (comm_ && !aborted_) ncclCommAbort(comm_);
  aborted_ = true;
}

// --- NcclCollectives --------------------------------------------------------------------------

namespace {

ncclDataType_t nccl_type(DType t, const std::string& where) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F16:
      return ncclFloat16;
    case DType::I32:
      return ncclInt32;
    default:
      PF_THROW("{}: dtype {} cannot travel through NCCL", where, dtype_name(t));
  }
}

size_t pitch(const Tensor& t) {
  return size_t(t.rows <= 1 ? t.cols : t.row_stride) * dtype_size(t.dtype);
}

// On a non-blocking communicator an NCCL call may return ncclInProgress while the operation is
// still being enqueued in the background (e.g. the first collective, which connects the peers);
// until the communicator's state is ncclSuccess no CUDA work may be issued to its stream (NCCL
// docs, ncclCommGetAsyncError), or an unpack copy would run before the collective. Waits for
// that; on failure aborts the communicator and throws like NcclCollectives::finish().
void wait_enqueued(NcclComm& comm, std::chrono::milliseconds timeout, const char* what,
                   const std::string& name, const std::vector<int>& world_ranks) {
  const std::string failure = comm.wait(timeout, [](std::string&) { return true; });
  if (failure.empty()) return;
  comm.abort();
  PF_THROW(
      "NCCL {} on {} (world ranks {}) failed while enqueuing: {}; communicator aborted (a peer "
      "is stuck or dead)",
      what, name, fmt::join(world_ranks, ","), failure);
}

}  // namespace

NcclCollectives::NcclCollectives(MPI_Comm group, std::string name, std::vector<int> world_ranks,
                                 int device, cudaStream_t stream, std::chrono::milliseconds timeout)
    : name_(std::move(name)),
      world_ranks_(std::move(world_ranks)),
      device_(device),
      stream_(stream),
      timeout_(timeout) {
  PF_CHECK(timeout.count() > 0, "NcclCollectives '{}': timeout must be positive", name_);
  PF_CUDA_CHECK(cudaSetDevice(device));
  host_ = std::make_unique<MpiCollectives>(group, name_, world_ranks_, timeout);
  comm_ = std::make_unique<NcclComm>(group, name_, timeout);
}

NcclCollectives::~NcclCollectives() {
  for (void* p : staging_)
    if (p) cudaFree(p);
  for (void* p : retired_staging_) cudaFree(p);
}

bool NcclCollectives::capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  PF_CUDA_CHECK(cudaStreamIsCapturing(stream_, &status));
  return status != cudaStreamCaptureStatusNone;
}

void* NcclCollectives::staging(size_t bytes, int which) {
  if (staging_bytes_[which] < bytes) {
    if (staging_[which]) retired_staging_.push_back(staging_[which]);  // a graph may use it
    staging_[which] = nullptr;
    PF_CUDA_CHECK(cudaMalloc(&staging_[which], bytes));
    staging_bytes_[which] = bytes;
  }
  return staging_[which];
}

void NcclCollectives::finish(const char* what) {
  // While a graph is being recorded nothing runs yet: the replay's wait_recorded() watches.
  if (capturing()) return;
  const std::string failure = comm_->wait(timeout_, [&](std::string& why) {
    const cudaError_t rc = cudaStreamQuery(stream_);
    if (rc == cudaErrorNotReady) return false;
    if (rc != cudaSuccess) why = fmt::format("CUDA error {}", cudaGetErrorString(rc));
    return true;
  });
  if (failure.empty()) return;
  comm_->abort();
  PF_THROW(
      "NCCL {} on {} (world ranks {}) failed: {}; communicator aborted (a peer is stuck or "
      "dead)",
      what, name_, fmt::join(world_ranks_, ","), failure);
}

void NcclCollectives::all_reduce_sum(const Tensor& t) {
  CollectiveTimer timer(stats_);
  ++stats_.all_reduce_calls;
  const std::string where = fmt::format("all_reduce on {}", name_);
  const ncclDataType_t type = nccl_type(t.dtype, where);
  stats_.bytes += int64_t(t.bytes());
  if (t.numel() == 0) return;
  const bool packed = !t.contiguous() && t.rows > 1;
  const size_t row_bytes = size_t(t.cols) * dtype_size(t.dtype);
  void* data = t.data;
  if (packed) {
    data = staging(t.bytes(), 0);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(data, row_bytes, t.data, pitch(t), row_bytes, size_t(t.rows),
                                    cudaMemcpyDeviceToDevice, stream_));
  }
  PF_NCCL_CHECK(ncclAllReduce(data, data, size_t(t.numel()), type, ncclSum, comm_->get(), stream_));
  wait_enqueued(*comm_, timeout_, "all_reduce", name_, world_ranks_);  // before the unpack
  if (packed) {
    PF_CUDA_CHECK(cudaMemcpy2DAsync(t.data, pitch(t), data, row_bytes, row_bytes, size_t(t.rows),
                                    cudaMemcpyDeviceToDevice, stream_));
  }
  finish("all_reduce");
}

void NcclCollectives::all_gather_rows(const Tensor& local, const Tensor& out) {
  CollectiveTimer timer(stats_);
  ++stats_.all_gather_calls;
  PF_CHECK(local.dtype == out.dtype && local.cols == out.cols && out.rows == local.rows * size(),
           "all_gather on {}: out ({}, {}) {} must be ({} ranks x {} rows, {}) {}", name_, out.rows,
           out.cols, dtype_name(out.dtype), size(), local.rows, local.cols,
           dtype_name(local.dtype));
  const std::string where = fmt::format("all_gather on {}", name_);
  nccl_type(local.dtype, where);
  stats_.bytes += int64_t(out.bytes());
  if (out.numel() == 0) return;
  const size_t row_bytes = size_t(local.cols) * dtype_size(local.dtype);
  const void* send = local.data;
  void* recv = out.data;
  const bool pack_in = !local.contiguous() && local.rows > 1;
  const bool pack_out = !out.contiguous() && out.rows > 1;
  if (pack_in) {
    void* s = staging(local.bytes(), 0);
    PF_CUDA_CHECK(cudaMemcpy2DAsync(s, row_bytes, local.data, pitch(local), row_bytes,
                                    size_t(local.rows), cudaMemcpyDeviceToDevice, stream_));
    send = s;
  }
  if (pack_out) recv = staging(out.bytes(), 1);
  // Bytes as ncclInt8: any dtype, and counts stay exact.
  PF_NCCL_CHECK(ncclAllGather(send, recv, local.bytes(), ncclInt8, comm_->get(), stream_));
  wait_enqueued(*comm_, timeout_, "all_gather", name_, world_ranks_);  // before the unpack
  if (pack_out) {
    PF_CUDA_CHECK(cudaMemcpy2DAsync(out.data, pitch(out), recv, row_bytes, row_bytes,
                                    size_t(out.rows), cudaMemcpyDeviceToDevice, stream_));
  }
  finish("all_gather");
}

void NcclCollectives::broadcast_bytes(void* data, size_t bytes, int root) {
  CollectiveTimer timer(stats_);
  ++stats_.broadcast_calls;
  stats_.bytes += int64_t(bytes);
  host_->broadcast_bytes(data, bytes, root);
}

void NcclCollectives::barrier() {
  CollectiveTimer timer(stats_);
  ++stats_.barrier_calls;
  host_->barrier();
}

std::unique_ptr<Collectives> make_nccl_collectives(MPI_Comm group, std::string name,
                                                   std::vector<int> world_ranks, Backend& backend,
                                                   std::chrono::milliseconds timeout) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  PF_CHECK(cuda != nullptr, "NCCL collectives need the cuda backend, not '{}'", backend.name());
  return std::make_unique<NcclCollectives>(group, std::move(name), std::move(world_ranks),
                                           cuda->device(), cuda->stream(), timeout);
}

}  // namespace parafuse

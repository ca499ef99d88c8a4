// NcclTransport: pipeline send/recv of device tensors with ncclSend / ncclRecv on a
// non-blocking NCCL communicator over the world (see nccl_collectives.h).
//
// Each send or receive is one NCCL group (strided rows are packed into / unpacked from a device
// buffer the request owns) followed by an event; wait() polls the event and the communicator's
// asynchronous error against the timeout, and on expiry aborts the communicator (the only way
// to take back a posted NCCL operation) and throws naming the peer, the tag and the timeout.
#include <fmt/format.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "parallel/detail.h"
#include "parallel/nccl_collectives.h"

namespace parafuse {
namespace {

constexpr const char* kName = "nccl";

size_t pitch(const Tensor& t) {
  return size_t(t.rows <= 1 ? t.cols : t.row_stride) * dtype_size(t.dtype);
}

class NcclTransportRequest : public TransportRequest {
 public:
  NcclTransportRequest(NcclComm& comm, TransportStats& stats, const Tensor& t, int peer,
                       bool is_send, std::string what, cudaStream_t stream,
                       std::chrono::milliseconds timeout)
      : TransportRequest(stats),
        comm_(comm),
        tensor_(t),
        peer_(peer),
        is_send_(is_send),
        what_(std::move(what)),
        stream_(stream),
        timeout_(timeout) {}
  ~NcclTransportRequest() override {
    if (packed_) cudaFree(packed_);
    if (done_) cudaEventDestroy(done_);
  }

  void post() {
    const size_t row_bytes = size_t(tensor_.cols) * dtype_size(tensor_.dtype);
    void* buffer = tensor_.data;
    if (!tensor_.contiguous() && tensor_.rows > 1) {
      PF_CUDA_CHECK(cudaMalloc(&packed_, tensor_.bytes()));
      buffer = packed_;
      if (is_send_) {
        PF_CUDA_CHECK(cudaMemcpy2DAsync(packed_, row_bytes, tensor_.data, pitch(tensor_), row_bytes,
                                        size_t(tensor_.rows), cudaMemcpyDeviceToDevice, stream_));
      }
    }
    PF_NCCL_CHECK(ncclGroupStart());
    if (is_send_) {
      PF_NCCL_CHECK(ncclSend(buffer, tensor_.bytes(), ncclInt8, peer_, comm_.get(), stream_));
    } else {
      PF_NCCL_CHECK(ncclRecv(buffer, tensor_.bytes(), ncclInt8, peer_, comm_.get(), stream_));
    }
    PF_NCCL_CHECK(ncclGroupEnd());
    // A non-blocking communicator may return ncclInProgress before the send/recv is on the
    // stream; no CUDA work may go onto the stream (the unpack copy, the event, the caller's
    // next kernels) until the communicator's state is ncclSuccess (NCCL docs,
    // ncclCommGetAsyncError). Otherwise the event completes before the transfer has run.
    const std::string failure = comm_.wait(timeout_, [](std::string&) { return true; });
    if (!failure.empty()) {
      comm_.abort();
      PF_THROW("{} failed while enqueuing: {}; the NCCL communicator was aborted", what_, failure);
    }
    if (packed_ && !is_send_) {
      PF_CUDA_CHECK(cudaMemcpy2DAsync(tensor_.data, pitch(tensor_), packed_, row_bytes, row_bytes,
                                      size_t(tensor_.rows), cudaMemcpyDeviceToDevice, stream_));
    }
    PF_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    PF_CUDA_CHECK(cudaEventRecord(done_, stream_));
  }

 protected:
  void finish() override {
    if (waited_) return;
    waited_ = true;
    const std::string failure = comm_.wait(timeout_, [&](std::string& why) {
      const cudaError_t rc = cudaEventQuery(done_);
      if (rc == cudaErrorNotReady) return false;
      if (rc != cudaSuccess) why = fmt::format("CUDA error {}", cudaGetErrorString(rc));
      return true;
    });
    if (failure.empty()) return;
    comm_.abort();
    PF_THROW(
        "{} failed: {}; the NCCL communicator was aborted (the peer is stuck or dead, or "
        "never posted the matching {})",
        what_, failure, is_send_ ? "recv" : "send");
  }

 private:
  NcclComm& comm_;
  Tensor tensor_;
  int peer_;
  bool is_send_;
  std::string what_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
  void* packed_ = nullptr;
  cudaEvent_t done_ = nullptr;
  bool waited_ = false;
};

// Runs on the backend's stream, so a send is ordered after the kernels that wrote its tensor
// and a receive before the kernels that read it.
class NcclTransport : public Transport {
 public:
  NcclTransport(MPI_Comm comm, std::chrono::milliseconds timeout, cudaStream_t stream)
      : comm_(comm, "pipeline transport (world)", timeout), timeout_(timeout), stream_(stream) {}
  std::string name() const override { return kName; }
  int size() const override { return comm_.size(); }

 protected:
  std::unique_ptr<TransportRequest> post(const Tensor& t, int peer, uint64_t tag, bool is_send,
                                         const std::string& what) override {
    (void)tag;  // NCCL matches by posting order; the tag only names the message in `what`
    PF_CHECK(!comm_.aborted(), "{}: the NCCL communicator was aborted by an earlier failure", what);
    auto request = std::make_unique<NcclTransportRequest>(comm_, stats_, t, peer, is_send, what,
                                                          stream_, timeout_);
    request->post();
    return request;
  }

 private:
  NcclComm comm_;
  std::chrono::milliseconds timeout_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Transport> make_nccl_transport(MPI_Comm comm, std::chrono::milliseconds timeout,
                                               Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  PF_CHECK(cuda != nullptr, "transport 'nccl' needs the cuda backend, not '{}'", backend.name());
  PF_CUDA_CHECK(cudaSetDevice(cuda->device()));
  return std::make_unique<NcclTransport>(comm, timeout, cuda->stream());
}

}  // namespace parafuse

// MpiTransport: the fallback point-to-point transport, MPI_Isend / MPI_Irecv on a private
// duplicate of the world communicator.
//
// The duplicate keeps our messages apart from anyone else's point-to-point traffic on
// MPI_COMM_WORLD. MPI tags are ints below MPI_TAG_UB (at least 32767, INT_MAX in Open MPI's
// ob1), so the uint64 tag is reduced modulo MPI_TAG_UB + 1: two tags that collide are only a
// problem when both are in flight between the same pair of ranks at once, and MPI keeps such
// messages in posting order anyway. wait() polls MPI_Test to the timeout; a receive that
// expires is cancelled, a send that expires is freed (MPI keeps sending it in the background).
#include <climits>
#include <utility>
#include <vector>

#include "parallel/detail.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"

namespace parafuse {
namespace {

constexpr const char* kName = "mpi";

class MpiTransportRequest : public TransportRequest {
 public:
  MpiTransportRequest(TransportStats& stats, const Tensor& t, int peer, bool is_send,
                      std::string what, std::chrono::milliseconds timeout)
      : TransportRequest(stats),
        tensor_(t),
        peer_(peer),
        is_send_(is_send),
        what_(std::move(what)),
        timeout_(timeout) {}
  ~MpiTransportRequest() override { abandon(); }

  // Posts the operation (the staging buffer, when the tensor is strided, is ours).
  void post(MPI_Comm comm, int mpi_tag) {
    void* buffer = tensor_.data;
    if (needs_packing(tensor_)) {
      staging_.resize(tensor_.bytes());
      if (is_send_) pack_rows(tensor_, staging_.data());
      buffer = staging_.data();
    }
    const int bytes = int(tensor_.bytes());
    if (is_send_) {
      PF_MPI_CHECK(MPI_Isend(buffer, bytes, MPI_BYTE, peer_, mpi_tag, comm, &request_));
    } else {
      PF_MPI_CHECK(MPI_Irecv(buffer, bytes, MPI_BYTE, peer_, mpi_tag, comm, &request_));
    }
  }

 protected:
  void finish() override {
    if (request_ == MPI_REQUEST_NULL) return;  // already waited for
    MPI_Status status;
    int rc = MPI_SUCCESS;
    const bool done = poll_until_done(timeout_, [&] {
      int flag = 0;
      rc = MPI_Test(&request_, &flag, &status);
      return rc != MPI_SUCCESS || flag != 0;
    });
    const std::string& what = what_;
    if (!done) {
      abandon();
      PF_THROW(
          "{} did not complete within {}: the peer is stuck or dead, or never posted the "
          "matching {}",
          what, describe_timeout(timeout_), is_send_ ? "recv" : "send");
    }
    if (rc != MPI_SUCCESS) {
      request_ = MPI_REQUEST_NULL;
      int error_class = 0;
      MPI_Error_class(rc, &error_class);
      PF_CHECK(error_class != MPI_ERR_TRUNCATE,
               "{}: the message sent is larger than the receive buffer", what);
      PF_MPI_CHECK(rc);
    }
    if (!is_send_) {
      int received = 0;
      PF_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &received));
      PF_CHECK(size_t(received) == tensor_.bytes(), "{}: received {} bytes instead", what,
               received);
      if (!staging_.empty()) unpack_rows(staging_.data(), tensor_);
    }
  }

 private:
  // Ends an operation nobody will wait for: a receive is cancelled (bounded), a send is freed and
  // left to complete in the background. Memory MPI may still touch is leaked, not freed.
  void abandon() noexcept {
    if (request_ == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (!is_send_) {
      MPI_Cancel(&request_);
      poll_until_done(std::chrono::milliseconds(100), [&] {
        int flag = 0;
        return MPI_Test(&request_, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag != 0;
      });
    }
    if (request_ != MPI_REQUEST_NULL) {
      MPI_Request_free(&request_);
      // MPI may still read or write it: leaked on purpose.
      if (!staging_.empty()) static_cast<void>(new std::vector<char>(std::move(staging_)));
    }
    request_ = MPI_REQUEST_NULL;
  }

  Tensor tensor_;
  int peer_;
  bool is_send_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  MPI_Request request_ = MPI_REQUEST_NULL;
  std::vector<char> staging_;
};

class MpiTransport : public Transport {
 public:
  MpiTransport(MPI_Comm comm, std::chrono::milliseconds timeout) : timeout_(timeout) {
    PF_CHECK(timeout.count() > 0, "mpi transport: timeout must be positive, got {} ms",
             timeout.count());
    int rank = 0;
    PF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    comm_ = MpiComm(comm, 0, rank);
    PF_MPI_CHECK(MPI_Comm_size(comm_.get(), &size_));
    void* value = nullptr;
    int found = 0;
    PF_MPI_CHECK(MPI_Comm_get_attr(comm_.get(), MPI_TAG_UB, &value, &found));
    tag_ub_ = found ? *static_cast<int*>(value) : 32767;
    PF_CHECK(tag_ub_ >= 32767, "mpi transport: MPI_TAG_UB is {}, below the standard's 32767",
             tag_ub_);
  }

  std::string name() const override { return kName; }
  int size() const override { return size_; }

 protected:
  std::unique_ptr<TransportRequest> post(const Tensor& t, int peer, uint64_t tag, bool is_send,
                                         const std::string& what) override {
    PF_CHECK(t.bytes() <= size_t(INT_MAX), "{}: messages over 2 GiB are not supported", what);
    auto request = std::make_unique<MpiTransportRequest>(stats_, t, peer, is_send, what, timeout_);
    request->post(comm_.get(), int(tag % (uint64_t(tag_ub_) + 1)));
    return request;
  }

 private:
  MpiComm comm_;
  int size_ = 1;
  int tag_ub_ = 32767;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<Transport> make_mpi_transport(MPI_Comm comm, std::chrono::milliseconds timeout) {
  return std::make_unique<MpiTransport>(comm, timeout);
}

}  // namespace parafuse

// UcxTransport: the UCX tag API between pipeline stages.
//
// One UCP context and one worker per process (UCS_THREAD_MODE_SINGLE: only the thread that
// drives the engine touches it). Worker addresses are exchanged over MPI at construction
// (allgather of the lengths, then allgatherv of the addresses) and an endpoint is made to every
// rank, self included, so a send never waits for connection set-up by hand. UCX picks its
// transports (self, sm/posix, tcp on one machine; InfiniBand across nodes) from its own UCX_*
// environment; library code sets none.
//
// UCX tag matching does not look at the sender, so the sender's rank is part of the tag:
// bits 63..40 hold the sender rank, bits 39..0 the caller's tag modulo 2^40, and every receive
// uses the full mask. UCX moves data only while the worker is progressed, so wait() calls
// ucp_worker_progress until the request is done or the timeout passes; then the request is
// cancelled (receives) or released to finish in the background (sends) and an Error names the
// peer, the tag and the timeout.
#include <ucp/api/ucp.h>

#include <spdlog/spdlog.h>

#include <utility>
#include <vector>

#include "parallel/detail.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"

#define PF_UCX_CHECK(call)                                                       \
  do {                                                                           \
    ucs_status_t pf_ucx_status_ = (call);                                        \
    if (pf_ucx_status_ != UCS_OK) {                                              \
      PF_THROW("UCX error in {}: {}", #call, ucs_status_string(pf_ucx_status_)); \
    }                                                                            \
  } while (0)

namespace parafuse {
namespace {

constexpr const char* kName = "ucx";
constexpr int kTagBits = 40;
constexpr uint64_t kTagMask = (uint64_t(1) << kTagBits) - 1;
constexpr ucp_tag_t kFullMask = ~ucp_tag_t(0);
// How long the destructor waits for endpoints to flush and for peers to finish theirs.
constexpr std::chrono::milliseconds kShutdownTimeout{3000};

ucp_tag_t wire_tag(int sender, uint64_t tag) {
  return (ucp_tag_t(sender) << kTagBits) | (tag & kTagMask);
}

// A zero-byte message still needs a valid address.
char g_empty_message = 0;

class UcxTransportRequest : public TransportRequest {
 public:
  UcxTransportRequest(ucp_worker_h worker, TransportStats& stats, const Tensor& t, bool is_send,
                      std::string what, std::chrono::milliseconds timeout)
      : TransportRequest(stats),
        worker_(worker),
        tensor_(t),
        is_send_(is_send),
        what_(std::move(what)),
        timeout_(timeout) {}
  ~UcxTransportRequest() override { abandon(); }

  void post(ucp_ep_h ep, ucp_tag_t tag) {
    void* buffer = tensor_.data;
    if (needs_packing(tensor_)) {
      staging_.resize(tensor_.bytes());
      if (is_send_) pack_rows(tensor_, staging_.data());
      buffer = staging_.data();
    }
    if (buffer == nullptr) buffer = &g_empty_message;
    ucp_request_param_t param{};
    ucs_status_ptr_t status;
    if (is_send_) {
      status = ucp_tag_send_nbx(ep, buffer, tensor_.bytes(), tag, &param);
    } else {
      // Always a request, so ucp_tag_recv_request_test reports the received length (UCX 1.13
      // leaves recv_info.tag_info unfilled when a receive completes at once).
      param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
      status = ucp_tag_recv_nbx(worker_, buffer, tensor_.bytes(), tag, kFullMask, &param);
    }
    if (UCS_PTR_IS_ERR(status)) {
      PF_THROW("{}: UCX error posting it: {}", what(), ucs_status_string(UCS_PTR_STATUS(status)));
    }
    if (status == nullptr) {
      finished_ = true;  // a send completed at once
    } else {
      request_ = status;
    }
  }

 protected:
  void finish() override {
    if (!finished_) {
      ucs_status_t status = UCS_INPROGRESS;
      const bool done = poll_until_done(timeout_, [&] {
        ucp_worker_progress(worker_);
        status = is_send_ ? ucp_request_check_status(request_)
                          : ucp_tag_recv_request_test(request_, &info_);
        return status != UCS_INPROGRESS;
      });
      if (!done) {
        abandon();
        PF_THROW(
            "{} did not complete within {}: the peer is stuck or dead, or never posted the "
            "matching {}",
            what(), describe_timeout(timeout_), is_send_ ? "recv" : "send");
      }
      ucp_request_free(request_);
      request_ = nullptr;
      finished_ = true;
      PF_CHECK(status != UCS_ERR_MESSAGE_TRUNCATED,
               "{}: the message sent is larger than the receive buffer", what());
      PF_CHECK(status == UCS_OK, "{}: UCX error: {}", what(), ucs_status_string(status));
    }
    if (!is_send_ && !checked_) {
      checked_ = true;
      PF_CHECK(info_.length == tensor_.bytes(), "{}: received {} bytes instead", what(),
               info_.length);
      if (!staging_.empty()) unpack_rows(staging_.data(), tensor_);
    }
  }

 private:
  const std::string& what() const { return what_; }

  // Ends an operation nobody will wait for: a receive is cancelled (bounded), a send is left
  // to finish in the background. Memory UCX may still touch is leaked, not freed.
  void abandon() noexcept {
    if (request_ == nullptr) return;
    if (!is_send_) {
      ucp_request_cancel(worker_, request_);
      poll_until_done(std::chrono::milliseconds(100), [&] {
        ucp_worker_progress(worker_);
        return ucp_request_check_status(request_) != UCS_INPROGRESS;
      });
    }
    const bool pending = ucp_request_check_status(request_) == UCS_INPROGRESS;
    ucp_request_free(request_);  // a pending request is released when it completes
    request_ = nullptr;
    finished_ = true;
    checked_ = true;
    if (pending && !staging_.empty()) {
      static_cast<void>(new std::vector<char>(std::move(staging_)));  // leaked on purpose
    }
  }

  ucp_worker_h worker_;
  Tensor tensor_;
  bool is_send_;
  std::string what_;
  std::chrono::milliseconds timeout_;
  void* request_ = nullptr;
  bool finished_ = false, checked_ = false;
  ucp_tag_recv_info_t info_{};
  std::vector<char> staging_;
};

class UcxTransport : public Transport {
 public:
  UcxTransport(MPI_Comm comm, std::chrono::milliseconds timeout) : timeout_(timeout) {
    PF_CHECK(timeout.count() > 0, "ucx transport: timeout must be positive, got {} ms",
             timeout.count());
    PF_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
    comm_ = MpiComm(comm, 0, rank_);
    PF_MPI_CHECK(MPI_Comm_size(comm_.get(), &size_));
    PF_CHECK(size_ < (1 << (64 - kTagBits)),
             "ucx transport: {} ranks exceed the {} the tag "
             "layout holds",
             size_, 1 << (64 - kTagBits));
    try {
      start();
    } catch (...) {
      shutdown(false);  // peers may not get here: no closing barrier
      throw;
    }
  }
  ~UcxTransport() override { shutdown(true); }

  std::string name() const override { return kName; }
  int size() const override { return size_; }

 protected:
  std::unique_ptr<TransportRequest> post(const Tensor& t, int peer, uint64_t tag, bool is_send,
                                         const std::string& what) override {
    auto request =
        std::make_unique<UcxTransportRequest>(worker_, stats_, t, is_send, what, timeout_);
    if (is_send) {
      request->post(endpoints_[size_t(peer)], wire_tag(rank_, tag));
    } else {
      request->post(nullptr, wire_tag(peer, tag));
    }
    return request;
  }

 private:
  void start() {
    ucp_config_t* config = nullptr;
    PF_UCX_CHECK(ucp_config_read(nullptr, nullptr, &config));
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_TAG;
    ucs_status_t status = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    PF_UCX_CHECK(status);

    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    PF_UCX_CHECK(ucp_worker_create(context_, &worker_params, &worker_));

    // Exchange worker addresses: lengths first, then the addresses themselves.
    ucp_address_t* address = nullptr;
    size_t address_length = 0;
    PF_UCX_CHECK(ucp_worker_get_address(worker_, &address, &address_length));
    std::vector<char> mine(reinterpret_cast<char*>(address),
                           reinterpret_cast<char*>(address) + address_length);
    ucp_worker_release_address(worker_, address);
    int my_length = int(mine.size());
    std::vector<int> lengths(size_t(size_), 0), offsets(size_t(size_), 0);
    exchange(
        MPI_Iallgather(&my_length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm_.get(), &pending_));
    for (int r = 1; r < size_; ++r) offsets[r] = offsets[r - 1] + lengths[r - 1];
    std::vector<char> all(size_t(offsets.back() + lengths.back()));
    exchange(MPI_Iallgatherv(mine.data(), my_length, MPI_BYTE, all.data(), lengths.data(),
                             offsets.data(), MPI_BYTE, comm_.get(), &pending_));

    endpoints_.assign(size_t(size_), nullptr);
    for (int r = 0; r < size_; ++r) {
      ucp_ep_params_t ep_params{};
      ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
      ep_params.address = reinterpret_cast<const ucp_address_t*>(all.data() + offsets[r]);
      PF_UCX_CHECK(ucp_ep_create(worker_, &ep_params, &endpoints_[r]));
    }
  }

  // Waits (bounded) for the MPI collective just posted into pending_.
  void exchange(int rc) {
    PF_MPI_CHECK(rc);
    mpi_wait_with_timeout(pending_, timeout_, "ucx transport: worker address exchange");
  }

  // Flush-closes every endpoint, then waits at a non-blocking barrier while still progressing,
  // so no rank destroys its worker while a peer's flush needs it; all bounded by
  // kShutdownTimeout. Never throws.
  void shutdown(bool with_barrier) noexcept {
    if (worker_ != nullptr) {
      std::vector<void*> closing;
      ucp_request_param_t param{};  // no flags: UCP_EP_CLOSE_MODE_FLUSH
      for (ucp_ep_h ep : endpoints_) {
        if (ep == nullptr) continue;
        ucs_status_ptr_t status = ucp_ep_close_nbx(ep, &param);
        if (status != nullptr && !UCS_PTR_IS_ERR(status)) closing.push_back(status);
      }
      endpoints_.clear();
      int finalized = 0;
      MPI_Finalized(&finalized);
      MPI_Request barrier = MPI_REQUEST_NULL;
      bool barrier_posted = false;
      const bool clean = poll_until_done(kShutdownTimeout, [&] {
        ucp_worker_progress(worker_);
        for (size_t i = 0; i < closing.size();) {
          if (ucp_request_check_status(closing[i]) != UCS_INPROGRESS) {
            ucp_request_free(closing[i]);
            closing.erase(closing.begin() + std::ptrdiff_t(i));
          } else {
            ++i;
          }
        }
        if (!closing.empty()) return false;
        if (!with_barrier || finalized || comm_.get() == MPI_COMM_NULL) return true;
        if (!barrier_posted) {
          barrier_posted = true;
          if (MPI_Ibarrier(comm_.get(), &barrier) != MPI_SUCCESS) return true;
        }
        int done = 0;
        return MPI_Test(&barrier, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done != 0;
      });
      if (!clean) {
        spdlog::warn("ucx transport: peers did not finish closing within {}; tearing down anyway",
                     describe_timeout(kShutdownTimeout));
        for (void* request : closing) ucp_request_free(request);
      }
      ucp_worker_destroy(worker_);
      worker_ = nullptr;
    }
    if (context_ != nullptr) {
      ucp_cleanup(context_);
      context_ = nullptr;
    }
  }

  MpiComm comm_;
  int rank_ = 0, size_ = 1;
  std::chrono::milliseconds timeout_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  std::vector<ucp_ep_h> endpoints_;  // one per rank, self included
  MPI_Request pending_ = MPI_REQUEST_NULL;
};

}  // namespace

std::unique_ptr<Transport> make_ucx_transport(MPI_Comm comm, std::chrono::milliseconds timeout) {
  return std::make_unique<UcxTransport>(comm, timeout);
}

}  // namespace parafuse

// The shared half of every transport (checked send/recv, timed wait) and the one factory.
#include "parallel/transport.h"

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include "kernels/core/error.h"
#include "kernels/core/suggest.h"
#include "parallel/detail.h"
#include "parallel/staged_collectives.h"
#if defined(PARAFUSE_HAS_CUDA)
#include "parallel/nccl_collectives.h"  // make_nccl_transport
#endif

namespace parafuse {

void TransportRequest::wait() {
  const auto start = std::chrono::steady_clock::now();
  struct AddTime {  // counted however finish() exits
    TransportStats& stats;
    std::chrono::steady_clock::time_point start;
    ~AddTime() {
      stats.wait_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  } add_time{stats_, start};
  finish();
}

std::unique_ptr<TransportRequest> Transport::send(const Tensor& t, int peer, uint64_t tag) {
  return checked_post(t, peer, tag, true);
}

std::unique_ptr<TransportRequest> Transport::recv(const Tensor& t, int peer, uint64_t tag) {
  return checked_post(t, peer, tag, false);
}

std::unique_ptr<TransportRequest> Transport::checked_post(const Tensor& t, int peer, uint64_t tag,
                                                          bool is_send) {
  const std::string kind = name();
  const std::string what = describe_message(is_send, peer, tag, t.bytes(), kind.c_str());
  PF_CHECK(0 <= peer && peer < size(), "{}: peer {} is outside the job's {} ranks", what, peer,
           size());
  PF_CHECK(t.numel() == 0 || t.data != nullptr, "{}: tensor has no memory", what);
  std::unique_ptr<TransportRequest> request = post(t, peer, tag, is_send, what);
  ++(is_send ? stats_.sends : stats_.recvs);
  stats_.bytes += int64_t(t.bytes());
  return request;
}

std::vector<std::string> transport_kinds() {
#if defined(PARAFUSE_HAS_CUDA)
  return {"mpi", "ucx", "nccl"};
#else
  return {"mpi", "ucx"};
#endif
}

std::unique_ptr<Transport> make_transport(const std::string& kind, MPI_Comm comm,
                                          std::chrono::milliseconds timeout, Backend* backend) {
  const std::vector<std::string> kinds = transport_kinds();
  const bool on_device = backend != nullptr && backend->device_memory();
  if (kind == "nccl") {
#if defined(PARAFUSE_HAS_CUDA)
    PF_CHECK(on_device,
             "transport 'nccl' moves GPU memory and needs the cuda backend (this run's backend is "
             "{}); use \"mpi\" or \"ucx\"",
             backend ? std::string(backend->name()) : std::string("none"));
    return make_nccl_transport(comm, timeout, *backend);
#else
    PF_THROW(
        "transport 'nccl' needs a build with CUDA (configure with -DPARAFUSE_CUDA=ON); this "
        "build has {}",
        fmt::join(kinds, ", "));
#endif
  }
  std::unique_ptr<Transport> host;
  if (kind == "mpi") {
    host = make_mpi_transport(comm, timeout);
  } else if (kind == "ucx") {
    host = make_ucx_transport(comm, timeout);
  } else {
    PF_THROW("unknown transport '{}'{}; this build has {}", kind, did_you_mean(kind, kinds),
             fmt::join(kinds, ", "));
  }
  // mpi and ucx move host memory: device tensors go through host staging buffers.
  return on_device ? make_staged_transport(std::move(host), *backend) : std::move(host);
}

}  // namespace parafuse

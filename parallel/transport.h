// Point-to-point transport of activations between pipeline stages.
//
// Kinds: "mpi" (MPI_Isend/Irecv), "ucx" (UCX tag API over shared memory / TCP / InfiniBand) and,
// in CUDA builds, "nccl" (ncclSend/ncclRecv between GPUs). make_transport() is the one factory:
// the run config validates `parallel.transport` against transport_kinds(), and for a backend
// whose tensors live in device memory it wraps mpi/ucx in host staging (staged_collectives.h)
// or, for nccl, runs on the backend's stream. Sends are non-blocking so a stage can start its
// next micro-batch while the last one is in flight; every wait is bounded by the timeout and
// fails naming the peer and the tag.
//
// send()/recv() are the checked entry points every kind shares (the peer is a rank of the job,
// the tensor has memory, the counters); each kind implements post(). wait() times itself into
// the transport's wait_seconds; each kind implements finish().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include "kernels/backend.h"

namespace parafuse {

struct TransportStats {
  int64_t sends = 0, recvs = 0, bytes = 0;
  double wait_seconds = 0.0;  // inside TransportRequest::wait()
};

class TransportRequest {
 public:
  explicit TransportRequest(TransportStats& stats) : stats_(stats) {}
  virtual ~TransportRequest() = default;
  TransportRequest(const TransportRequest&) = delete;
  TransportRequest& operator=(const TransportRequest&) = delete;
  // Blocks until done; throws an Error naming peer, tag and timeout when it expires. A second
  // call returns at once.
  void wait();

 protected:
  virtual void finish() = 0;  // the kind's wait

 private:
  TransportStats& stats_;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;
  virtual int size() const = 0;  // ranks a peer may be: [0, size)
  // The tensor's memory must stay untouched until the request completes.
  std::unique_ptr<TransportRequest> send(const Tensor& t, int peer, uint64_t tag);
  std::unique_ptr<TransportRequest> recv(const Tensor& t, int peer, uint64_t tag);
  using Stats = TransportStats;
  const Stats& stats() const { return stats_; }
  Stats& stats() { return stats_; }

 protected:
  // Called by send()/recv() after the shared checks; `what` names the message in errors
  // ("send to peer 1 (tag 7, 4096 bytes, ucx)").
  virtual std::unique_ptr<TransportRequest> post(const Tensor& t, int peer, uint64_t tag,
                                                 bool is_send, const std::string& what) = 0;
  Stats stats_;

 private:
  std::unique_ptr<TransportRequest> checked_post(const Tensor& t, int peer, uint64_t tag,
                                                 bool is_send);
};

// The kinds this build has: "mpi", "ucx", and "nccl" in CUDA builds.
std::vector<std::string> transport_kinds();

// A transport of `kind` over `comm` (the world communicator: peers are world ranks).
// Construction is collective over `comm`: every rank makes the same kind at the same point.
// `backend` is the backend whose tensors it moves: null or a host-memory backend sends them as
// they are; a device-memory backend gets "nccl" on its stream, or "mpi"/"ucx" through host
// staging. An unknown kind, or "nccl" without a CUDA backend, is an Error that says what to use.
// Requests must not outlive their transport.
std::unique_ptr<Transport> make_transport(const std::string& kind, MPI_Comm comm,
                                          std::chrono::milliseconds timeout,
                                          Backend* backend = nullptr);

// The kinds behind make_transport (transport_mpi.cpp, transport_ucx.cpp; nccl in
// nccl_collectives.h), for callers that want one by its concrete kind.
std::unique_ptr<Transport> make_mpi_transport(MPI_Comm comm, std::chrono::milliseconds timeout);
std::unique_ptr<Transport> make_ucx_transport(MPI_Comm comm, std::chrono::milliseconds timeout);

}  // namespace parafuse

// Point-to-point transport of activations between pipeline stages.
//
// Implementations: UcxTransport (UCX tag API over shared memory / TCP / InfiniBand, CUDA
// memory where UCX has it; workers exchange addresses over MPI at start-up) and
// MpiTransport (MPI_Isend/Irecv), chosen by the run config's `transport`. Sends are
// non-blocking so a stage can start its next micro-batch while the last one is in flight;
// every wait is bounded by the configured timeout and fails naming the peer and the tag.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <mpi.h>

#include "kernels/backend.h"

namespace parafuse {

class TransportRequest {
 public:
  virtual ~TransportRequest() = default;
  // Blocks until done; throws an Error naming peer, tag and timeout when it expires.
  virtual void wait() = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;
  // The tensor's memory must stay untouched until the request completes.
  virtual std::unique_ptr<TransportRequest> send(const Tensor& t, int peer, uint64_t tag) = 0;
  virtual std::unique_ptr<TransportRequest> recv(const Tensor& t, int peer, uint64_t tag) = 0;
  struct Stats {
    int64_t sends = 0, recvs = 0, bytes = 0;
    double wait_seconds = 0.0;
  };
  const Stats& stats() const { return stats_; }
  Stats& stats() { return stats_; }

 protected:
  Stats stats_;
};

// kind: "mpi", "ucx" or (CUDA builds only) "nccl". `comm` is the world communicator (ranks are
// world ranks).
std::unique_ptr<Transport> make_transport(const std::string& kind, MPI_Comm comm,
                                          std::chrono::milliseconds timeout);

// The two implementations behind make_transport. Construction is collective over `comm` (every
// rank constructs the same kind at the same point). Requests must not outlive their transport.
std::unique_ptr<Transport> make_mpi_transport(MPI_Comm comm, std::chrono::milliseconds timeout);
std::unique_ptr<Transport> make_ucx_transport(MPI_Comm comm, std::chrono::milliseconds timeout);

}  // namespace parafuse

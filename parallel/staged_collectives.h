// Collectives over a device backend's tensors: make_device_collectives picks NCCL or host
// staging. StagedCollectives: device tensors reduced by a host Collectives (e.g.
// MpiCollectives) through host staging buffers; make_staged_transport: the same for a pipeline
// Transport (make_transport uses it for mpi/ucx on a device backend).
//
// For ranks whose tensors live where the host collectives cannot reach them: two ranks on one
// GPU (NCCL refuses two ranks per device), or an MPI without CUDA support. Each call downloads
// the tensor as F32 through the rank's Backend, runs the host collective, and uploads the
// result (converted back to the tensor's dtype, so a BF16 all-reduce sums in F32 and rounds
// once). Slow by design — three hops per call — and exact; counted and timed like any
// Collectives (the host collectives keep their own stats too).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "parallel/collectives.h"
#include "parallel/transport.h"

namespace parafuse {

class MpiCollectives;

// The collectives of a group (`host`, its MPI collectives) over `backend`'s device tensors:
// NCCL on the backend's stream when `device_per_rank` (every rank of every node drives a GPU of
// its own; CUDA builds), else `host` through staging buffers (ranks sharing a GPU, which NCCL
// refuses). `backend` must have device memory; `host` and `backend` must outlive the result.
std::unique_ptr<Collectives> make_device_collectives(MpiCollectives& host, Backend& backend,
                                                     bool device_per_rank,
                                                     std::chrono::milliseconds timeout);

class StagedCollectives : public Collectives {
 public:
  // Both must outlive this object.
  StagedCollectives(Collectives& host, Backend& backend) : host_(host), backend_(backend) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string name() const override { return host_.name() + " (staged through host)"; }
  void all_reduce_sum(const Tensor& t) override;
  void all_gather_rows(const Tensor& local, const Tensor& out) override;
  void broadcast_bytes(void* data, size_t bytes, int root) override;
  void barrier() override;

 private:
  Collectives& host_;
  Backend& backend_;
  std::vector<float> staging_, staging_out_;
};

// A pipeline transport for device tensors over a host transport (mpi or ucx) that cannot
// reach device memory: a send downloads the tensor as F32 into a buffer the request owns and
// sends that; a receive posts the host receive at once and uploads (converting back to the
// tensor's dtype, exact for BF16) when waited on. Both ends must be staged transports.
std::unique_ptr<Transport> make_staged_transport(std::unique_ptr<Transport> host, Backend& backend);

}  // namespace parafuse

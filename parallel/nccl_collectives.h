// NCCL collectives and the NCCL pipeline transport (built only with CUDA).
//
// One communicator per group (a TP group, a PP group, the world): the group's rank 0 calls
// ncclGetUniqueId and broadcasts it over the group's MPI communicator, then every rank calls
// ncclCommInitRankConfig with blocking = 0. Communicators are non-blocking so that no NCCL call
// can hang the process: every call is followed by a wait that polls ncclCommGetAsyncError and
// cudaStreamQuery against the timeout; on expiry (or an asynchronous NCCL error) the
// communicator is aborted with ncclCommAbort and an Error names the collective, the group, its
// world ranks and the timeout (TensorRT-LLM's habit: never leave a hung communicator behind).
// Calls run on the stream given at construction (the CudaBackend's, so they are ordered with
// the compute) and return when complete, like MpiCollectives; each is counted and timed.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"

#define PF_NCCL_CHECK(call)                                                     \
  do {                                                                          \
    const ncclResult_t pf_nccl_rc_ = (call);                                    \
    if (pf_nccl_rc_ != ncclSuccess && pf_nccl_rc_ != ncclInProgress) {          \
      PF_THROW("NCCL error in {}: {}", #call, ncclGetErrorString(pf_nccl_rc_)); \
    }                                                                           \
  } while (0)

namespace parafuse {

// An owning, non-copyable NCCL communicator over the ranks of an MPI communicator.
class NcclComm {
 public:
  // Collective over `group`. `what` names the group in errors ("tp group of stage 0").
  NcclComm(MPI_Comm group, const std::string& what, std::chrono::milliseconds timeout);
  ~NcclComm();  // ncclCommAbort if it failed or timed out, else ncclCommDestroy
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  ncclComm_t get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool aborted() const { return aborted_; }
  // Aborts the communicator (idempotent); later calls on it fail.
  void abort();
  // Polls until the communicator is idle (async error ncclSuccess) and `done()` holds, or the
  // deadline passes; returns an empty string on success, else why it failed.
  // `done(why)` returns true when finished (setting `why` on a failure).
  std::string wait(std::chrono::milliseconds timeout,
                   const std::function<bool(std::string&)>& done);

 private:
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
  bool aborted_ = false;
};

class NcclCollectives : public Collectives {
 public:
  // `world_ranks` and `name` appear in errors; `stream` is where the collectives run (the
  // CudaBackend's stream); `device` is this rank's GPU.
  NcclCollectives(MPI_Comm group, std::string name, std::vector<int> world_ranks, int device,
                  cudaStream_t stream, std::chrono::milliseconds timeout);
  ~NcclCollectives() override;
  int rank() const override { return comm_->rank(); }
  int size() const override { return comm_->size(); }
  std::string name() const override { return name_; }
  // F32 or BF16 device tensors (strided rows are packed through a device staging buffer).
  void all_reduce_sum(const Tensor& t) override;
  void all_gather_rows(const Tensor& local, const Tensor& out) override;
  // Host bytes / a barrier: over the group's MPI communicator (NCCL moves device memory only).
  void broadcast_bytes(void* data, size_t bytes, int root) override;
  void barrier() override;
  // NCCL calls are captured into CUDA graphs (the stream captures: enqueue only; see
  // Collectives::records_in_graphs); wait_recorded is the watchdog of a replay.
  bool records_in_graphs() const override { return true; }
  void wait_recorded(const char* what) override { finish(what); }

 private:
  // Device staging that stays where it is while a graph may hold it: a larger one is added,
  // the old ones are kept until destruction.
  void* staging(size_t bytes, int which);
  bool capturing() const;
  // Waits for the call just issued; on failure aborts the communicator and throws.
  void finish(const char* what);

  std::string name_;
  std::vector<int> world_ranks_;
  int device_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<NcclComm> comm_;
  std::unique_ptr<MpiCollectives> host_;
  void* staging_[2] = {nullptr, nullptr};
  size_t staging_bytes_[2] = {0, 0};
  std::vector<void*> retired_staging_;
};

// NcclCollectives on a CudaBackend's device and stream (`backend` must be one).
std::unique_ptr<Collectives> make_nccl_collectives(MPI_Comm group, std::string name,
                                                   std::vector<int> world_ranks, Backend& backend,
                                                   std::chrono::milliseconds timeout);

// Pipeline transport over NCCL send/recv on a world communicator, on the CUDA backend's stream
// (make_transport("nccl") calls it; `backend` must be a CudaBackend). NCCL matches messages
// between a pair of ranks by posting order, not by tag (tags only name messages in errors),
// which is how the engine posts them.
std::unique_ptr<Transport> make_nccl_transport(MPI_Comm comm, std::chrono::milliseconds timeout,
                                               Backend& backend);

}  // namespace parafuse

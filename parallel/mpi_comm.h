// MPI wrappers: the check macro, an owning communicator, the process-wide MPI session, and
// MpiCollectives (Collectives over an MPI communicator, for CPU tensors).
//
// Every blocking call is issued non-blocking (MPI_I*) and polled against a deadline, so a
// peer that died or never arrived turns into an Error naming the collective, the group's ranks
// and the timeout instead of a hang; main() then calls MPI_Abort to take the job down.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <mpi.h>

#include "kernels/core/error.h"
#include "parallel/collectives.h"
#include "parallel/process_grid.h"

#define PF_MPI_CHECK(call)                                                                   \
  do {                                                                                       \
    int pf_mpi_rc_ = (call);                                                                 \
    if (pf_mpi_rc_ != MPI_SUCCESS) {                                                         \
      char pf_mpi_msg_[MPI_MAX_ERROR_STRING];                                                \
      int pf_mpi_len_ = 0;                                                                   \
      MPI_Error_string(pf_mpi_rc_, pf_mpi_msg_, &pf_mpi_len_);                               \
      PF_THROW("MPI error in {}: {}", #call, std::string(pf_mpi_msg_, size_t(pf_mpi_len_))); \
    }                                                                                        \
  } while (0)

namespace parafuse {

// MPI_Init_thread / MPI_Finalize for the process (RAII; one per process). A session made
// when MPI is already up (by another session or a host program) neither initializes nor
// finalizes it.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Local rank/size: from the launcher's environment, else an MPI shared-memory split.
  LocalRank local() const;
  // Ends every rank of the job now (after an error on this rank).
  [[noreturn]] static void abort(int code);

 private:
  int rank_ = 0, size_ = 1;
  bool initialized_here_ = false;
};

// Owns an MPI communicator made by MPI_Comm_split (never MPI_COMM_WORLD itself).
class MpiComm {
 public:
  MpiComm() = default;
  // The ranks with the same `color` form a group, ordered by `key`.
  MpiComm(MPI_Comm parent, int color, int key);
  MpiComm(MpiComm&& o) noexcept : comm_(o.comm_) { o.comm_ = MPI_COMM_NULL; }
  MpiComm& operator=(MpiComm&& o) noexcept;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
  ~MpiComm();
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

class MpiCollectives : public Collectives {
 public:
  // `name` (e.g. "tp group of stage 1") and `world_ranks` appear in error messages.
  MpiCollectives(MPI_Comm comm, std::string name, std::vector<int> world_ranks,
                 std::chrono::milliseconds timeout);
  // Reaps collectives abandoned by a timeout (bounded; see below).
  ~MpiCollectives() override;
  MpiCollectives(const MpiCollectives&) = delete;
  MpiCollectives& operator=(const MpiCollectives&) = delete;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  void all_reduce_sum(const Tensor& t) override;  // F32 tensors (contiguous or strided rows)
  void all_gather_rows(const Tensor& local, const Tensor& out) override;
  void broadcast_bytes(void* data, size_t bytes, int root) override;
  void barrier() override;
  MPI_Comm comm() const { return comm_; }
  const std::vector<int>& world_ranks() const { return world_ranks_; }

 private:
  // Polls `req` to the call's deadline; on expiry parks it in abandoned_ (with the staging
  // buffers when `uses_staging`) and throws naming `what`, the group and the timeout.
  void wait(MPI_Request& req, const char* what, std::chrono::steady_clock::time_point deadline,
            bool uses_staging = false);
  void reap_abandoned();
  // Who reached this call, for the timeout's message. A rank whose wait in call #n passes
  // notice_delay_ tells the other ranks of the group "I am in #n" (a small point-to-point
  // message on a tag of its own); a rank whose wait times out announces itself too, gathers the
  // notices for a short grace, and names the ranks that sent none: the ones that did not arrive.
  // Fast calls send nothing, so this costs nothing in the steady state.
  void announce_arrival();
  void drain_notices();
  std::string describe_missing() const;
  uint64_t sequence_ = 0;                // calls made on this group (every rank counts alike)
  uint64_t announced_ = 0;               // the last call this rank announced
  std::vector<uint64_t> peer_sequence_;  // the last call each group rank announced
  struct Notice {
    MPI_Request request;
    std::unique_ptr<uint64_t> value;  // the send buffer, alive until the send completes
  };
  std::vector<Notice> notices_;  // sends in flight
  int notice_tag_ = 0;
  std::chrono::milliseconds notice_delay_{0};
  // MPI cannot cancel or free a pending collective, so one that timed out stays posted: it
  // completes if the late peer ever posts the matching call (tests do), else it dies with the
  // job (main() aborts after an Error). Its staging memory lives here until then.
  struct Abandoned {
    MPI_Request request;
    std::vector<char> staging, staging_out;
  };
  std::vector<Abandoned> abandoned_;
  std::vector<char> staging_, staging_out_;  // packs strided tensors
  MPI_Comm comm_;
  std::string name_;
  std::vector<int> world_ranks_;
  std::chrono::milliseconds timeout_;
  int rank_ = 0, size_ = 1;
};

// Polls `req` until it completes or `timeout` passes; then throws "<what> did not complete
// within <timeout>: a peer is stuck or dead", leaving `req` active: the caller cancels or frees
// it (point-to-point) or keeps it (a collective cannot be cancelled).
void mpi_wait_with_timeout(MPI_Request& req, std::chrono::milliseconds timeout,
                           const std::string& what);

}  // namespace parafuse

// Collective operations over a group of ranks (one TP group, one PP group, or the world).
//
// Implementations: MpiCollectives (CPU tensors, any MPI) and NcclCollectives (device tensors).
// Every call is counted and timed, because the all-reduce count per token is the figure FFN
// Fusion changes and the one we publish; every blocking call is bounded by a timeout and fails
// loudly naming the collective and the ranks (never a silent hang).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "kernels/backend.h"

namespace parafuse {

struct CollectiveStats {
  int64_t all_reduce_calls = 0;
  int64_t all_gather_calls = 0;
  int64_t broadcast_calls = 0;
  int64_t barrier_calls = 0;
  int64_t bytes = 0;
  double seconds = 0.0;  // wall time inside collective calls
  void reset() { *this = CollectiveStats{}; }
};

// Adds the wall time of one collective call (its scope) to the stats, however it exits.
class CollectiveTimer {
 public:
  explicit CollectiveTimer(CollectiveStats& stats) : stats_(stats) {}
  ~CollectiveTimer() {
    stats_.seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  std::chrono::steady_clock::time_point start() const { return start_; }
  CollectiveTimer(const CollectiveTimer&) = delete;
  CollectiveTimer& operator=(const CollectiveTimer&) = delete;

 private:
  CollectiveStats& stats_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;
  // In place: t = sum over ranks of t.
  virtual void all_reduce_sum(const Tensor& t) = 0;
  // out (size * local.rows, cols) = local of every rank, stacked by rank along rows.
  virtual void all_gather_rows(const Tensor& local, const Tensor& out) = 0;
  // Bytes from `root` to every rank (host memory).
  virtual void broadcast_bytes(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Whether all_reduce_sum and all_gather_rows can be recorded into a CUDA graph on the
  // backend's stream (NCCL: while the stream captures they only enqueue, and the watchdog wait
  // moves to wait_recorded()). Collectives that wait on the host cannot.
  virtual bool records_in_graphs() const { return false; }
  // After a replayed graph holding this group's collectives: waits, under the watchdog's
  // timeout, until the device has finished them (a stuck peer aborts and throws as a call
  // would). `what` names the graph in the error.
  virtual void wait_recorded(const char* what) { (void)what; }
  const CollectiveStats& stats() const { return stats_; }
  CollectiveStats& stats() { return stats_; }

 protected:
  CollectiveStats stats_;
};

}  // namespace parafuse

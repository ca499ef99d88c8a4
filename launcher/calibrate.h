// `parafuse predict --calibrate`: measures this machine the way the predictor models a device
// and writes a cluster YAML (runtime/predict/cluster.h) that `predict --cluster` reads back.
// Every rank of an mpirun job measures at the same time (a barrier before each timed run; the
// median of 5 runs, not the best), so ranks sharing cores or memory channels see the contention
// a run of that many ranks sees; the file is for that rank count.
//   memory bandwidth   the rate the backend's decode product reads weights: a 1-row GEMM
//                      through 32 weights of 576x1536 f32 (112 MiB), mean over ranks; a plain
//                      streaming read of 256 MiB is printed beside it
//   GEMM rate          the backend's GEMM (cpu: OpenBLAS, one thread per rank) at a decode-like
//                      shape, mean over ranks
//   overlap            compute_memory_overlap: how much of the shorter of reads and compute a
//                      32-row pass through those weights hides, from its time against the
//                      1-row pass (reads) and the in-cache GEMM rate (compute)
//   kernel launch      the time of a tiny op (RMSNorm of one 576-wide row): the fixed cost of
//                      one op of a decode step
//   all-reduce         parafuse's own MPI collectives. Latency: the time a decode-row all-reduce
//                      (576 floats) adds to a loop of 4 MiB reads on every rank, i.e. as a step
//                      meets it (ranks arrive apart; ranks sharing cores get descheduled), which
//                      can be far above the back-to-back time also printed; bus bandwidth
//                      (nccl-tests' definition) from the median 4 MiB all-reduce
#pragma once

#include <string>

#include "runtime/predict/cluster.h"

namespace parafuse {

struct LaunchContext;

struct CalibrateOptions {
  std::string backend = "cpu";
  std::string out_path;  // written by rank 0
  bool quiet = false;
};

// Measures, writes `out_path` on rank 0 and returns the spec (every rank).
ClusterSpec calibrate_cluster(LaunchContext& launch, const CalibrateOptions& options);

}  // namespace parafuse

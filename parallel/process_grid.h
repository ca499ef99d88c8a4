// All rank arithmetic in one place (TensorRT-LLM's WorldConfig): world rank <-> (pp stage,
// tp rank), which ranks form each TP and PP group, and which local device a rank drives.
// Pure functions of (world size, tp, pp, local rank), unit-tested without MPI; the MPI
// communicators for the groups are built from these numbers (parallel/mpi_comm.h).
#pragma once

#include <string>
#include <vector>

namespace parafuse {

class ProcessGrid {
 public:
  // Throws a clear Error when tp * pp != world_size or any size is < 1.
  ProcessGrid(int world_size, int world_rank, int tp, int pp, int local_rank = 0,
              int local_size = 1);

  int world_size() const { return world_size_; }
  int world_rank() const { return world_rank_; }
  int tp() const { return tp_; }
  int pp() const { return pp_; }
  int tp_rank() const { return world_rank_ % tp_; }
  int pp_stage() const { return world_rank_ / tp_; }
  bool is_first_stage() const { return pp_stage() == 0; }
  bool is_last_stage() const { return pp_stage() == pp_ - 1; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // Device this rank drives: local rank modulo the devices the node has.
  int device(int devices_per_node) const;

  // World rank of (stage, tp rank).
  int rank_of(int stage, int tp_rank) const { return stage * tp_ + tp_rank; }
  // World ranks of this rank's TP group (same stage).
  std::vector<int> tp_group() const;
  // Neighbours in the pipeline (same tp rank), -1 at the ends.
  int prev_stage_rank() const { return is_first_stage() ? -1 : rank_of(pp_stage() - 1, tp_rank()); }
  int next_stage_rank() const { return is_last_stage() ? -1 : rank_of(pp_stage() + 1, tp_rank()); }
  // The rank that samples and reports: tp rank 0 of the last stage.
  int sampler_rank() const { return rank_of(pp_ - 1, 0); }

  std::string describe() const;  // "rank 3/8: stage 1/2, tp 1/4, local rank 3/8"

 private:
  int world_size_, world_rank_, tp_, pp_, local_rank_, local_size_;
};

// This rank's place on its node, and where that came from: "OMPI_COMM_WORLD_LOCAL_RANK",
// "SLURM_LOCALID", "MPI shared-memory split" (MpiSession::local() when the launcher sets
// neither), or "" (a lone process, or the environment does not say).
struct LocalRank {
  int rank = 0;
  int size = 1;
  std::string source;
  bool from_environment() const {
    return source == "OMPI_COMM_WORLD_LOCAL_RANK" || source == "SLURM_LOCALID";
  }
};

// What the launcher told this process through its environment. This is the one place parafuse
// reads launcher variables (Open MPI's OMPI_COMM_WORLD_*, PMIx's PMIX_RANK, PMI's PMI_*,
// Slurm's SLURM_*); everything else asks the result.
struct LaunchEnvironment {
  // "Open MPI" (mpirun), "Slurm (PMIx)" / "PMIx" (srun --mpi=pmix, prterun), "PMI"
  // (srun --mpi=pmi2, Hydra), or "" when started alone: then MPI is not started at all.
  std::string launcher;
  int world_size = 0;  // ranks in the job when the environment says (0: it does not)
  // Local rank and size from OMPI_COMM_WORLD_LOCAL_RANK/_SIZE, else SLURM_LOCALID with
  // SLURM_NTASKS_PER_NODE ("4" or "4(x2)"; SLURM_TASKS_PER_NODE when every node has the same
  // count), else {0, 1, ""}: MpiSession::local() then asks MPI.
  LocalRank local;
  bool under_launcher() const { return !launcher.empty(); }
};

// Reads the variables above; a malformed value (OMPI_COMM_WORLD_LOCAL_RANK=two) is an Error
// naming it.
LaunchEnvironment read_launch_environment();

}  // namespace parafuse

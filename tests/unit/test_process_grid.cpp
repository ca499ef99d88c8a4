// ProcessGrid rank arithmetic without MPI: every (world, tp, pp) layout up to 16 ranks checked
// against an independent description (stage-major, tp fastest), the groups and pipeline
// neighbours, the errors a user gets for a grid that does not fit the job, and the launcher
// environment (Open MPI, Slurm) that gives the local rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kernels/core/error.h"
#include "parallel/process_grid.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ProcessGrid, EveryLayoutUpTo16Ranks) {
  for (int world = 1; world <= 16; ++world) {
    for (int tp = 1; tp <= world; ++tp) {
      if (world % tp != 0) continue;
      const int pp = world / tp;
      std::set<std::pair<int, int>> seen;
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE(testing::Message() << "world " << world << " tp " << tp << " rank " << rank);
        ProcessGrid g(world, rank, tp, pp);
        // Stage-major numbering: ranks [s*tp, (s+1)*tp) form stage s.
        const int stage = rank / tp, tp_rank = rank - stage * tp;
        EXPECT_EQ(g.tp_rank(), tp_rank);
        EXPECT_EQ(g.pp_stage(), stage);
        EXPECT_EQ(g.rank_of(stage, tp_rank), rank);
        EXPECT_TRUE(seen.insert({stage, tp_rank}).second);
        EXPECT_EQ(g.is_first_stage(), stage == 0);
        EXPECT_EQ(g.is_last_stage(), stage == pp - 1);
        EXPECT_EQ(g.sampler_rank(), (pp - 1) * tp);

        std::vector<int> tp_group = g.tp_group();
        ASSERT_EQ(int(tp_group.size()), tp);
        for (int t = 0; t < tp; ++t) EXPECT_EQ(tp_group[t], stage * tp + t);

        EXPECT_EQ(g.prev_stage_rank(), stage == 0 ? -1 : rank - tp);
        EXPECT_EQ(g.next_stage_rank(), stage == pp - 1 ? -1 : rank + tp);
        // Neighbours agree with each other: my next's prev is me.
        if (g.next_stage_rank() >= 0) {
          EXPECT_EQ(ProcessGrid(world, g.next_stage_rank(), tp, pp).prev_stage_rank(), rank);
        }
      }
      EXPECT_EQ(int(seen.size()), world);
    }
  }
}

TEST(ProcessGrid, Tp4Pp2Example) {
  ProcessGrid g(8, 5, 4, 2, 5, 8);
  EXPECT_EQ(g.pp_stage(), 1);
  EXPECT_EQ(g.tp_rank(), 1);
  EXPECT_THAT(g.tp_group(), ElementsAre(4, 5, 6, 7));
  EXPECT_EQ(g.prev_stage_rank(), 1);
  EXPECT_EQ(g.next_stage_rank(), -1);
  EXPECT_EQ(g.sampler_rank(), 4);
  EXPECT_EQ(g.describe(), "rank 5/8: stage 1/2, tp 1/4, local rank 5/8");
}

TEST(ProcessGrid, DeviceIsLocalRankModuloDevices) {
  EXPECT_EQ(ProcessGrid(8, 6, 8, 1, 6, 8).device(8), 6);
  EXPECT_EQ(ProcessGrid(8, 6, 8, 1, 6, 8).device(4), 2);
  EXPECT_EQ(ProcessGrid(16, 11, 8, 2, 3, 8).device(8), 3);
  EXPECT_EQ(ProcessGrid(2, 1, 2, 1, 1, 2).device(1), 0);
  EXPECT_THAT(error_of([] { ProcessGrid(2, 1, 2, 1, 1, 2).device(0); }),
              HasSubstr("0 devices per node"));
}

TEST(ProcessGrid, GridThatDoesNotFitTheJobIsAClearError) {
  EXPECT_THAT(error_of([] { ProcessGrid(3, 0, 2, 2); }),
              HasSubstr("tp=2 x pp=2 = 4 ranks, but the job has 3 (mpirun -np 3)"));
  EXPECT_THAT(error_of([] { ProcessGrid(8, 0, 4, 1); }),
              HasSubstr("tp=4 x pp=1 = 4 ranks, but the job has 8 (mpirun -np 8)"));
  EXPECT_THAT(error_of([] { ProcessGrid(4, 0, 0, 4); }), HasSubstr("tp=0 and pp=4"));
  EXPECT_THAT(error_of([] { ProcessGrid(4, 0, 4, -1); }), HasSubstr("at least 1"));
  EXPECT_THAT(error_of([] { ProcessGrid(0, 0, 1, 1); }), HasSubstr("at least 1"));
  EXPECT_THAT(error_of([] { ProcessGrid(4, 4, 2, 2); }),
              HasSubstr("world rank 4 is outside [0, 4)"));
  EXPECT_THAT(error_of([] { ProcessGrid(4, -1, 2, 2); }), HasSubstr("world rank -1"));
  EXPECT_THAT(error_of([] { ProcessGrid(4, 0, 2, 2, 2, 2); }), HasSubstr("local rank 2"));
}

// Sets and restores launcher variables for one test.
class LaunchEnvironmentTest : public ::testing::Test {
 protected:
  static constexpr const char* kNames[] = {
      "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
      "PMIX_RANK",            "PMI_RANK",                   "PMI_SIZE",
      "SLURM_STEP_ID",        "SLURM_NTASKS",               "SLURM_LOCALID",
      "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"};
  void SetUp() override {
    for (const char* name : kNames) {
      const char* v = std::getenv(name);
      saved_.push_back(v ? std::optional<std::string>(v) : std::nullopt);
      unsetenv(name);
    }
  }
  void TearDown() override {
    for (size_t i = 0; i < saved_.size(); ++i) {
      if (saved_[i]) {
        setenv(kNames[i], saved_[i]->c_str(), 1);
      } else {
        unsetenv(kNames[i]);
      }
    }
  }
  std::vector<std::optional<std::string>> saved_;
};

TEST_F(LaunchEnvironmentTest, AloneThereIsNoLauncher) {
  const LaunchEnvironment e = read_launch_environment();
  EXPECT_FALSE(e.under_launcher());
  EXPECT_EQ(e.world_size, 0);
  EXPECT_EQ(e.local.rank, 0);
  EXPECT_EQ(e.local.size, 1);
  EXPECT_FALSE(e.local.from_environment());
  // Local-rank variables alone (a login shell inside an allocation) do not make a launch.
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_NTASKS_PER_NODE", "2", 1);
  EXPECT_FALSE(read_launch_environment().under_launcher());
}

TEST_F(LaunchEnvironmentTest, OpenMpi) {
  setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
  setenv("SLURM_LOCALID", "1", 1);  // Open MPI wins when both are set
  setenv("SLURM_NTASKS_PER_NODE", "2", 1);
  const LaunchEnvironment e = read_launch_environment();
  EXPECT_EQ(e.launcher, "Open MPI");
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local.rank, 3);
  EXPECT_EQ(e.local.size, 4);
  EXPECT_EQ(e.local.source, "OMPI_COMM_WORLD_LOCAL_RANK");
}

TEST_F(LaunchEnvironmentTest, SrunWithPmixPlainAndRepeatedCounts) {
  setenv("PMIX_RANK", "6", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_NTASKS", "8", 1);
  setenv("SLURM_LOCALID", "2", 1);
  setenv("SLURM_NTASKS_PER_NODE", "4", 1);
  LaunchEnvironment e = read_launch_environment();
  EXPECT_EQ(e.launcher, "Slurm (PMIx)");
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local.rank, 2);
  EXPECT_EQ(e.local.size, 4);
  EXPECT_EQ(e.local.source, "SLURM_LOCALID");

  setenv("SLURM_NTASKS_PER_NODE", "8(x2)", 1);
  e = read_launch_environment();
  EXPECT_EQ(e.local.rank, 2);
  EXPECT_EQ(e.local.size, 8);

  unsetenv("SLURM_NTASKS_PER_NODE");
  setenv("SLURM_TASKS_PER_NODE", "4(x3)", 1);
  e = read_launch_environment();
  EXPECT_EQ(e.local.size, 4);
  EXPECT_TRUE(e.local.from_environment());

  // Uneven nodes: this node's count is unknown, so not from the environment (MPI decides).
  setenv("SLURM_TASKS_PER_NODE", "4(x2),3", 1);
  EXPECT_FALSE(read_launch_environment().local.from_environment());

  // A local id without any count is not enough either.
  unsetenv("SLURM_TASKS_PER_NODE");
  EXPECT_FALSE(read_launch_environment().local.from_environment());
}

TEST_F(LaunchEnvironmentTest, OtherPmiLaunchers) {
  setenv("PMIX_RANK", "0", 1);  // prterun / mpiexec of PMIx without Slurm
  EXPECT_EQ(read_launch_environment().launcher, "PMIx");
  EXPECT_EQ(read_launch_environment().world_size, 0);
  unsetenv("PMIX_RANK");
  setenv("PMI_RANK", "1", 1);  // srun --mpi=pmi2, MPICH's Hydra
  setenv("PMI_SIZE", "4", 1);
  EXPECT_EQ(read_launch_environment().launcher, "PMI");
  EXPECT_EQ(read_launch_environment().world_size, 4);
}

TEST_F(LaunchEnvironmentTest, MalformedValuesNameTheVariable) {
  setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "two", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
  EXPECT_THAT(error_of([] { read_launch_environment(); }),
              HasSubstr("OMPI_COMM_WORLD_LOCAL_RANK=two"));
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "4", 1);
  EXPECT_THAT(error_of([] { read_launch_environment(); }),
              HasSubstr("local rank 4 is outside the local size 4"));
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  setenv("PMIX_RANK", "0", 1);
  setenv("SLURM_LOCALID", "0", 1);
  setenv("SLURM_NTASKS_PER_NODE", "4x", 1);
  EXPECT_THAT(error_of([] { read_launch_environment(); }),
              HasSubstr("SLURM_NTASKS_PER_NODE=4x"));
  unsetenv("SLURM_NTASKS_PER_NODE");
  setenv("OMPI_COMM_WORLD_SIZE", "many", 1);
  EXPECT_THAT(error_of([] { read_launch_environment(); }), HasSubstr("OMPI_COMM_WORLD_SIZE=many"));
}

}  // namespace
}  // namespace parafuse

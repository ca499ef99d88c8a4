// The session builder (launcher/session.h) under mpirun: the device each rank's backend gets is
// the one ProcessGrid assigns from the same local rank the grid holds, whether the launcher
// sets local-rank variables or not (ctest runs this binary twice at 2 ranks: as mpirun starts
// it, and with OMPI_COMM_WORLD_LOCAL_RANK/_SIZE and SLURM_LOCALID removed, where the local rank
// must come from MPI's shared-memory split; before the builder, every rank then took device 0).
//
// The backend is a test backend registered under "test-4-devices": a node with 4 devices whose
// factory records the device it is asked for and returns the CPU backend, so the choice is
// observable without a GPU. The rest of the session is real: MPI communicators, the engine on a
// synthetic model, TP over the MPI collectives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kernels/backend_registry.h"
#include "launcher/session.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"
#include "tests/mpi/mpi_test_util.h"

using ::testing::HasSubstr;

namespace parafuse {
namespace {

constexpr int kDevices = 4;
int g_requested_device = -1;

const BackendRegistrar kTestBackend{{
    .name = "test-4-devices",
    .summary = "a CPU backend on a pretend node of 4 devices (tests)",
    .dtypes = {"f32"},
    .device_count = [](std::string*) { return kDevices; },
    .make =
        [](const BackendOptions& o) {
          g_requested_device = o.device;
          return make_backend("cpu", {.threads = o.threads});
        },
}};

const std::string kTinyLlama =
    "synthetic:" + std::string(PF_TEST_DATA) + "/configs/tiny-llama.json";

SessionFlags flags_for(const std::string& backend, int tp, int pp) {
  SessionFlags f;
  f.quiet = true;
  f.run.model = kTinyLlama;
  f.run.backend = backend;
  f.run.tp = tp;
  f.run.pp = pp;
  f.run.threads = 1;
  return f;
}

// Every rank's value, in rank order.
std::vector<int> gather(int mine) {
  std::vector<int> all(static_cast<size_t>(world_size()));
  MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  return all;
}

TEST(SessionBuilder, EachRankDrivesTheDeviceItsGridAssigns) {
  int argc = 0;
  char** argv = nullptr;
  MpiSession mpi(&argc, &argv);  // MPI is up already: this one neither inits nor finalizes
  LaunchContext launch{&mpi};
  const bool launcher_says = read_launch_environment().local.from_environment();

  g_requested_device = -1;
  Session s = SessionBuilder(launch, flags_for("test-4-devices", world_size(), 1)).build();
  // One node: the local rank is the world rank, from the launcher or from MPI's split.
  EXPECT_EQ(s.local_rank_source,
            launcher_says ? "OMPI_COMM_WORLD_LOCAL_RANK" : "MPI shared-memory split");
  EXPECT_EQ(s.grid->local_rank(), world_rank());
  EXPECT_EQ(s.grid->local_size(), world_size());
  EXPECT_EQ(s.device, s.grid->device(kDevices));
  EXPECT_EQ(g_requested_device, s.device);
  std::vector<int> expected;
  for (int r = 0; r < world_size(); ++r) expected.push_back(r % kDevices);
  EXPECT_EQ(gather(s.device), expected) << "ranks of one node must not share a device";
  EXPECT_EQ(s.grid->tp(), world_size());
  ASSERT_TRUE(s.engine);
  EXPECT_STREQ(std::string(s.backend->name()).c_str(), "cpu");
}

TEST(SessionBuilder, TransportNcclOnTheCpuIsAnAgreedError) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  int argc = 0;
  char** argv = nullptr;
  MpiSession mpi(&argc, &argv);
  LaunchContext launch{&mpi};
  SessionFlags f = flags_for("cpu", 1, world_size());
  const std::vector<std::string> kinds = transport_kinds();
  if (std::find(kinds.begin(), kinds.end(), "nccl") == kinds.end())
    GTEST_SKIP() << "this build has no nccl transport (no CUDA)";
  f.run.transport = "nccl";
  try {
    SessionBuilder(launch, f).build();
    FAIL() << "no error";
  } catch (const SetupError& e) {
    EXPECT_THAT(e.what(), HasSubstr("transport 'nccl' needs the cuda backend and one GPU per "
                                    "rank (the backend is cpu)"));
    EXPECT_EQ(e.rank, 0);  // every rank failed alike; rank 0 speaks
  }
}

TEST(SessionBuilder, SingleRankCommandsRefuseAJob) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
  int argc = 0;
  char** argv = nullptr;
  MpiSession mpi(&argc, &argv);
  LaunchContext launch{&mpi};
  try {
    SessionBuilder(launch, flags_for("cpu", world_size(), 1)).single_rank("analyze").build();
    FAIL() << "no error";
  } catch (const SetupError& e) {
    EXPECT_THAT(e.what(), HasSubstr("parafuse analyze runs on a single rank"));
  }
}

}  // namespace
}  // namespace parafuse

// MpiCollectives under mpirun (2, 3 and 4 ranks): results checked exactly (inputs are small
// integers in floats, so every summation order gives the same sum), strided tensors, every root
// of a broadcast, TP groups of a TP x PP grid, the call counters, and the timeout error when a
// rank never arrives.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <thread>
#include <vector>

#include "parallel/mpi_comm.h"
#include "tests/mpi/mpi_test_util.h"

namespace parafuse {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

Tensor f32_view(std::vector<float>& v, int64_t rows, int64_t cols, int64_t stride) {
  return Tensor{v.data(), DType::F32, rows, cols, stride};
}

// A world group of its own (MpiComm) per test, so one test's leftovers cannot reach another.
struct WorldGroup {
  MpiComm comm{MPI_COMM_WORLD, 0, world_rank()};
  std::vector<int> ranks = [] {
    std::vector<int> r(static_cast<size_t>(world_size()));
    std::iota(r.begin(), r.end(), 0);
    return r;
  }();
  MpiCollectives make(milliseconds timeout = milliseconds(10000)) {
    return MpiCollectives(comm.get(), "world", ranks, timeout);
  }
};

// Value of element i on `rank`; the sum over n ranks is n*1000*i + n(n+1)/2 (exact in F32).
float input(int rank, int64_t i) {
  return float(1000 * i + rank + 1);
}
float expected_sum(int n, int64_t i) {
  return float(n * 1000 * i + n * (n + 1) / 2);
}

TEST(MpiCollectives, AllReduceSumIsExact) {
  WorldGroup world;
  MpiCollectives c = world.make();
  const int n = c.size(), me = c.rank();
  ASSERT_EQ(n, world_size());
  for (int64_t rows : {1, 3, 17}) {
    for (int64_t cols : {1, 8, 1000}) {
      std::vector<float> v(size_t(rows * cols));
      for (size_t i = 0; i < v.size(); ++i) v[i] = input(me, int64_t(i) % 4096);
      c.all_reduce_sum(f32_view(v, rows, cols, cols));
      for (size_t i = 0; i < v.size(); ++i) {
        ASSERT_EQ(v[i], expected_sum(n, int64_t(i) % 4096)) << rows << "x" << cols << " @" << i;
      }
    }
  }
}

TEST(MpiCollectives, AllReduceOnStridedColumnsLeavesTheRestAlone) {
  WorldGroup world;
  MpiCollectives c = world.make();
  const int n = c.size(), me = c.rank();
  const int64_t rows = 5, stride = 12, begin = 3, end = 10;
  std::vector<float> v(size_t(rows * stride), -7.0f);
  Tensor whole = f32_view(v, rows, stride, stride);
  Tensor part = whole.cols_view(begin, end);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t col = begin; col < end; ++col)
      v[size_t(r * stride + col)] = input(me, r * 7 + col);
  }
  c.all_reduce_sum(part);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t col = 0; col < stride; ++col) {
      float want = (col >= begin && col < end) ? expected_sum(n, r * 7 + col) : -7.0f;
      ASSERT_EQ(v[size_t(r * stride + col)], want) << "row " << r << " col " << col;
    }
  }
}

TEST(MpiCollectives, AllReduceRejectsOtherDtypes) {
  WorldGroup world;
  MpiCollectives c = world.make();
  std::vector<uint16_t> v(8);
  Tensor t{v.data(), DType::BF16, 2, 4, 4};
  try {
    c.all_reduce_sum(t);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("supports F32 tensors, got BF16"));
  }
}

TEST(MpiCollectives, AllReduceInTpGroupsOfAGrid) {
  // tp = 2 where the world divides, else tp = world (one stage).
  const int n = world_size();
  const int tp = n % 2 == 0 ? 2 : n, pp = n / tp;
  ProcessGrid grid(n, world_rank(), tp, pp);
  MpiComm tp_comm(MPI_COMM_WORLD, grid.pp_stage(), grid.tp_rank());
  MpiCollectives c(tp_comm.get(), "tp group of stage " + std::to_string(grid.pp_stage()),
                   grid.tp_group(), milliseconds(10000));
  ASSERT_EQ(c.size(), tp);
  ASSERT_EQ(c.rank(), grid.tp_rank());
  // Each rank contributes its world rank: the sum is the sum of this stage's world ranks.
  std::vector<float> v(64, float(grid.world_rank()));
  c.all_reduce_sum(f32_view(v, 8, 8, 8));
  float want = 0;
  for (int r : grid.tp_group()) want += float(r);
  for (float x : v) ASSERT_EQ(x, want);
}

TEST(MpiCollectives, AllGatherRowsStacksByRank) {
  WorldGroup world;
  MpiCollectives c = world.make();
  const int n = c.size(), me = c.rank();
  const int64_t rows = 3, cols = 5;
  std::vector<float> local(size_t(rows * cols));
  for (size_t i = 0; i < local.size(); ++i) local[i] = float(me * 100 + int(i));
  // Contiguous output, then a strided output (cols [2, 7) of a 10-wide buffer).
  std::vector<float> out(size_t(n * rows * cols), -1.0f);
  c.all_gather_rows(f32_view(local, rows, cols, cols), f32_view(out, n * rows, cols, cols));
  for (int r = 0; r < n; ++r) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      ASSERT_EQ(out[size_t(r * rows * cols + i)], float(r * 100 + i)) << "from rank " << r;
    }
  }
  std::vector<float> wide(size_t(n * rows * 10), -1.0f);
  Tensor strided_out = f32_view(wide, n * rows, 10, 10).cols_view(2, 7);
  c.all_gather_rows(f32_view(local, rows, cols, cols), strided_out);
  for (int64_t row = 0; row < n * rows; ++row) {
    for (int64_t col = 0; col < 10; ++col) {
      const int r = int(row / rows);
      float want = (col >= 2 && col < 7) ? float(r * 100 + (row % rows) * cols + col - 2) : -1.0f;
      ASSERT_EQ(wide[size_t(row * 10 + col)], want) << "row " << row << " col " << col;
    }
  }
}

TEST(MpiCollectives, AllGatherShapeMismatchIsAnError) {
  WorldGroup world;
  MpiCollectives c = world.make();
  std::vector<float> local(6), out(6);
  try {
    c.all_gather_rows(f32_view(local, 2, 3, 3), f32_view(out, 2, 3, 3));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("all_gather on world"));
  }
}

TEST(MpiCollectives, BroadcastFromEveryRoot) {
  WorldGroup world;
  MpiCollectives c = world.make();
  for (int root = 0; root < c.size(); ++root) {
    for (size_t bytes : {size_t(0), size_t(1), size_t(4096), size_t(1) << 20}) {
      std::vector<unsigned char> data(bytes, 0);
      if (c.rank() == root) {
        for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<unsigned char>(i * 7 + root);
      }
      c.broadcast_bytes(data.data(), bytes, root);
      for (size_t i = 0; i < bytes; ++i) {
        ASSERT_EQ(data[i], static_cast<unsigned char>(i * 7 + root)) << "root " << root;
      }
    }
  }
  EXPECT_THROW(c.broadcast_bytes(nullptr, 0, c.size()), Error);
}

TEST(MpiCollectives, CountsEveryCallAndItsBytes) {
  WorldGroup world;
  MpiCollectives c = world.make();
  std::vector<float> v(12, 1.0f), out(size_t(12 * c.size()));
  c.all_reduce_sum(f32_view(v, 3, 4, 4));
  c.all_reduce_sum(f32_view(v, 3, 4, 4));
  c.all_gather_rows(f32_view(v, 3, 4, 4), f32_view(out, 3 * c.size(), 4, 4));
  std::vector<char> bytes(100);
  c.broadcast_bytes(bytes.data(), bytes.size(), 0);
  c.barrier();
  c.barrier();
  c.barrier();
  const CollectiveStats& s = c.stats();
  EXPECT_EQ(s.all_reduce_calls, 2);
  EXPECT_EQ(s.all_gather_calls, 1);
  EXPECT_EQ(s.broadcast_calls, 1);
  EXPECT_EQ(s.barrier_calls, 3);
  EXPECT_EQ(s.bytes, 2 * 48 + 48 * c.size() + 100);
  EXPECT_GT(s.seconds, 0.0);
  c.stats().reset();
  EXPECT_EQ(c.stats().all_reduce_calls, 0);
  EXPECT_EQ(c.stats().bytes, 0);
}

// Rank 1 skips the all-reduce: every other rank must get an Error naming the collective, the
// group's ranks, the timeout and rank 1 as the one that did not arrive, after about the
// timeout. Then rank 1 posts the matching all-reduce late, so the abandoned requests of the
// others complete too (MPI can neither cancel nor free a pending collective) and the group is
// consistent again for the barrier.
TEST(MpiCollectives, MissingRankTimesOutWithAClearError) {
  WorldGroup world;
  const milliseconds timeout(1500);
  MpiCollectives c = world.make(timeout);
  const int n = c.size(), me = c.rank();
  std::vector<float> v(256);
  for (size_t i = 0; i < v.size(); ++i) v[i] = input(me, int64_t(i));
  if (me == 1) {
    std::this_thread::sleep_for(timeout + milliseconds(500));
    c.all_reduce_sum(f32_view(v, 16, 16, 16));  // the late partner: completes with everyone's
    for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], expected_sum(n, int64_t(i)));
  } else {
    const auto start = std::chrono::steady_clock::now();
    std::optional<std::string> message;
    try {
      c.all_reduce_sum(f32_view(v, 16, 16, 16));
    } catch (const Error& e) {
      message = e.what();
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(message.has_value()) << "all_reduce returned without rank 1";
    std::string ranks = "0", waiting = "0";
    for (int r = 1; r < n; ++r) ranks += "," + std::to_string(r);
    for (int r = 2; r < n; ++r) waiting += "," + std::to_string(r);
    // The collective, its place in the group's sequence, the group, and who did not arrive.
    EXPECT_THAT(*message, HasSubstr("all_reduce #1 on world (world ranks " + ranks +
                                    ") did not complete within 1.5 s: world rank 1 did not "
                                    "arrive (stuck or dead; world rank" +
                                    std::string(n > 2 ? "s " : " ") + waiting + " waited in it)"));
    EXPECT_GE(waited, 1.4);
    EXPECT_LT(waited, 3.0);
    EXPECT_EQ(c.stats().all_reduce_calls, 1);
  }
  c.barrier();  // every rank is here and every request has its partner
}

TEST(MpiSession, LocalRankFromEnvironmentOrSharedMemorySplit) {
  // Under mpirun on one machine the launcher's variables give the answer...
  const LaunchEnvironment launch = read_launch_environment();
  EXPECT_EQ(launch.launcher, "Open MPI");
  EXPECT_EQ(launch.world_size, world_size());
  const LocalRank env = launch.local;
  ASSERT_TRUE(env.from_environment()) << "mpirun should set OMPI_COMM_WORLD_LOCAL_RANK";
  EXPECT_EQ(env.rank, world_rank());
  EXPECT_EQ(env.size, world_size());
  // ...and without them the shared-memory split gives the same.
  const char* names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
                         "SLURM_LOCALID"};
  std::vector<std::string> saved;
  for (const char* name : names) {
    const char* v = std::getenv(name);
    saved.push_back(v ? v : "");
    unsetenv(name);
  }
  int argc = 0;
  char** argv = nullptr;
  MpiSession again(&argc, &argv);  // MPI is already up: no second MPI_Init
  LocalRank split = again.local();
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!saved[i].empty()) setenv(names[i], saved[i].c_str(), 1);
  }
  EXPECT_FALSE(split.from_environment());
  EXPECT_EQ(split.source, "MPI shared-memory split");
  EXPECT_EQ(split.rank, world_rank());
  EXPECT_EQ(split.size, world_size());
  EXPECT_EQ(again.rank(), world_rank());
}

TEST(MpiSession, ErrorsCarryTheRank) {
  try {
    PF_THROW("boom");
  } catch (const Error& e) {
    EXPECT_THAT(e.where(), HasSubstr("[rank " + std::to_string(world_rank()) + "]"));
  }
}

}  // namespace
}  // namespace parafuse

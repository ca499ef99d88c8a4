// GPU collectives and tensor parallelism under mpirun (see CMakeLists.txt beside this file).
//
// NcclCollectives: all-reduce (F32, BF16, strided rows), all-gather, broadcast and barrier
// against values known exactly, and the watchdog: a collective that one rank never joins
// aborts the communicator and throws naming the collective. Tensor parallelism: greedy
// decoding of a synthetic Llama at tp = the number of ranks on the CUDA backend, compared with
// a CPU tp=1 run in each process under the top-5 divergence rule (greedy_compare.h); the TP
// collectives are NCCL when every rank has its own GPU, else MPI on host-staged buffers.
#include <gtest/gtest.h>
#include <mpi.h>

#include <thread>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "parallel/mpi_comm.h"
#include "parallel/nccl_collectives.h"
#include "parallel/process_grid.h"
#include "parallel/staged_collectives.h"
#include "runtime/model/model_files.h"
#include "tests/unit/greedy_compare.h"

namespace parafuse {
namespace {

using namespace std::chrono_literals;

struct World {
  int rank = 0, size = 1;
  World() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  std::vector<int> ranks() const {
    std::vector<int> r(static_cast<size_t>(size));
    for (int i = 0; i < size; ++i) r[size_t(i)] = i;
    return r;
  }
};

// Every rank reaches the same verdict (the device count is per machine, the ranks share it).
#define PF_SKIP_WITHOUT_CUDA()                           \
  std::string why_no_cuda;                               \
  const int n_devices = cuda_device_count(&why_no_cuda); \
  if (n_devices == 0) GTEST_SKIP() << "no CUDA device: " << why_no_cuda

TEST(NcclCollectives, AllReduceAllGatherBroadcast) {
  PF_SKIP_WITHOUT_CUDA();
  World w;
  if (n_devices < w.size)
    GTEST_SKIP() << "NCCL needs one GPU per rank: " << w.size << " ranks, " << n_devices
                 << " GPU(s)";
  CudaBackendOptions options;
  options.device = w.rank;
  CudaBackend cuda(options);
  NcclCollectives nccl(MPI_COMM_WORLD, "world", w.ranks(), w.rank, cuda.stream(), 30s);
  const int64_t rows = 3, cols = 50, stride = 64;
  const float expected = float(w.size * (w.size + 1) / 2);
  for (DType dt : {DType::F32, DType::BF16}) {
    Buffer owner;
    Tensor wide = cuda.alloc_tensor(owner, dt, rows, stride);
    Tensor t = wide.cols_view(0, cols);  // strided rows: packed through the staging buffer
    std::vector<float> mine(size_t(rows * cols), float(w.rank + 1)), back(mine.size());
    cuda.upload_f32(mine.data(), t);
    nccl.all_reduce_sum(t);
    cuda.download_f32(t, back.data());
    for (float v : back) ASSERT_EQ(v, expected) << dtype_name(dt);
  }
  Buffer lo, go;
  Tensor local = cuda.alloc_tensor(lo, DType::F32, 2, 5);
  Tensor gathered = cuda.alloc_tensor(go, DType::F32, 2 * w.size, 5);
  std::vector<float> mine(10, float(w.rank)), all(size_t(10 * w.size));
  cuda.upload_f32(mine.data(), local);
  nccl.all_gather_rows(local, gathered);
  cuda.download_f32(gathered, all.data());
  for (int r = 0; r < w.size; ++r) EXPECT_EQ(all[size_t(10 * r)], float(r));
  int64_t token = w.rank == 0 ? 42 : 0;
  nccl.broadcast_bytes(&token, sizeof token, 0);
  EXPECT_EQ(token, 42);
  nccl.barrier();
  EXPECT_EQ(nccl.stats().all_reduce_calls, 2);
  EXPECT_EQ(nccl.stats().all_gather_calls, 1);
}

// NCCL inside a CUDA graph: the all-reduce is recorded once (enqueue only while capturing),
// replays with new inputs at the same addresses, and wait_recorded() is the replay's watchdog.
TEST(NcclCollectives, AllReduceRecordsIntoAGraph) {
  PF_SKIP_WITHOUT_CUDA();
  World w;
  if (n_devices < w.size)
    GTEST_SKIP() << "NCCL needs one GPU per rank: " << w.size << " ranks, " << n_devices
                 << " GPU(s)";
  CudaBackendOptions options;
  options.device = w.rank;
  CudaBackend cuda(options);
  NcclCollectives nccl(MPI_COMM_WORLD, "world", w.ranks(), w.rank, cuda.stream(), 30s);
  EXPECT_TRUE(nccl.records_in_graphs());
  Buffer ba, bo;
  Tensor a = cuda.alloc_tensor(ba, DType::BF16, 2, 64),
         o = cuda.alloc_tensor(bo, DType::BF16, 2, 64);
  int captures = 0;
  auto step = [&] {
    ++captures;
    cuda.add(a, a, o);       // o = 2a
    nccl.all_reduce_sum(o);  // o = sum over ranks of 2a
  };
  for (int round = 1; round <= 3; ++round) {
    std::vector<float> mine(128, float(round * (w.rank + 1))), back(128);
    cuda.upload_f32(mine.data(), a);
    cuda.run_graph("nccl step", step);
    nccl.wait_recorded("the test graph");
    cuda.download_f32(o, back.data());
    const float expected = 2.0f * float(round) * float(w.size * (w.size + 1) / 2);
    for (float v : back) ASSERT_EQ(v, expected) << "round " << round;
  }
  EXPECT_EQ(captures, 1);
}

TEST(NcclCollectives, WatchdogAbortsAHungAllReduce) {
  PF_SKIP_WITHOUT_CUDA();
  World w;
  if (w.size < 2) GTEST_SKIP() << "needs 2 ranks";
  if (n_devices < w.size)
    GTEST_SKIP() << "NCCL needs one GPU per rank: " << w.size << " ranks, " << n_devices
                 << " GPU(s)";
  CudaBackendOptions options;
  options.device = w.rank;
  CudaBackend cuda(options);
  NcclCollectives nccl(MPI_COMM_WORLD, "world", w.ranks(), w.rank, cuda.stream(), 2s);
  Buffer owner;
  Tensor t = cuda.alloc_tensor(owner, DType::F32, 1, 16);
  if (w.rank == 0) {
    try {
      nccl.all_reduce_sum(t);  // rank 1 never joins
      ADD_FAILURE() << "the hung all_reduce returned";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("all_reduce"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(CudaTensorParallel, GreedyMatchesCpu) {
  PF_SKIP_WITHOUT_CUDA();
  World w;
  ModelFiles files =
      open_model("synthetic:" + std::string(PF_TEST_DATA) + "/configs/tiny-llama.json@3");
  EngineOptions eo;
  eo.kv_cache_tokens = 1024;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 21; ++i) prompt.push_back((i * 53 + 7) % 256);
  const int tokens = 24;

  CpuBackend cpu(1);
  Engine cpu_engine(files.config, *files.weights, cpu, eo);
  const test::GreedyRun reference = test::greedy(cpu_engine, prompt, tokens);

  const bool use_nccl = n_devices >= w.size;
  CudaBackendOptions options;
  options.device = use_nccl ? w.rank : 0;
  CudaBackend cuda(options);
  ProcessGrid grid(w.size, w.rank, w.size, 1, w.rank, w.size);
  MpiCollectives world(MPI_COMM_WORLD, "world", w.ranks(), 60s);
  std::unique_ptr<Collectives> tp;
  if (use_nccl) {
    tp = std::make_unique<NcclCollectives>(MPI_COMM_WORLD, "tp group", w.ranks(), options.device,
                                           cuda.stream(), 60s);
  } else {
    tp = std::make_unique<StagedCollectives>(world, cuda);
  }
  ParallelContext pc;
  pc.grid = &grid;
  pc.tp = tp.get();
  pc.world = &world;
  Engine engine(files.config, *files.weights, cuda, eo, pc);
  const test::GreedyRun device = test::greedy(engine, prompt, tokens);
  ASSERT_EQ(device.ids.size(), size_t(tokens));
  test::expect_greedy_agrees(
      reference, device,
      fmt::format("tp={} on {} ({})", w.size, use_nccl ? "own GPUs" : "one GPU",
                  use_nccl ? "NCCL" : "MPI on staged buffers"));
}

}  // namespace
}  // namespace parafuse

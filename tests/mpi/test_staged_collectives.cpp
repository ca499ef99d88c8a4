// StagedCollectives over MpiCollectives with the CPU backend standing in for a device backend:
// the staging path (download, host collective, upload) gives exact sums and gathers for
// strided views, counts its calls, and names itself after the host group. The GPU use (two
// ranks on one GPU) runs in tests/cuda/test_cuda_parallel.cpp.
#include <gtest/gtest.h>
#include <mpi.h>

#include "kernels/cpu/cpu_backend.h"
#include "parallel/mpi_comm.h"
#include "parallel/staged_collectives.h"

namespace parafuse {
namespace {

TEST(StagedCollectives, AllReduceAndAllGatherThroughHostStaging) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<int> ranks(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) ranks[size_t(r)] = r;
  MpiCollectives host(MPI_COMM_WORLD, "world", ranks, std::chrono::seconds(30));
  CpuBackend backend(1);
  StagedCollectives staged(host, backend);
  EXPECT_EQ(staged.size(), size);
  EXPECT_EQ(staged.rank(), rank);
  EXPECT_NE(staged.name().find("world"), std::string::npos);

  Buffer owner;
  Tensor wide = backend.alloc_tensor(owner, DType::F32, 3, 10);
  std::vector<float> fill(30, -1.0f);
  backend.upload_f32(fill.data(), wide);
  Tensor view = wide.cols_view(2, 7);  // (3, 5), row stride 10
  std::vector<float> mine(15);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = float(rank + 1) * float(i);
  backend.upload_f32(mine.data(), view);
  staged.all_reduce_sum(view);
  std::vector<float> all(30);
  backend.download_f32(wide, all.data());
  const float ranks_sum = float(size * (size + 1) / 2);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < 10; ++c) {
      const float want = (c >= 2 && c < 7) ? ranks_sum * float(r * 5 + (c - 2)) : -1.0f;
      EXPECT_EQ(all[size_t(r * 10 + c)], want) << r << "," << c;
    }
  }

  Buffer lo, go;
  Tensor local = backend.alloc_tensor(lo, DType::F32, 2, 4);
  Tensor gathered = backend.alloc_tensor(go, DType::F32, 2 * size, 4);
  std::vector<float> rows(8, float(rank)), back(size_t(8 * size));
  backend.upload_f32(rows.data(), local);
  staged.all_gather_rows(local, gathered);
  backend.download_f32(gathered, back.data());
  for (int r = 0; r < size; ++r) EXPECT_EQ(back[size_t(8 * r + 7)], float(r));

  int64_t value = rank == 0 ? 7 : 0;
  staged.broadcast_bytes(&value, sizeof value, 0);
  EXPECT_EQ(value, 7);
  staged.barrier();
  EXPECT_EQ(staged.stats().all_reduce_calls, 1);
  EXPECT_EQ(staged.stats().all_gather_calls, 1);
  EXPECT_EQ(staged.stats().broadcast_calls, 1);
}

// The staged transport moves a strided tensor between pipeline neighbours through host
// buffers: exact values, counted sends and receives, the host transport's name.
TEST(StagedTransport, SendsStridedTensorsToTheNextRank) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CpuBackend backend(1);
  auto transport =
      make_staged_transport(make_mpi_transport(MPI_COMM_WORLD, std::chrono::seconds(30)), backend);
  EXPECT_NE(transport->name().find("staged"), std::string::npos);
  Buffer owner;
  Tensor wide = backend.alloc_tensor(owner, DType::F32, 4, 9);
  Tensor view = wide.cols_view(1, 6);  // (4, 5), row stride 9
  std::vector<float> mine(20);
  for (size_t i = 0; i < mine.size(); ++i) mine[i] = float(rank * 100) + float(i);
  backend.upload_f32(mine.data(), view);
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  auto send = transport->send(view, next, 5);
  Buffer in_owner;
  Tensor in = backend.alloc_tensor(in_owner, DType::F32, 4, 5);
  transport->recv(in, prev, 5)->wait();
  send->wait();
  std::vector<float> got(20);
  backend.download_f32(in, got.data());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], float(prev * 100) + float(i));
  EXPECT_EQ(transport->stats().sends, 1);
  EXPECT_EQ(transport->stats().recvs, 1);
}

}  // namespace
}  // namespace parafuse

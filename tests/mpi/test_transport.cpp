// Both transports ("mpi", "ucx") under mpirun pass the same tests: tensors around a ring and
// between pipeline-stage neighbours, many messages in flight with receives posted in another
// order, 8 MiB and tiny messages, receives posted before the sends, strided tensors, size
// mismatches, the counters, and a receive that times out with an error naming the peer.
// Every payload encodes (sender, tag, index), so a message delivered to the wrong receive fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "parallel/mpi_comm.h"
#include "parallel/transport.h"
#include "tests/mpi/mpi_test_util.h"
#include "tests/unit/error_of.h"

namespace parafuse {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

// Exact in F32 for the sizes used here (< 2^24).
float payload(int sender, uint64_t tag, int64_t i) {
  return float((sender * 7 + int64_t(tag) * 13 + i) % 8000000);
}

struct Message {
  std::vector<float> data;
  Tensor tensor;
  Message(int64_t rows, int64_t cols) : data(size_t(rows * cols), -1.0f) {
    tensor = Tensor{data.data(), DType::F32, rows, cols, cols};
  }
  void fill(int sender, uint64_t tag) {
    for (size_t i = 0; i < data.size(); ++i) data[i] = payload(sender, tag, int64_t(i));
  }
  // Index of the first wrong element, or -1.
  int64_t first_wrong(int sender, uint64_t tag) const {
    for (size_t i = 0; i < data.size(); ++i) {
      if (data[i] != payload(sender, tag, int64_t(i))) return int64_t(i);
    }
    return -1;
  }
};

class TransportTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    me_ = world_rank();
    n_ = world_size();
    next_ = (me_ + 1) % n_;
    prev_ = (me_ + n_ - 1) % n_;
    transport_ = make_transport(GetParam(), MPI_COMM_WORLD, milliseconds(20000));
  }
  void TearDown() override { transport_.reset(); }
  int me_ = 0, n_ = 1, next_ = 0, prev_ = 0;
  std::unique_ptr<Transport> transport_;
};

TEST_P(TransportTest, RingOfSmallAndLargeTensors) {
  EXPECT_EQ(transport_->name(), GetParam());
  // (1, 1) float, a 4 KiB activation, 8 MiB (rendezvous on every transport).
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {4, 256}, {2048, 1024}};
  uint64_t tag = 1;
  for (auto [rows, cols] : shapes) {
    Message out(rows, cols), in(rows, cols);
    out.fill(me_, tag);
    auto r = transport_->recv(in.tensor, prev_, tag);
    auto s = transport_->send(out.tensor, next_, tag);
    s->wait();
    r->wait();
    ASSERT_EQ(in.first_wrong(prev_, tag), -1) << rows << "x" << cols << " from " << prev_;
    ++tag;
  }
  EXPECT_EQ(transport_->stats().sends, 3);
  EXPECT_EQ(transport_->stats().recvs, 3);
  EXPECT_EQ(transport_->stats().bytes, 2 * int64_t(4 + 4 * 256 * 4 + 2048 * 1024 * 4));
  EXPECT_GT(transport_->stats().wait_seconds, 0.0);
}

TEST_P(TransportTest, PipelineStageNeighbours) {
  const int tp = n_ % 2 == 0 ? 2 : 1;
  ProcessGrid grid(n_, me_, tp, n_ / tp);
  // A forward hand-off (activations) and a backward one (e.g. an acknowledgement).
  Message forward_in(16, 64), backward_in(1, 8);
  std::unique_ptr<TransportRequest> from_prev, from_next;
  if (grid.prev_stage_rank() >= 0) {
    from_prev = transport_->recv(forward_in.tensor, grid.prev_stage_rank(), 10);
  }
  if (grid.next_stage_rank() >= 0) {
    from_next = transport_->recv(backward_in.tensor, grid.next_stage_rank(), 11);
  }
  Message forward_out(16, 64), backward_out(1, 8);
  forward_out.fill(me_, 10);
  backward_out.fill(me_, 11);
  std::vector<std::unique_ptr<TransportRequest>> sends;
  if (grid.next_stage_rank() >= 0) {
    sends.push_back(transport_->send(forward_out.tensor, grid.next_stage_rank(), 10));
  }
  if (grid.prev_stage_rank() >= 0) {
    sends.push_back(transport_->send(backward_out.tensor, grid.prev_stage_rank(), 11));
  }
  for (auto& s : sends) s->wait();
  if (from_prev) {
    from_prev->wait();
    EXPECT_EQ(forward_in.first_wrong(grid.prev_stage_rank(), 10), -1);
  }
  if (from_next) {
    from_next->wait();
    EXPECT_EQ(backward_in.first_wrong(grid.next_stage_rank(), 11), -1);
  }
}

TEST_P(TransportTest, ManyMessagesInFlightMatchedByTag) {
  constexpr int kMessages = 12;
  // Sizes alternate tiny / 64 KiB / 1 MiB; every send is posted before any receive.
  auto rows_of = [](int k) { return int64_t(k % 3 == 0 ? 1 : k % 3 == 1 ? 64 : 1024); };
  std::vector<Message> outs, ins;
  outs.reserve(kMessages);
  ins.reserve(kMessages);
  std::vector<std::unique_ptr<TransportRequest>> sends, recvs(kMessages);
  for (int k = 0; k < kMessages; ++k) {
    outs.emplace_back(rows_of(k), 256);
    ins.emplace_back(rows_of(k), 256);
    outs.back().fill(me_, uint64_t(1000 + k));
    sends.push_back(transport_->send(outs.back().tensor, next_, uint64_t(1000 + k)));
  }
  for (int k = kMessages - 1; k >= 0; --k) {  // reversed order: matching is by tag
    recvs[k] = transport_->recv(ins[k].tensor, prev_, uint64_t(1000 + k));
  }
  for (int k = 0; k < kMessages; k += 2) recvs[k]->wait();  // evens first, then odds
  for (int k = 1; k < kMessages; k += 2) recvs[k]->wait();
  for (auto& s : sends) s->wait();
  for (int k = 0; k < kMessages; ++k) {
    EXPECT_EQ(ins[k].first_wrong(prev_, uint64_t(1000 + k)), -1) << "message " << k;
  }
}

TEST_P(TransportTest, ReceivesPostedLongBeforeTheSends) {
  Message big_in(2048, 1024), small_in(1, 3);
  auto big = transport_->recv(big_in.tensor, prev_, 77);
  auto small = transport_->recv(small_in.tensor, prev_, 78);
  MPI_Barrier(MPI_COMM_WORLD);  // every receive is posted before any send
  Message big_out(2048, 1024), small_out(1, 3);
  big_out.fill(me_, 77);
  small_out.fill(me_, 78);
  auto s2 = transport_->send(small_out.tensor, next_, 78);
  auto s1 = transport_->send(big_out.tensor, next_, 77);
  small->wait();
  big->wait();
  s1->wait();
  s2->wait();
  EXPECT_EQ(big_in.first_wrong(prev_, 77), -1);
  EXPECT_EQ(small_in.first_wrong(prev_, 78), -1);
}

TEST_P(TransportTest, TagsAbove32BitsAndSelfSends) {
  const uint64_t tag = (uint64_t(1) << 35) + 5;
  Message out(2, 2), in(2, 2);
  out.fill(me_, tag);
  auto r = transport_->recv(in.tensor, me_, tag);
  auto s = transport_->send(out.tensor, me_, tag);
  r->wait();
  s->wait();
  EXPECT_EQ(in.first_wrong(me_, tag), -1);
}

TEST_P(TransportTest, StridedTensorsAreSentRowByRow) {
  // Send columns [1, 5) of a (6, 9) buffer into columns [3, 7) of a (6, 11) buffer.
  std::vector<float> src(6 * 9), dst(6 * 11, -1.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(me_ * 1000 + int(i));
  Tensor send_view = Tensor{src.data(), DType::F32, 6, 9, 9}.cols_view(1, 5);
  Tensor recv_view = Tensor{dst.data(), DType::F32, 6, 11, 11}.cols_view(3, 7);
  auto r = transport_->recv(recv_view, prev_, 5);
  auto s = transport_->send(send_view, next_, 5);
  s->wait();
  r->wait();
  for (int row = 0; row < 6; ++row) {
    for (int col = 0; col < 11; ++col) {
      float want = col >= 3 && col < 7 ? float(prev_ * 1000 + row * 9 + col - 3 + 1) : -1.0f;
      ASSERT_EQ(dst[size_t(row * 11 + col)], want) << row << "," << col;
    }
  }
}

TEST_P(TransportTest, SizeMismatchIsAnError) {
  // A message larger than the receive buffer, then a smaller one.
  Message big_out(1, 16), small_in(1, 8), small_out(1, 4), big_in(1, 8);
  auto r1 = transport_->recv(small_in.tensor, prev_, 21);
  auto r2 = transport_->recv(big_in.tensor, prev_, 22);
  auto s1 = transport_->send(big_out.tensor, next_, 21);
  auto s2 = transport_->send(small_out.tensor, next_, 22);
  EXPECT_THAT(error_of([&] { r1->wait(); }),
              HasSubstr("recv from peer " + std::to_string(prev_) + " (tag 21, 32 bytes, " +
                        GetParam() + "): the message sent is larger than the receive buffer"));
  EXPECT_THAT(error_of([&] { r2->wait(); }), HasSubstr("received 16 bytes instead"));
  s1->wait();
  s2->wait();
}

TEST_P(TransportTest, BadPeerIsAnError) {
  Message m(1, 1);
  EXPECT_THAT(error_of([&] { transport_->send(m.tensor, n_, 1); }),
              HasSubstr("peer " + std::to_string(n_) + " is outside the job's"));
  EXPECT_THAT(error_of([&] { transport_->recv(m.tensor, -1, 1); }), HasSubstr("peer -1"));
}

// Rank 0 waits for a message rank 1 never sends: the error names the peer, the tag and the
// timeout. The cancelled receive leaves the transport usable: a later message still arrives.
TEST_P(TransportTest, ReceiveTimeoutNamesThePeer) {
  auto quick = make_transport(GetParam(), MPI_COMM_WORLD, milliseconds(800));
  Message in(4, 4);
  if (me_ == 0) {
    auto r = quick->recv(in.tensor, 1, 4242);
    const auto start = std::chrono::steady_clock::now();
    std::string message = error_of([&] { r->wait(); });
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_THAT(message, HasSubstr("recv from peer 1 (tag 4242, 64 bytes, " + GetParam() +
                                   ") did not complete within 800 ms"));
    EXPECT_GE(waited, 0.75);
    EXPECT_LT(waited, 2.5);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (me_ == 0) {
    auto r = quick->recv(in.tensor, 1, 4243);
    r->wait();
    EXPECT_EQ(in.first_wrong(1, 4243), -1);
  } else if (me_ == 1) {
    Message out(4, 4);
    out.fill(1, 4243);
    quick->send(out.tensor, 0, 4243)->wait();
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, TransportTest, ::testing::Values("mpi", "ucx"),
                         [](const auto& info) { return info.param; });

TEST(Transport, TheFactoryListsTheKindsOfThisBuild) {
  const std::vector<std::string> kinds = transport_kinds();
  EXPECT_EQ(kinds[0], "mpi");
  EXPECT_EQ(kinds[1], "ucx");
#if defined(PARAFUSE_HAS_CUDA)
  EXPECT_EQ(kinds.size(), 3u);
  EXPECT_EQ(kinds[2], "nccl");
#else
  EXPECT_EQ(kinds.size(), 2u);
#endif
}

TEST(Transport, UnknownKindIsAnError) {
  const std::string all = transport_kinds().size() == 3 ? "mpi, ucx, nccl" : "mpi, ucx";
  EXPECT_THAT(error_of([] { make_transport("pigeon", MPI_COMM_WORLD, milliseconds(1000)); }),
              HasSubstr("unknown transport 'pigeon'; this build has " + all));
  EXPECT_THAT(error_of([] { make_transport("uxc", MPI_COMM_WORLD, milliseconds(1000)); }),
              HasSubstr("unknown transport 'uxc' (did you mean 'ucx'?)"));
}

// "nccl" moves GPU memory: in CUDA builds it needs the cuda backend, elsewhere a CUDA build.
TEST(Transport, NcclWithoutTheCudaBackendIsAClearError) {
  CpuBackend cpu(1);
#if defined(PARAFUSE_HAS_CUDA)
  EXPECT_THAT(error_of([] { make_transport("nccl", MPI_COMM_WORLD, milliseconds(1000)); }),
              HasSubstr("transport 'nccl' moves GPU memory and needs the cuda backend (this run's "
                        "backend is none)"));
  EXPECT_THAT(error_of([&] { make_transport("nccl", MPI_COMM_WORLD, milliseconds(1000), &cpu); }),
              HasSubstr("(this run's backend is cpu); use \"mpi\" or \"ucx\""));
#else
  EXPECT_THAT(error_of([&] { make_transport("nccl", MPI_COMM_WORLD, milliseconds(1000), &cpu); }),
              HasSubstr("needs a build with CUDA"));
#endif
}

// A host-memory backend's tensors go as they are; mpi and ucx keep their names.
TEST(Transport, HostBackendsGetThePlainKind) {
  CpuBackend cpu(1);
  EXPECT_EQ(make_transport("mpi", MPI_COMM_WORLD, milliseconds(1000), &cpu)->name(), "mpi");
}

}  // namespace
}  // namespace parafuse

// The MPI session, owning communicators and MpiCollectives.
//
// Every collective is posted non-blocking (MPI_I*) and polled with MPI_Test against one deadline
// per call, so a peer that died or never arrived turns into an Error naming the collective, the
// group's world ranks and the timeout instead of a hang. MPI_COMM_WORLD gets MPI_ERRORS_RETURN
// so that MPI failures reach PF_MPI_CHECK (and become Errors) instead of killing the process
// without a word; sub-communicators inherit it.
#include "parallel/mpi_comm.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "parallel/detail.h"

namespace parafuse {

namespace {

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

bool mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  return initialized != 0;
}

// Tests `req` until done or `timeout`; true when done (req is then MPI_REQUEST_NULL).
bool poll_request(MPI_Request& req, std::chrono::milliseconds timeout) {
  return poll_until_done(timeout, [&] {
    int done = 0;
    PF_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    return done != 0;
  });
}

// Largest element count per MPI call (MPI counts are int).
constexpr int64_t kMaxCount = int64_t(1) << 30;

// Arrival notices (see MpiCollectives::announce_arrival) travel as point-to-point messages on
// the group's own communicator, which never mixes them with its collectives. Each MpiCollectives
// takes the next tag of a small cycle: the ranks of a group construct their MpiCollectives in
// the same order, so two objects over one communicator (the session builder's setup "world"
// and its successor) never read each other's notices.
constexpr int kNoticeTagBase = 31000;
constexpr int kNoticeTags = 512;
int next_notice_tag() {
  static int constructed = 0;
  return kNoticeTagBase + (constructed++ % kNoticeTags);
}

}  // namespace

// --- MpiSession ---------------------------------------------------------------------------

MpiSession::MpiSession(int* argc, char*** argv) {
  PF_CHECK(!mpi_finalized(), "MPI was already finalized; only one MpiSession per process");
  if (!mpi_initialized()) {
    int provided = MPI_THREAD_SINGLE;
    PF_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      PF_THROW("MPI provides thread level {}, parafuse needs MPI_THREAD_FUNNELED", provided);
    }
    initialized_here_ = true;
  }
  PF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  PF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  PF_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  set_error_rank(rank_);
}

MpiSession::~MpiSession() {
  if (initialized_here_ && !mpi_finalized()) MPI_Finalize();
}

LocalRank MpiSession::local() const {
  LocalRank from_env = read_launch_environment().local;
  if (from_env.from_environment()) return from_env;
  MPI_Comm node = MPI_COMM_NULL;
  PF_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  LocalRank local;
  local.source = "MPI shared-memory split";
  MPI_Comm_rank(node, &local.rank);
  MPI_Comm_size(node, &local.size);
  MPI_Comm_free(&node);
  return local;
}

void MpiSession::abort(int code) {
  if (mpi_initialized() && !mpi_finalized()) MPI_Abort(MPI_COMM_WORLD, code);
  // MPI_Abort does not return; without MPI there is only this process to end.
  std::_Exit(code);
}

// --- MpiComm ------------------------------------------------------------------------------

MpiComm::MpiComm(MPI_Comm parent, int color, int key) {
  PF_MPI_CHECK(MPI_Comm_split(parent, color, key, &comm_));
}

MpiComm& MpiComm::operator=(MpiComm&& o) noexcept {
  if (this != &o) {
    this->~MpiComm();
    comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
  }
  return *this;
}

MpiComm::~MpiComm() {
  if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
  comm_ = MPI_COMM_NULL;
}

// --- waiting ------------------------------------------------------------------------------

void mpi_wait_with_timeout(MPI_Request& req, std::chrono::milliseconds timeout,
                           const std::string& what) {
  PF_CHECK(poll_request(req, timeout), "{} did not complete within {}: a peer is stuck or dead",
           what, describe_timeout(timeout));
}

// --- MpiCollectives -----------------------------------------------------------------------

MpiCollectives::MpiCollectives(MPI_Comm comm, std::string name, std::vector<int> world_ranks,
                               std::chrono::milliseconds timeout)
    : comm_(comm), name_(std::move(name)), world_ranks_(std::move(world_ranks)), timeout_(timeout) {
  PF_CHECK(comm != MPI_COMM_NULL, "MpiCollectives '{}': null communicator", name_);
  PF_CHECK(timeout.count() > 0, "MpiCollectives '{}': timeout must be positive, got {} ms", name_,
           timeout.count());
  PF_MPI_CHECK(MPI_Comm_rank(comm, &rank_));
  PF_MPI_CHECK(MPI_Comm_size(comm, &size_));
  PF_CHECK(world_ranks_.empty() || int(world_ranks_.size()) == size_,
           "MpiCollectives '{}': {} world ranks given for a group of {}", name_,
           world_ranks_.size(), size_);
  if (world_ranks_.empty())
    for (int r = 0; r < size_; ++r) world_ranks_.push_back(r);
  peer_sequence_.assign(size_t(size_), 0);
  notice_tag_ = next_notice_tag();
  // Announce after a quarter of the timeout (at most 0.5 s): long before anyone times out, and
  // never for the quick calls of a healthy job.
  notice_delay_ = std::min(std::chrono::milliseconds(500), timeout_ / 4);
}

MpiCollectives::~MpiCollectives() {
  if (mpi_finalized()) return;
  // Notices still in flight (rare: a peer that never took them) finish on their own; nothing
  // waits for them.
  drain_notices();
  for (Notice& n : notices_) {
    if (n.request != MPI_REQUEST_NULL) MPI_Request_free(&n.request);
    (void)n.value.release();  // MPI may still read it: leaked on purpose (8 bytes per notice)
  }
  if (abandoned_.empty()) return;
  // Give late peers a moment; whatever is still pending after that is left to MPI_Finalize /
  // MPI_Abort (a pending collective can be neither cancelled nor freed).
  poll_until_done(std::chrono::milliseconds(200), [&] {
    reap_abandoned();
    return abandoned_.empty();
  });
}

void MpiCollectives::reap_abandoned() {
  for (size_t i = 0; i < abandoned_.size();) {
    int done = 0;
    if (MPI_Test(&abandoned_[i].request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done) {
      abandoned_.erase(abandoned_.begin() + std::ptrdiff_t(i));
    } else {
      ++i;
    }
  }
}

void MpiCollectives::announce_arrival() {
  if (announced_ == sequence_ || size_ == 1) return;
  announced_ = sequence_;
  peer_sequence_[size_t(rank_)] = sequence_;
  for (int peer = 0; peer < size_; ++peer) {
    if (peer == rank_) continue;
    Notice n{MPI_REQUEST_NULL, std::make_unique<uint64_t>(sequence_)};
    // A dead peer may refuse it (MPI_ERRORS_RETURN): a diagnostic is never worth an error.
    if (MPI_Isend(n.value.get(), 1, MPI_UINT64_T, peer, notice_tag_, comm_, &n.request) ==
        MPI_SUCCESS)
      notices_.push_back(std::move(n));
  }
}

void MpiCollectives::drain_notices() {
  for (size_t i = 0; i < notices_.size();) {
    int done = 0;
    if (MPI_Test(&notices_[i].request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done) {
      notices_.erase(notices_.begin() + std::ptrdiff_t(i));
    } else {
      ++i;
    }
  }
  for (;;) {
    int pending = 0;
    MPI_Status status;
    if (MPI_Iprobe(MPI_ANY_SOURCE, notice_tag_, comm_, &pending, &status) != MPI_SUCCESS ||
        !pending)
      return;
    uint64_t call = 0;
    if (MPI_Recv(&call, 1, MPI_UINT64_T, status.MPI_SOURCE, notice_tag_, comm_,
                 MPI_STATUS_IGNORE) != MPI_SUCCESS)
      return;
    uint64_t& seen = peer_sequence_[size_t(status.MPI_SOURCE)];
    seen = std::max(seen, call);
  }
}

std::string MpiCollectives::describe_missing() const {
  std::vector<int> missing, arrived;
  for (int r = 0; r < size_; ++r)
    (peer_sequence_[size_t(r)] >= sequence_ ? arrived : missing).push_back(world_ranks_[size_t(r)]);
  if (missing.empty())
    return fmt::format(
        "every rank of the group arrived (world ranks {}), but the collective "
        "did not complete: a rank stopped inside it, or the network between them is stuck",
        fmt::join(arrived, ","));
  return fmt::format(
      "world rank{} {} did not arrive (stuck or dead; world rank{} {} waited "
      "in it)",
      missing.size() > 1 ? "s" : "", fmt::join(missing, ","), arrived.size() > 1 ? "s" : "",
      fmt::join(arrived, ","));
}

void MpiCollectives::wait(MPI_Request& req, const char* what,
                          std::chrono::steady_clock::time_point deadline, bool uses_staging) {
  using std::chrono::milliseconds;
  const auto until = [](std::chrono::steady_clock::time_point t) {
    return std::max(milliseconds(0),
                    std::chrono::duration_cast<milliseconds>(t - std::chrono::steady_clock::now()));
  };
  // Quick calls: only the request. Slow ones: tell the group, and listen while waiting.
  const auto notice_at = deadline - timeout_ + notice_delay_;
  if (poll_request(req, std::min(until(notice_at), until(deadline)))) return;
  const auto test_and_listen = [&] {
    int done = 0;
    PF_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    drain_notices();
    return done != 0;
  };
  announce_arrival();
  if (poll_until_done(until(deadline), test_and_listen)) return;
  // Timed out. The ranks that waited too have told us so by now (they announce after
  // notice_delay_); give late notices one more notice_delay_ to come in.
  if (poll_until_done(notice_delay_, test_and_listen)) return;
  Abandoned parked{req, {}, {}};
  if (uses_staging) {
    parked.staging = std::exchange(staging_, {});
    parked.staging_out = std::exchange(staging_out_, {});
  }
  abandoned_.push_back(std::move(parked));
  req = MPI_REQUEST_NULL;
  PF_THROW("{} #{} on {} (world ranks {}) did not complete within {}: {}", what, sequence_, name_,
           fmt::join(world_ranks_, ","), describe_timeout(timeout_), describe_missing());
}

void MpiCollectives::all_reduce_sum(const Tensor& t) {
  CollectiveTimer timer(stats_);
  ++sequence_;
  ++stats_.all_reduce_calls;
  PF_CHECK(t.dtype == DType::F32, "all_reduce on {}: supports F32 tensors, got {}", name_,
           dtype_name(t.dtype));
  PF_CHECK(t.rows >= 0 && t.cols >= 0 && (t.rows <= 1 || t.row_stride >= t.cols),
           "all_reduce on {}: bad tensor shape ({}, {}) with row stride {}", name_, t.rows, t.cols,
           t.row_stride);
  stats_.bytes += int64_t(t.bytes());
  reap_abandoned();
  if (t.numel() == 0) return;
  const auto deadline = timer.start() + timeout_;
  const bool packed = needs_packing(t);
  float* data = t.f32();
  if (packed) {
    staging_.resize(t.bytes());
    pack_rows(t, staging_.data());
    data = reinterpret_cast<float*>(staging_.data());
  }
  for (int64_t begin = 0; begin < t.numel(); begin += kMaxCount) {
    const int count = int(std::min(kMaxCount, t.numel() - begin));
    MPI_Request req = MPI_REQUEST_NULL;
    PF_MPI_CHECK(
        MPI_Iallreduce(MPI_IN_PLACE, data + begin, count, MPI_FLOAT, MPI_SUM, comm_, &req));
    wait(req, "all_reduce", deadline, packed);
  }
  if (packed) unpack_rows(staging_.data(), t);
}

void MpiCollectives::all_gather_rows(const Tensor& local, const Tensor& out) {
  CollectiveTimer timer(stats_);
  ++sequence_;
  ++stats_.all_gather_calls;
  PF_CHECK(local.dtype == out.dtype && local.cols == out.cols && out.rows == local.rows * size_,
           "all_gather on {}: out ({}, {}) {} must be ({} ranks x {} rows, {}) {}", name_, out.rows,
           out.cols, dtype_name(out.dtype), size_, local.rows, local.cols, dtype_name(local.dtype));
  stats_.bytes += int64_t(out.bytes());
  reap_abandoned();
  if (out.numel() == 0) return;
  const size_t row_bytes = size_t(local.cols) * dtype_size(local.dtype);
  PF_CHECK(row_bytes <= size_t(INT_MAX) && local.rows <= INT_MAX,
           "all_gather on {}: rows of {} bytes x {} are too large for one MPI call", name_,
           row_bytes, local.rows);
  const bool pack_in = needs_packing(local);
  const bool pack_out = needs_packing(out);
  const void* send = local.data;
  void* recv = out.data;
  if (pack_in) {
    staging_.resize(local.bytes());
    pack_rows(local, staging_.data());
    send = staging_.data();
  }
  if (pack_out) {
    staging_out_.resize(out.bytes());
    recv = staging_out_.data();
  }
  // One row is one element of a contiguous datatype, so counts stay small for big tensors.
  MPI_Datatype row_type;
  PF_MPI_CHECK(MPI_Type_contiguous(int(row_bytes), MPI_BYTE, &row_type));
  PF_MPI_CHECK(MPI_Type_commit(&row_type));
  MPI_Request req = MPI_REQUEST_NULL;
  int rc =
      MPI_Iallgather(send, int(local.rows), row_type, recv, int(local.rows), row_type, comm_, &req);
  MPI_Type_free(&row_type);  // freed once the pending operation no longer needs it
  PF_MPI_CHECK(rc);
  wait(req, "all_gather", timer.start() + timeout_, pack_in || pack_out);
  if (pack_out) unpack_rows(staging_out_.data(), out);
}

void MpiCollectives::broadcast_bytes(void* data, size_t bytes, int root) {
  CollectiveTimer timer(stats_);
  ++sequence_;
  ++stats_.broadcast_calls;
  PF_CHECK(0 <= root && root < size_, "broadcast on {}: root {} is outside the group of {}", name_,
           root, size_);
  stats_.bytes += int64_t(bytes);
  reap_abandoned();
  const auto deadline = timer.start() + timeout_;
  char* p = static_cast<char*>(data);
  for (size_t begin = 0; begin < bytes; begin += size_t(kMaxCount)) {
    const int count = int(std::min(size_t(kMaxCount), bytes - begin));
    MPI_Request req = MPI_REQUEST_NULL;
    PF_MPI_CHECK(MPI_Ibcast(p + begin, count, MPI_BYTE, root, comm_, &req));
    wait(req, "broadcast", deadline);
  }
}

void MpiCollectives::barrier() {
  CollectiveTimer timer(stats_);
  ++sequence_;
  ++stats_.barrier_calls;
  reap_abandoned();
  MPI_Request req = MPI_REQUEST_NULL;
  PF_MPI_CHECK(MPI_Ibarrier(comm_, &req));
  wait(req, "barrier", timer.start() + timeout_);
}

}  // namespace parafuse

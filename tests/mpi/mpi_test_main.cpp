// GoogleTest main for tests run under mpirun: one MpiSession for the process, GoogleTest's
// output from rank 0 only (other ranks print just their failures, prefixed with the rank), and
// an exit code that is non-zero on every rank when any rank failed (the results are
// all-reduced), so mpirun and ctest report a failure on rank 3 as a failure.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "parallel/mpi_comm.h"

namespace {

// Replaces GoogleTest's printer on ranks other than 0: only failed assertions, with the rank.
class FailuresOnlyPrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailuresOnlyPrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  parafuse::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (mpi.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailuresOnlyPrinter(mpi.rank()));
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && !failed && mpi.rank() == 0) {
    std::fprintf(stderr, "Another rank failed (see its [rank N] lines above).\n");
  }
  return any_failed;
}

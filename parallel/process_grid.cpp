// Rank arithmetic of the TP x PP grid and the reading of the launcher's environment.
//
// Everything here is a pure function of a few integers (plus, for read_launch_environment, the
// process environment), so the unit test can check every layout without MPI. The launcher's
// variables are read in exactly this one place: Open MPI first, then PMIx/PMI and Slurm.
#include "parallel/process_grid.h"

#include <cerrno>
#include <cstdlib>
#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "kernels/core/error.h"

namespace parafuse {

ProcessGrid::ProcessGrid(int world_size, int world_rank, int tp, int pp, int local_rank,
                         int local_size)
    : world_size_(world_size),
      world_rank_(world_rank),
      tp_(tp),
      pp_(pp),
      local_rank_(local_rank),
      local_size_(local_size) {
  PF_CHECK(world_size >= 1, "process grid: the job has {} ranks; it needs at least 1", world_size);
  PF_CHECK(tp >= 1 && pp >= 1, "process grid: tp={} and pp={} must both be at least 1", tp, pp);
  PF_CHECK(int64_t(tp) * pp == world_size,
           "tp={} x pp={} = {} ranks, but the job has {} (mpirun -np {})", tp, pp, int64_t(tp) * pp,
           world_size, world_size);
  PF_CHECK(0 <= world_rank && world_rank < world_size,
           "process grid: world rank {} is outside [0, {})", world_rank, world_size);
  PF_CHECK(local_size >= 1 && 0 <= local_rank && local_rank < local_size,
           "process grid: local rank {} is outside [0, {}) (local size {})", local_rank, local_size,
           local_size);
}

int ProcessGrid::device(int devices_per_node) const {
  PF_CHECK(devices_per_node >= 1, "process grid: {} devices per node; need at least 1",
           devices_per_node);
  return local_rank_ % devices_per_node;
}

std::vector<int> ProcessGrid::tp_group() const {
  std::vector<int> ranks;
  ranks.reserve(size_t(tp_));
  for (int t = 0; t < tp_; ++t) ranks.push_back(rank_of(pp_stage(), t));
  return ranks;
}

std::string ProcessGrid::describe() const {
  return fmt::format("rank {}/{}: stage {}/{}, tp {}/{}, local rank {}/{}", world_rank_,
                     world_size_, pp_stage(), pp_, tp_rank(), tp_, local_rank_, local_size_);
}

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

// The leading decimal integer of `value` ("4" -> 4, "4(x2)" -> 4); the whole value must be that
// integer unless `allow_suffix` (Slurm's task-count syntax).
int parse_count(const char* name, const std::string& value, bool allow_suffix) {
  errno = 0;
  char* end = nullptr;
  long n = std::strtol(value.c_str(), &end, 10);
  bool ok = end != value.c_str() && errno == 0 && n >= 0 && n <= 1 << 24;
  if (ok && *end != '\0') ok = allow_suffix && *end == '(';
  PF_CHECK(ok, "environment variable {}={} is not a rank count", name, value);
  return int(n);
}

// Slurm's per-node task count: SLURM_NTASKS_PER_NODE ("4", or "4(x2)" on some versions), else
// SLURM_TASKS_PER_NODE when every node has the same count ("4" or "4(x2)"; "2(x3),1" differs
// per node and cannot say which node this is).
std::optional<int> slurm_tasks_per_node() {
  if (auto v = env("SLURM_NTASKS_PER_NODE")) return parse_count("SLURM_NTASKS_PER_NODE", *v, true);
  if (auto v = env("SLURM_TASKS_PER_NODE")) {
    if (v->find(',') != std::string::npos) return std::nullopt;
    return parse_count("SLURM_TASKS_PER_NODE", *v, true);
  }
  return std::nullopt;
}

LocalRank checked(int rank, int size, const char* source, const char* environment) {
  PF_CHECK(size >= 1 && rank < size, "{}: local rank {} is outside the local size {}", environment,
           rank, size);
  return LocalRank{rank, size, source};
}

LocalRank local_rank_from_environment() {
  auto ompi_rank = env("OMPI_COMM_WORLD_LOCAL_RANK");
  auto ompi_size = env("OMPI_COMM_WORLD_LOCAL_SIZE");
  if (ompi_rank && ompi_size) {
    return checked(parse_count("OMPI_COMM_WORLD_LOCAL_RANK", *ompi_rank, false),
                   parse_count("OMPI_COMM_WORLD_LOCAL_SIZE", *ompi_size, false),
                   "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI environment");
  }
  if (auto slurm_rank = env("SLURM_LOCALID")) {
    if (auto size = slurm_tasks_per_node()) {
      return checked(parse_count("SLURM_LOCALID", *slurm_rank, false), *size, "SLURM_LOCALID",
                     "Slurm environment");
    }
  }
  return LocalRank{};
}

}  // namespace

LaunchEnvironment read_launch_environment() {
  LaunchEnvironment e;
  if (auto size = env("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "Open MPI";
    e.world_size = parse_count("OMPI_COMM_WORLD_SIZE", *size, false);
  } else if (env("PMIX_RANK")) {
    // srun --mpi=pmix runs each task in a job step; PMIx itself carries no size variable.
    const bool srun = env("SLURM_STEP_ID").has_value();
    e.launcher = srun ? "Slurm (PMIx)" : "PMIx";
    if (auto ntasks = env("SLURM_NTASKS"); srun && ntasks)
      e.world_size = parse_count("SLURM_NTASKS", *ntasks, false);
  } else if (env("PMI_RANK") || env("PMI_SIZE")) {
    e.launcher = "PMI";
    if (auto size = env("PMI_SIZE")) e.world_size = parse_count("PMI_SIZE", *size, false);
  }
  if (e.under_launcher()) e.local = local_rank_from_environment();
  return e;
}

}  // namespace parafuse

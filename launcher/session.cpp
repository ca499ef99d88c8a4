// The session builder (see session.h).
#include "launcher/session.h"

#include <unistd.h>  // gethostname

#include <algorithm>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "kernels/backend_registry.h"
#include "kernels/core/error.h"
#include "launcher/progress_bar.h"
#include "parallel/mpi_comm.h"
#include "parallel/staged_collectives.h"
#include "parallel/transport.h"
#include "runtime/fusion/fusion_plan.h"
#include "runtime/model/fp8_quantize.h"

namespace parafuse {
namespace {

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(int64_t(seconds * 1000.0));
}

// BLAS threads per rank: as configured; else one per rank under a launcher, the whole machine
// for a lone process.
int resolve_threads(int requested, int world_size) {
  if (requested > 0) return requested;
  if (world_size > 1) return 1;
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

// The job has exactly tp x pp ranks, as the run config says; else an error that says how many
// to ask the launcher for, in its own words (the batch templates print this when an
// allocation has the wrong number of tasks). The environment's count, where it gives one,
// must match MPI's: srun without a working MPI plugin starts lone processes.
void check_world_size(const RunConfig& run, int world_size, const LaunchEnvironment& env) {
  const int64_t needed = int64_t(run.tp) * run.pp;
  const bool slurm = env.launcher.rfind("Slurm", 0) == 0;
  std::string file = run.source.substr(0, run.source.find(" + "));  // "x.yaml + command line"
  if (file.empty() || file == "command line") file = "RUN.yaml";
  PF_CHECK(env.world_size == 0 || env.world_size == world_size,
           "{} started {} tasks, but MPI sees a job of {}: the ranks did not find each other "
           "(under Slurm: srun --mpi=pmix)",
           env.launcher, env.world_size, world_size);
  PF_CHECK(needed == world_size,
           "tp={} x pp={} = {} ranks, but the job has {} ({}): ask for {} ({}; `parafuse config "
           "--world-size {}` prints the number)",
           run.tp, run.pp, needed, world_size, env.launcher.empty() ? "no launcher" : env.launcher,
           needed,
           slurm ? fmt::format("srun -n {} / sbatch --ntasks={}", needed, needed)
                 : fmt::format("mpirun -np {}", needed),
           file);
}

// Runs `local` on every rank; if it failed anywhere, every rank throws the first failure.
class Agreement {
 public:
  Agreement(MpiCollectives* world, int world_rank, int world_size)
      : world_(world), rank_(world_rank), size_(world_size) {}

  void operator()(const std::function<void()>& local) const {
    std::string error;
    try {
      local();
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!world_) {
      if (!error.empty()) throw SetupError(error, 0);
      return;
    }
    std::vector<float> failed(size_t(size_), 0.0f);
    failed[size_t(rank_)] = error.empty() ? 0.0f : 1.0f;
    world_->all_reduce_sum(Tensor{failed.data(), DType::F32, 1, size_, size_});
    int first = -1, count = 0;
    for (int r = 0; r < size_; ++r) {
      if (failed[size_t(r)] == 0) continue;
      if (first < 0) first = r;
      ++count;
    }
    if (first < 0) return;
    // The first failing rank's host and message, as "host\nmessage".
    const std::string mine = first == rank_ ? host_name() + "\n" + error : std::string();
    uint64_t length = mine.size();
    world_->broadcast_bytes(&length, sizeof(length), first);
    std::string both(length, '\0');
    if (first == rank_) both = mine;
    world_->broadcast_bytes(both.data(), length, first);
    const size_t newline = both.find('\n');
    throw SetupError(both.substr(newline + 1), first, both.substr(0, newline), count);
  }

  // Whether `mine` holds on every rank.
  bool all(bool mine) const {
    if (!world_) return mine;
    std::vector<float> lacking = {mine ? 0.0f : 1.0f};
    world_->all_reduce_sum(Tensor{lacking.data(), DType::F32, 1, 1, 1});
    return lacking[0] == 0.0f;
  }

 private:
  MpiCollectives* world_;
  int rank_, size_;
};

// Rank 0 logs one line per rank, in rank order: where each rank runs and what it drives.
void log_placement(const Session& s, MpiCollectives* world) {
  const ProcessGrid& g = *s.grid;
  const std::string line = fmt::format("{} ({}), host {}, backend {} device {}", g.describe(),
                                       s.local_rank_source, host_name(), s.run.backend, s.device);
  constexpr int64_t kWidth = 256;
  std::vector<char> mine(size_t(kWidth), '\0');
  std::memcpy(mine.data(), line.data(), std::min<size_t>(line.size(), kWidth - 1));
  std::vector<char> all(size_t(kWidth * g.world_size()), '\0');
  if (world) {  // the lines travel as rows of I32 (the collectives move typed tensors)
    constexpr int64_t kWords = kWidth / 4;
    world->all_gather_rows(Tensor{mine.data(), DType::I32, 1, kWords, kWords},
                           Tensor{all.data(), DType::I32, g.world_size(), kWords, kWords});
  } else {
    all = mine;
  }
  if (!s.is_root() || s.quiet) return;
  for (int r = 0; r < g.world_size(); ++r) spdlog::info("{}", all.data() + size_t(r) * kWidth);
}

}  // namespace

Session::Session() = default;
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;

const Tokenizer& Session::tokenizer() const {
  PF_CHECK(files.tokenizer.has_value(),
           "model '{}' has no tokenizer (no tokenizer.json beside config.json); pass the prompt "
           "as ids with --prompt-ids and print ids with --print-ids",
           files.path);
  return *files.tokenizer;
}

std::unique_ptr<Engine> Session::make_engine(const ModelFiles& model) const {
  EngineOptions eo;
  eo.kv_cache_tokens = run.batch.kv_cache_tokens;
  eo.max_batch_tokens = run.batch.max_batch_tokens;
  eo.page_size = run.batch.page_size;
  eo.kv_cache_dtype = parse_kv_cache_dtype(run.kv_cache_dtype);
  ParallelContext pc;
  if (world) {
    pc.grid = grid.get();
    pc.tp = tp_device ? tp_device.get() : static_cast<Collectives*>(tp.get());
    pc.world = world.get();
    pc.transport = transport.get();
  }
  pc.pp_split = run.pp_split;
  pc.micro_batches = run.batch.micro_batches;
  ProgressBar bar("loading weights", !quiet && is_root());
  auto engine =
      std::make_unique<Engine>(model.config, *model.weights, *backend, eo, pc,
                               [&](size_t done, size_t total) { bar.update(done, total); });
  bar.finish();
  return engine;
}

SessionBuilder::SessionBuilder(LaunchContext& launch, const SessionFlags& flags)
    : launch_(launch), flags_(flags) {}

SessionBuilder& SessionBuilder::configure(std::function<void(RunConfig&)> fn) {
  configure_ = std::move(fn);
  return *this;
}

SessionBuilder& SessionBuilder::check(std::function<void(Session&)> fn) {
  check_ = std::move(fn);
  return *this;
}

SessionBuilder& SessionBuilder::single_rank(std::string command) {
  single_rank_command_ = std::move(command);
  return *this;
}

Session SessionBuilder::build() {
  Session s;
  s.quiet = flags_.quiet;
  MpiSession* mpi = launch_.mpi;
  const int world_size = mpi ? mpi->size() : 1;
  const int world_rank = mpi ? mpi->rank() : 0;
  // Until the run config is read, the setup agreement itself uses the default timeout.
  if (mpi) {
    s.world_group = std::make_unique<MpiComm>(MPI_COMM_WORLD, 0, world_rank);
    std::vector<int> all(static_cast<size_t>(world_size));
    for (int r = 0; r < world_size; ++r) all[size_t(r)] = r;
    s.world = std::make_unique<MpiCollectives>(s.world_group->get(), "world", all,
                                               to_ms(RunConfig{}.timeouts.collective_seconds));
  }
  const Agreement agree(s.world.get(), world_rank, world_size);
  const RunConfig& run = s.run;

  // 1. Config, grid, model files, backend: each rank alone, then agreed.
  agree([&] {
    s.run = resolve_run_config(flags_.run);
    if (configure_) configure_(s.run);
    if (!single_rank_command_.empty())
      PF_CHECK(world_size == 1 && run.tp == 1 && run.pp == 1,
               "parafuse {} runs on a single rank (tp=1, pp=1: it observes whole hidden states), "
               "but was launched with {} ranks, tp={}, pp={}: run it without mpirun/srun",
               single_rank_command_, world_size, run.tp, run.pp);
    PF_CHECK(mpi || run.tp * run.pp == 1,
             "tp={} x pp={} needs {} ranks: run under mpirun -np {} (or srun -n {})", run.tp,
             run.pp, run.tp * run.pp, run.tp * run.pp, run.tp * run.pp);
    check_world_size(run, world_size, read_launch_environment());
    const LocalRank local = mpi ? mpi->local() : LocalRank{0, 1, "single process"};
    s.grid = std::make_unique<ProcessGrid>(world_size, world_rank, run.tp, run.pp, local.rank,
                                           local.size);
    s.local_rank_source = local.source;
    s.threads = resolve_threads(run.threads, world_size);
    // The backend's device: this rank's local rank over the devices its node has, from the
    // same local rank the grid holds (so ranks of a node never share a device they need not).
    std::string why;
    const int devices = backend_info(run.backend).device_count(&why);
    PF_CHECK(devices > 0, "backend '{}': no device on this node: {}", run.backend, why);
    s.device = s.grid->device(devices);
    s.files = open_model(run.model);
    if (wants_fp8_weights(run))  // every rank quantizes its own slices, the same way
      s.files.weights = std::make_unique<Fp8QuantizedWeights>(std::move(s.files.weights));
    s.backend = make_backend(run.backend,
                             {backend_dtype(run), s.threads, s.device, run.weight_dtype == "auto"});
    if (check_) check_(s);
  });
  if (s.is_root() && !s.quiet) {
    const std::string launcher = read_launch_environment().launcher;
    spdlog::info("{} rank{}, launched by {}; model {} (run config from {}): {}", world_size,
                 world_size > 1 ? "s" : "", launcher.empty() ? "nobody (a lone process)" : launcher,
                 run.model, run.source, s.files.config.summary());
  }
  log_placement(s, s.world.get());

  // 2. Communicators and transport: collective calls, every rank in the same order.
  const auto collective_timeout = to_ms(run.timeouts.collective_seconds);
  const bool on_device = s.backend->device_memory();
  if (mpi) {
    s.world = std::make_unique<MpiCollectives>(s.world_group->get(), "world",
                                               s.world->world_ranks(), collective_timeout);
    const Agreement agreed(s.world.get(), world_rank, world_size);
    s.tp_group = std::make_unique<MpiComm>(MPI_COMM_WORLD, s.grid->pp_stage(), s.grid->tp_rank());
    s.tp = std::make_unique<MpiCollectives>(s.tp_group->get(),
                                            fmt::format("tp group of stage {}", s.grid->pp_stage()),
                                            s.grid->tp_group(), collective_timeout);
    // NCCL needs a device of its own for every rank: decided together so all ranks agree.
    std::string why;
    const bool device_per_rank = agreed.all(
        on_device && backend_info(run.backend).device_count(&why) >= s.grid->local_size());
    agreed([&] {
      PF_CHECK(run.pp == 1 || run.transport != "nccl" || (on_device && device_per_rank),
               "transport 'nccl' needs the cuda backend and one GPU per rank ({}); use \"mpi\" or "
               "\"ucx\", which stage device tensors through host memory",
               on_device ? "some node has more ranks than GPUs" : "the backend is cpu");
    });
    if (on_device && run.tp > 1)
      s.tp_device = make_device_collectives(*s.tp, *s.backend, device_per_rank, collective_timeout);
    if (run.pp > 1)
      s.transport = make_transport(run.transport, MPI_COMM_WORLD,
                                   to_ms(run.timeouts.transport_seconds), s.backend.get());
    if (s.is_root() && !s.quiet && on_device && run.tp * run.pp > 1)
      spdlog::info("device collectives: tp {}, pp {}",
                   s.tp_device ? s.tp_device->name() : std::string("none"),
                   s.transport ? s.transport->name() : std::string("none"));
  }

  // 3. The engine, loaded agreed, and the fusion plan's overrides.
  const Agreement agreed(s.world.get(), world_rank, world_size);
  agreed([&] { s.engine = s.make_engine(s.files); });
  if (!run.fusion_plan.empty()) {
    agreed([&] {
      const FusionPlan plan = load_fusion_plan(run.fusion_plan);
      s.engine->stage().set_overrides(plan.overrides(s.files.config));
    });
    if (s.is_root() && !s.quiet)
      spdlog::info("parallel-FFN mode per fusion plan {}", run.fusion_plan);
  }
  if (s.is_root() && !s.quiet) {
    const PagedKvCache& kv = s.engine->kv_cache();
    spdlog::info("KV cache: {} tokens in {} ({:.1f} MB on this rank; kv_cache_dtype {})",
                 kv.capacity_tokens(), dtype_name(kv.dtype()), double(kv.bytes()) / 1e6,
                 run.kv_cache_dtype);
  }
  if (s.is_root() && !s.quiet)
    spdlog::info("pipeline split (tp={}, pp={}, transport {}):\n{}", run.tp, run.pp,
                 run.pp > 1 ? run.transport : "none", describe_plan(s.engine->pipeline_plan()));
  return s;
}

void Session::log_step_stats(const char* phase) const {
  const EngineStats& st = engine->stats();
  // [all-reduces counted once per TP group, forward steps, collective seconds, transport s]
  std::vector<float> v = {
      float(grid->tp_rank() == 0 ? st.tp_all_reduces : 0),
      float(is_root() ? st.forwards : 0),
      float(st.collective_seconds),
      float(st.transport_seconds),
  };
  if (world)
    world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, int64_t(v.size()), int64_t(v.size())});
  if (!is_root() || v[1] == 0) return;
  const int ranks = grid->world_size();
  spdlog::info(
      "{}: {} forward steps, {:.1f} all-reduces per step (tp={}, over all stages), "
      "TP collectives {:.3f}s and pipeline waits {:.3f}s per rank on average",
      phase, int64_t(v[1]), double(v[0]) / double(v[1]), run.tp, v[2] / float(ranks),
      v[3] / float(ranks));
}

}  // namespace parafuse

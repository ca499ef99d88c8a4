// Session setup on every rank, with agreed errors. See session.h.
#include "launcher/session.h"

#include <cstdlib>
#include <thread>

#include <spdlog/spdlog.h>

#include "kernels/core/error.h"
#include "kernels/cpu/cpu_backend.h"
#if defined(PARAFUSE_HAS_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "parallel/nccl_collectives.h"
#endif
#include "launcher/progress_bar.h"
#include "parallel/mpi_comm.h"
#include "parallel/process_grid.h"
#include "parallel/staged_collectives.h"
#include "parallel/transport.h"
#include "runtime/fusion/fusion_plan.h"

namespace parafuse {
namespace {

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(int64_t(seconds * 1000.0));
}

std::unique_ptr<Backend> make_backend(const RunConfig& run) {
#if defined(PARAFUSE_HAS_CUDA)
  if (run.backend == "cuda") {
    PF_CHECK(run.dtype == "auto" || run.dtype == "bf16",
             "dtype '{}' is not supported by the cuda backend (use bf16 or auto)", run.dtype);
    std::string why;
    const int devices = cuda_device_count(&why);
    PF_CHECK(devices > 0, "backend 'cuda': no CUDA device: {}", why);
    CudaBackendOptions options;
    options.device = local_rank_from_environment().rank % devices;  // one GPU per local rank
    return make_cuda_backend(options);
  }
  PF_CHECK(run.backend == "cpu",
           "backend '{}' is not available in this build (built backends: cpu, cuda)", run.backend);
#else
  PF_CHECK(run.backend == "cpu",
           "backend '{}' is not available in this build (built backends: cpu; configure with "
           "-DPARAFUSE_CUDA=ON for cuda)",
           run.backend);
#endif
  PF_CHECK(run.dtype == "auto" || run.dtype == "f32",
           "dtype '{}' is not supported by the cpu backend (use f32 or auto)", run.dtype);
  return make_cpu_backend(resolve_threads(run.threads));
}

// Whether every rank on this node can have a GPU of its own (make_backend's device choice).
bool gpus_per_rank_ok(LaunchContext& launch) {
#if defined(PARAFUSE_HAS_CUDA)
  const LocalRank local = launch.mpi ? launch.mpi->local() : LocalRank{};
  return cuda_device_count() >= std::max(1, local.size);
#else
  (void)launch;
  return false;
#endif
}

// The TP group's collectives over the device backend's tensors.
std::unique_ptr<Collectives> make_device_tp(Session& s, bool own_gpus,
                                            std::chrono::milliseconds timeout) {
#if defined(PARAFUSE_HAS_CUDA)
  if (own_gpus) {
    auto& cuda = dynamic_cast<CudaBackend&>(*s.backend);
    return std::make_unique<NcclCollectives>(
        s.tp_group->get(), fmt::format("tp group of stage {} (nccl)", s.grid->pp_stage()),
        s.grid->tp_group(), cuda.device(), cuda.stream(), timeout);
  }
#else
  (void)own_gpus, (void)timeout;
#endif
  return std::make_unique<StagedCollectives>(*s.tp, *s.backend);
}

}  // namespace

Session::Session() = default;
Session::~Session() = default;
Session::Session(Session&&) noexcept = default;

int resolve_threads(int requested) {
  if (requested > 0) return requested;
  // Under a launcher every rank gets one BLAS thread; alone, the whole machine.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}) {
    const char* v = std::getenv(var);
    if (v && std::atoi(v) > 1) return 1;
  }
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

bool Session::is_root() const {
  return !grid || grid->world_rank() == 0;
}

const Tokenizer& Session::tokenizer() const {
  PF_CHECK(files.tokenizer.has_value(),
           "model '{}' has no tokenizer (no tokenizer.json beside config.json); pass the prompt "
           "as ids with --prompt-ids and print ids with --print-ids",
           files.path);
  return *files.tokenizer;
}

Session open_session(const RunConfigOverrides& overrides, LaunchContext& launch, bool quiet,
                     const std::function<void(RunConfig&)>& configure,
                     const std::function<void(Session&)>& check) {
  Session s;
  s.quiet = quiet;
  const int world_size = launch.mpi ? launch.mpi->size() : 1;
  const int world_rank = launch.mpi ? launch.mpi->rank() : 0;
  // Until the run config is read, the setup agreement itself uses the default timeout.
  auto collective_timeout = to_ms(RunConfig{}.timeouts.collective_seconds);

  if (launch.mpi) {
    s.world_group = std::make_unique<MpiComm>(MPI_COMM_WORLD, 0, world_rank);
    std::vector<int> all(static_cast<size_t>(world_size));
    for (int r = 0; r < world_size; ++r) all[size_t(r)] = r;
    s.world =
        std::make_unique<MpiCollectives>(s.world_group->get(), "world", all, collective_timeout);
  }
  // Runs `local` on every rank; if it failed anywhere, every rank throws the first failure.
  auto agree = [&](const std::function<void()>& local) {
    std::string error;
    try {
      local();
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!s.world) {
      if (!error.empty()) throw SetupError(error, 0);
      return;
    }
    std::vector<float> failed(static_cast<size_t>(world_size), 0.0f);
    failed[size_t(world_rank)] = error.empty() ? 0.0f : 1.0f;
    s.world->all_reduce_sum(Tensor{failed.data(), DType::F32, 1, world_size, world_size});
    int first = -1;
    for (int r = 0; r < world_size && first < 0; ++r)
      if (failed[size_t(r)] > 0) first = r;
    if (first < 0) return;
    uint64_t length = first == world_rank ? error.size() : 0;
    s.world->broadcast_bytes(&length, sizeof(length), first);
    std::string message(length, '\0');
    if (first == world_rank) message = error;
    s.world->broadcast_bytes(message.data(), length, first);
    throw SetupError(message, first);
  };

  const RunConfig& run = s.run;
  agree([&] {
    s.run = resolve_run_config(overrides);
    if (configure) configure(s.run);
    PF_CHECK(launch.mpi || run.tp * run.pp == 1,
             "tp={} x pp={} needs {} ranks: run under mpirun -np {} (or srun -n {})", run.tp,
             run.pp, run.tp * run.pp, run.tp * run.pp, run.tp * run.pp);
    const LocalRank local = launch.mpi ? launch.mpi->local() : LocalRank{};
    s.grid = std::make_unique<ProcessGrid>(world_size, world_rank, run.tp, run.pp, local.rank,
                                           local.size);
    s.files = open_model(run.model);
    s.backend = make_backend(run);
    if (check) check(s);
  });
  collective_timeout = to_ms(run.timeouts.collective_seconds);
  if (s.is_root() && !quiet) spdlog::info("model {}: {}", run.model, s.files.config.summary());

  ParallelContext pc;
  if (launch.mpi) {
    // Collective: every rank builds the same groups.
    s.tp_group = std::make_unique<MpiComm>(MPI_COMM_WORLD, s.grid->pp_stage(), s.grid->tp_rank());
    s.tp = std::make_unique<MpiCollectives>(s.tp_group->get(),
                                            fmt::format("tp group of stage {}", s.grid->pp_stage()),
                                            s.grid->tp_group(), collective_timeout);
    const bool on_device = s.backend->name() != "cpu";
    // NCCL needs a GPU of its own for every rank; decided together so all ranks agree.
    std::vector<float> lacking = {on_device && gpus_per_rank_ok(launch) ? 0.0f : 1.0f};
    s.world->all_reduce_sum(Tensor{lacking.data(), DType::F32, 1, 1, 1});
    const bool own_gpus = lacking[0] == 0.0f;
    agree([&] {
      PF_CHECK(run.pp == 1 || run.transport != "nccl" || (on_device && own_gpus),
               "transport 'nccl' needs the cuda backend and one GPU per rank ({}); use \"mpi\" or "
               "\"ucx\", which stage device tensors through host memory",
               on_device ? "some node has more ranks than GPUs" : "the backend is cpu");
    });
    if (on_device && run.tp > 1) s.tp_device = make_device_tp(s, own_gpus, collective_timeout);
    if (run.pp > 1) {
      s.transport =
          make_transport(run.transport, MPI_COMM_WORLD, to_ms(run.timeouts.transport_seconds));
      if (on_device && run.transport != "nccl")
        s.transport = make_staged_transport(std::move(s.transport), *s.backend);
    }
    if (s.is_root() && !quiet && on_device && run.tp * run.pp > 1)
      spdlog::info("device collectives: tp {}, pp {}",
                   s.tp_device ? s.tp_device->name() : std::string("none"),
                   s.transport ? s.transport->name() : std::string("none"));
    pc.grid = s.grid.get();
    pc.tp = s.tp_device ? s.tp_device.get() : static_cast<Collectives*>(s.tp.get());
    pc.world = s.world.get();
    pc.transport = s.transport.get();
  }
  pc.pp_split = run.pp_split;
  pc.micro_batches = run.batch.micro_batches;

  EngineOptions eo;
  eo.kv_cache_tokens = run.batch.kv_cache_tokens;
  eo.max_batch_tokens = run.batch.max_batch_tokens;
  eo.page_size = run.batch.page_size;
  agree([&] {
    ProgressBar bar("loading weights", !quiet && s.is_root());
    s.engine =
        std::make_unique<Engine>(s.files.config, *s.files.weights, *s.backend, eo, pc,
                                 [&](size_t done, size_t total) { bar.update(done, total); });
    bar.finish();
  });
  if (!run.fusion_plan.empty()) {
    agree([&] {
      const FusionPlan plan = load_fusion_plan(run.fusion_plan);
      s.engine->stage().set_overrides(plan.overrides(s.files.config));
    });
    if (s.is_root() && !quiet)
      spdlog::info("parallel-FFN mode per fusion plan {}", run.fusion_plan);
  }
  if (s.is_root() && !quiet)
    spdlog::info("pipeline split (tp={}, pp={}, transport {}):\n{}", run.tp, run.pp,
                 run.pp > 1 ? run.transport : "none", describe_plan(s.engine->pipeline_plan()));
  return s;
}

void Session::log_step_stats(const char* phase) const {
  const EngineStats& st = engine->stats();
  // [all-reduces counted once per TP group, forward steps, collective seconds, transport s]
  std::vector<float> v = {
      float(!grid || grid->tp_rank() == 0 ? st.tp_all_reduces : 0),
      float(is_root() ? st.forwards : 0),
      float(st.collective_seconds),
      float(st.transport_seconds),
  };
  if (world)
    world->all_reduce_sum(Tensor{v.data(), DType::F32, 1, int64_t(v.size()), int64_t(v.size())});
  if (!is_root() || v[1] == 0) return;
  const int ranks = grid ? grid->world_size() : 1;
  spdlog::info(
      "{}: {} forward steps, {:.1f} all-reduces per step (tp={}, over all stages), "
      "TP collectives {:.3f}s and pipeline waits {:.3f}s per rank on average",
      phase, int64_t(v[1]), double(v[0]) / double(v[1]), run.tp, v[2] / float(ranks),
      v[3] / float(ranks));
}

}  // namespace parafuse

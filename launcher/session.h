// Everything a model-running subcommand sets up, on every rank: the run config, the model
// files, the backend, the process grid with its communicators and transport, and the engine.
//
// Setup is agreed: each rank does its local part (open files, check the split, load its
// shard), then all ranks compare notes. If any rank failed, every rank throws SetupError with
// the first failing rank's message, rank 0 alone prints it, and all exit 1 without a hang or
// an MPI_Abort storm. After setup, an error on one rank aborts the job (main()).
#pragma once

#include <memory>
#include <string>

#include "kernels/backend.h"
#include "launcher/commands.h"
#include "launcher/run_config.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/model_files.h"

namespace parafuse {

class ProcessGrid;
class MpiComm;
class MpiCollectives;
class Collectives;
class Transport;

// A setup error every rank agrees on; `message` is the first failing rank's.
struct SetupError : std::runtime_error {
  SetupError(const std::string& message, int failed_rank)
      : std::runtime_error(message), rank(failed_rank) {}
  int rank;
};

struct Session {
  Session();
  ~Session();
  Session(Session&&) noexcept;
  RunConfig run;
  ModelFiles files;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ProcessGrid> grid;
  std::unique_ptr<MpiComm> tp_group, world_group;
  std::unique_ptr<MpiCollectives> tp, world;  // over host memory
  // The TP collectives over device memory (cuda backend, tp > 1): NCCL when every rank of the
  // node has its own GPU, else the MPI ones through host staging buffers.
  std::unique_ptr<Collectives> tp_device;
  std::unique_ptr<Transport> transport;
  std::unique_ptr<Engine> engine;
  bool quiet = false;

  bool is_root() const;                // world rank 0: prints results
  const Tokenizer& tokenizer() const;  // throws when the model folder has none
  // Logs the pipeline plan and this run's all-reduce count per forward step (summed over
  // stages, counted once per TP group), on rank 0.
  void log_step_stats(const char* phase) const;
};

// `configure` adjusts the resolved run config (command flags beyond the run config);
// `check` validates the command's inputs against the opened model. Both run inside the first
// agreed step, so their errors are agreed errors too.
Session open_session(const RunConfigOverrides& overrides, LaunchContext& launch, bool quiet,
                     const std::function<void(RunConfig&)>& configure = {},
                     const std::function<void(Session&)>& check = {});
int resolve_threads(int requested);

}  // namespace parafuse

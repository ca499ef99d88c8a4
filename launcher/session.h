// The session builder: the one way a `parafuse` run is put together from its config. Every
// subcommand (generate, eval-ppl, bench, analyze, plan, fuse, and later serve) asks it for a
// Session, and nothing else makes a grid, a backend, communicators, a transport or an engine:
//
//   run config (YAML + flags) -> process grid (world from MPI, local rank from the launcher's
//   environment or MPI's shared-memory split) -> model files -> backend from the registry on
//   the device the grid assigns -> TP/world collectives (host MPI; NCCL or host staging for a
//   device backend) -> pipeline transport (parallel/transport.h's factory) -> engine with the
//   run's batch options -> fusion-plan overrides.
//
// Setup is agreed: each rank does its local part (read the config, open files, check the split,
// load its shard), then all ranks compare notes. If any rank failed, every rank throws
// SetupError with the first failing rank's message, rank 0 alone prints it, and all exit 1
// without a hang or an MPI_Abort storm. After setup, an error on one rank aborts the job
// (main()).
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/backend.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/run_config.h"
#include "parallel/process_grid.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model_files.h"

namespace parafuse {

class MpiComm;
class MpiCollectives;
class Collectives;
class Transport;

// A setup error every rank agrees on; `message` is the first failing rank's, `rank` that rank,
// `host` its host name, `failed_ranks` how many ranks failed (main() names them in the one line
// it prints: "parafuse: error on rank 2 (host b): ...").
struct SetupError : std::runtime_error {
  SetupError(const std::string& message, int failed_rank, std::string failed_host = {},
             int failed_count = 1)
      : std::runtime_error(message),
        rank(failed_rank),
        host(std::move(failed_host)),
        failed_ranks(failed_count) {}
  int rank;
  std::string host;
  int failed_ranks;
};

// A running system: what the builder made, owned together (members are destroyed in reverse:
// engine first, MPI communicators last).
struct Session {
  Session();
  ~Session();
  Session(Session&&) noexcept;

  RunConfig run;
  std::unique_ptr<ProcessGrid> grid;  // always set; 1 x 1 for a lone process
  std::string local_rank_source;      // where grid->local_rank() came from (LocalRank::source)
  int threads = 1;                    // host threads per rank (resolved from run.threads)
  int device = 0;                     // the backend's device on this node: grid->device(count)
  std::unique_ptr<MpiComm> tp_group, world_group;
  std::unique_ptr<MpiCollectives> tp, world;  // over host memory; null for a lone process
  // The TP collectives over a device backend's tensors (tp > 1): NCCL when every rank of the
  // node has its own device, else the MPI ones through host staging buffers.
  std::unique_ptr<Collectives> tp_device;
  ModelFiles files;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Transport> transport;  // pp > 1
  std::unique_ptr<Engine> engine;
  bool quiet = false;

  bool is_root() const { return grid->world_rank() == 0; }  // world rank 0: prints results
  const Tokenizer& tokenizer() const;                       // throws when the model folder has none
  // Another model on this session's backend, parallel layout and batch options (parafuse fuse
  // loads the checkpoint it wrote), with the same load progress bar.
  std::unique_ptr<Engine> make_engine(const ModelFiles& model) const;
  // Logs the pipeline plan and this run's all-reduce count per forward step (summed over
  // stages, counted once per TP group), on rank 0.
  void log_step_stats(const char* phase) const;
};

// Builds a Session from the command line's run-config flags (and --config), on every rank.
//
//   Session s = SessionBuilder(launch, a.session).configure(...).check(...).build();
class SessionBuilder {
 public:
  SessionBuilder(LaunchContext& launch, const SessionFlags& flags);
  // Adjusts the resolved run config: a command's own flags (-n, --batch) that size the run.
  SessionBuilder& configure(std::function<void(RunConfig&)> fn);
  // Validates the command's inputs against the opened model (prompt ids, text files) while
  // errors are still agreed.
  SessionBuilder& check(std::function<void(Session&)> fn);
  // The command runs on one rank only (analyze, plan and fuse observe whole hidden states):
  // anything else is an agreed error naming `command`.
  SessionBuilder& single_rank(std::string command);
  Session build();

 private:
  LaunchContext& launch_;
  SessionFlags flags_;
  std::function<void(RunConfig&)> configure_;
  std::function<void(Session&)> check_;
  std::string single_rank_command_;
};

}  // namespace parafuse

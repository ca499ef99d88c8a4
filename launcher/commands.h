// The `parafuse` subcommands. Each registers its options on a CLI11 app (the shared ones with
// add_session_flags, cli.h) and returns the function that runs it; main() dispatches and turns
// errors into exit codes. Every command builds its run with SessionBuilder (session.h).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "launcher/cli.h"

namespace parafuse {

class MpiSession;

// What main() hands every command: the MPI session when launched by mpirun/srun.
struct LaunchContext {
  MpiSession* mpi = nullptr;  // null for a lone process
};

using Command = std::function<int(LaunchContext&)>;

// The frame of a model-running subcommand: its arguments `Args` (which hold a `SessionFlags
// session`) live as long as the app, the session flags are registered first, and runs(fn)
// is what main() calls. Each command adds its own options on `cmd` in between.
template <typename Args>
struct ModelCommand {
  ModelCommand(CLI::App& app, const std::string& name, const std::string& description)
      : args(std::make_shared<Args>()), cmd(app.add_subcommand(name, description)) {
    add_session_flags(*cmd, args->session);
  }
  Command runs(int (*run)(Args&, LaunchContext&)) const {
    return [args = args, run](LaunchContext& launch) { return run(*args, launch); };
  }
  std::shared_ptr<Args> args;
  CLI::App* cmd;
};

Command add_generate_command(CLI::App& app);  // cmd_generate.cpp
Command add_eval_ppl_command(CLI::App& app);  // cmd_eval_ppl.cpp
Command add_analyze_command(CLI::App& app);   // cmd_analyze.cpp (FFN Fusion)
Command add_plan_command(CLI::App& app);      // cmd_plan.cpp (FFN Fusion)
Command add_fuse_command(CLI::App& app);      // cmd_fuse.cpp (FFN Fusion)
Command add_bench_command(CLI::App& app);     // cmd_bench.cpp

}  // namespace parafuse

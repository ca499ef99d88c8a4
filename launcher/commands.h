// The `parafuse` subcommands. Each registers its options on a CLI11 app (the shared ones with
// add_session_flags, cli.h) and returns the function that runs it; main() dispatches and turns
// errors into exit codes. Every command builds its run with SessionBuilder (session.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <CLI/CLI.hpp>

#include "launcher/cli.h"

namespace parafuse {

class MpiSession;

// What main() hands every command: the MPI session when launched by mpirun/srun.
struct LaunchContext {
  MpiSession* mpi = nullptr;  // null for a lone process
};

using Command = std::function<int(LaunchContext&)>;

// Registers a model-running subcommand: its arguments `Args` (which hold a `SessionFlags
// session`) live as long as the app, and the session flags come first. Each command adds its
// own options on the returned subcommand, then returns runs(args, its run function).
template <typename Args>
std::pair<CLI::App*, std::shared_ptr<Args>> add_model_command(CLI::App& app,
                                                              const std::string& name,
                                                              const std::string& description) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(name, description);
  add_session_flags(*cmd, args->session);
  return {cmd, args};
}

// What main() calls for the command: run(*args, launch).
template <typename Args>
Command runs(std::shared_ptr<Args> args, int (*run)(Args&, LaunchContext&)) {
  return [args, run](LaunchContext& launch) { return run(*args, launch); };
}

Command add_generate_command(CLI::App& app);  // cmd_generate.cpp
Command add_eval_ppl_command(CLI::App& app);  // cmd_eval_ppl.cpp
Command add_analyze_command(CLI::App& app);   // cmd_analyze.cpp (FFN Fusion)
Command add_plan_command(CLI::App& app);      // cmd_plan.cpp (FFN Fusion)
Command add_fuse_command(CLI::App& app);      // cmd_fuse.cpp (FFN Fusion)
Command add_bench_command(CLI::App& app);     // cmd_bench.cpp
Command add_serve_command(CLI::App& app);     // cmd_serve.cpp
Command add_predict_command(CLI::App& app);   // cmd_predict.cpp
Command add_config_command(CLI::App& app);    // cmd_config.cpp (launch scripts: tasks to ask for)
// cmd_bench_serve.cpp: `bench serve`, a subcommand of `bench` (add_bench_command adds it)
Command add_bench_serve_command(CLI::App& bench);

}  // namespace parafuse

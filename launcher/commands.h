// The `parafuse` subcommands. Each registers its options on a CLI11 app and returns the
// function that runs it; main() dispatches and turns errors into exit codes.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

namespace parafuse {

class MpiSession;

// What main() hands every command: the MPI session when launched by mpirun/srun.
struct LaunchContext {
  MpiSession* mpi = nullptr;  // null for a lone process
};

using Command = std::function<int(LaunchContext&)>;

Command add_generate_command(CLI::App& app);
Command add_eval_ppl_command(CLI::App& app);
Command add_analyze_command(CLI::App& app);  // cmd_analyze.cpp (FFN Fusion)
Command add_plan_command(CLI::App& app);     // cmd_plan.cpp (FFN Fusion)
Command add_bench_command(CLI::App& app);
Command add_fuse_command(CLI::App& app);  // cmd_fuse.cpp (FFN Fusion)

}  // namespace parafuse

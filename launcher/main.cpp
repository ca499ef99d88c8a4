// The parafuse executable: one binary, launched alone or by mpirun/srun (one rank per GPU or
// CPU slot). main() is the only place that turns an Error into an exit code:
//   - a setup error every rank agreed on (bad config, split that does not fit, missing file):
//     rank 0 prints one line, every rank exits 1;
//   - any other error: the failing rank prints it with its rank, then MPI_Abort ends the job
//     on every rank within seconds;
//   - a command-line mistake (unknown command, a flag out of range): one line, exit code 2.
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "kernels/core/error.h"
#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/session.h"
#include "parallel/mpi_comm.h"
#include "parallel/process_grid.h"

int main(int argc, char** argv) {
  using namespace parafuse;
  CLI::App app{
      "parafuse: run Llama / Nemotron-NAS models on one process or across ranks (mpirun/srun, "
      "tensor x pipeline parallel), with FFN Fusion.\n"
      "Run `parafuse <command> --help` for a command's options."};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(choice_flag({"trace", "debug", "info", "warn", "error"}));
  const std::vector<std::pair<std::string, Command>> commands = {
      {"generate", add_generate_command(app)}, {"eval-ppl", add_eval_ppl_command(app)},
      {"analyze", add_analyze_command(app)},   {"plan", add_plan_command(app)},
      {"fuse", add_fuse_command(app)},         {"bench", add_bench_command(app)},
      {"serve", add_serve_command(app)},         {"predict", add_predict_command(app)},
      {"config", add_config_command(app)},
  };
  std::vector<std::string> names;
  for (const auto& [name, run] : commands) names.push_back(name);
  if (const std::string problem = unknown_command_problem(argc, argv, names, {"--log-level"});
      !problem.empty()) {
    fmt::print(stderr, "parafuse: error: {}\n", problem);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::string where;
    for (const auto& [name, run] : commands)
      if (app.got_subcommand(name)) where = fmt::format(" (parafuse {} --help)", name);
    if (dynamic_cast<const CLI::RequiredError*>(&e) && app.get_subcommands().empty()) {
      fmt::print(stderr,
                 "parafuse: error: no command given; the commands are {} (parafuse --help)\n",
                 fmt::join(names, ", "));
    } else {
      fmt::print(stderr, "parafuse: error: {}{}\n", describe_parse_error(e), where);
    }
    return 2;
  }
  auto logger = spdlog::stderr_color_mt("parafuse");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_level(spdlog::level::from_str(log_level));

  std::unique_ptr<MpiSession> mpi;
  LaunchContext launch;
  int rank = 0;
  try {
    if (read_launch_environment().under_launcher()) {
      mpi = std::make_unique<MpiSession>(&argc, &argv);
      launch.mpi = mpi.get();
      rank = mpi->rank();
      if (rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 speaks for the job
    }
    for (const auto& [name, run] : commands)
      if (app.got_subcommand(name)) return run(launch);
  } catch (const SetupError& e) {
    // Agreed: rank 0 speaks for every rank, naming the failing one in a job of many.
    if (rank == 0 && mpi && mpi->size() > 1 && !e.host.empty()) {
      const int others = e.failed_ranks - 1;
      fmt::print(stderr, "parafuse: error on rank {} (host {}{}): {}\n", e.rank, e.host,
                 others > 0 ? fmt::format("; {} more rank{} failed", others, others > 1 ? "s" : "")
                            : std::string(),
                 e.what());
    } else if (rank == 0) {
      fmt::print(stderr, "parafuse: error: {}\n", e.what());
    }
    return 1;
  } catch (const Error& e) {
    fmt::print(stderr, "parafuse: error: {} ({})\n", e.what(), e.where());
    std::fflush(stderr);
    if (mpi && mpi->size() > 1) MpiSession::abort(1);
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "parafuse: error on rank {}: {}\n", rank, e.what());
    std::fflush(stderr);
    if (mpi && mpi->size() > 1) MpiSession::abort(1);
    return 1;
  }
  return 1;
}

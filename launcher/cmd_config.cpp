// `parafuse config`: reads a run config the way every command does (the strict reader, the same
// flag overrides) and prints what a launch script needs from it, without MPI and without
// opening the model. The batch templates in cluster/sbatch/ ask it how many tasks to request,
// so the YAML stays the one source of tp and pp:
//
//   ntasks=$(parafuse config --world-size run.yaml)        # tp x pp
//   parafuse config run.yaml                               # world_size=4, tp=2, ... (shell words)
#include <cstdio>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "launcher/cli.h"
#include "launcher/commands.h"
#include "launcher/run_config.h"

namespace parafuse {
namespace {

struct ConfigArgs {
  std::string file;
  std::optional<int> tp, pp;  // override the file's keys, as --tp/--pp do for every command
  bool world_size = false;
};

// Single-quoted for a POSIX shell (eval-safe).
std::string shell_quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

int run_config(ConfigArgs& a) {
  // A file without 'model:' is still a layout (the model may come on the command line).
  RunConfig c = load_run_config(a.file);
  if (a.tp) c.tp = *a.tp;
  if (a.pp) c.pp = *a.pp;
  check_run_config(c);
  const int world = c.tp * c.pp;
  if (a.world_size) {
    fmt::print("{}\n", world);
    return 0;
  }
  fmt::print(
      "world_size={}\ntp={}\npp={}\ntransport={}\nbackend={}\nmodel={}\n"
      "collective_seconds={}\ntransport_seconds={}\ndrain_seconds={}\n",
      world, c.tp, c.pp, c.transport, c.backend, shell_quoted(c.model),
      c.timeouts.collective_seconds, c.timeouts.transport_seconds, c.serve.drain_seconds);
  return 0;
}

}  // namespace

Command add_config_command(CLI::App& app) {
  auto a = std::make_shared<ConfigArgs>();
  CLI::App* cmd = app.add_subcommand(
      "config",
      "Read a run config (YAML, with the same flag overrides as every command) and print what "
      "a launch needs: with --world-size only tp x pp (the tasks to ask mpirun/srun/sbatch "
      "for), else KEY=VALUE lines a shell can eval. Errors name the file, line and key.");
  cmd->add_option("file", a->file, "The run config (YAML)")->required()->type_name("FILE");
  cmd->add_flag("--world-size", a->world_size, "Print only the number of ranks, tp x pp");
  cmd->add_option("--tp", a->tp, "Override parallel.tp")->check(int_flag(kPositiveInt));
  cmd->add_option("--pp", a->pp, "Override parallel.pp")->check(int_flag(kPositiveInt));
  return [a](LaunchContext&) { return run_config(*a); };
}

}  // namespace parafuse

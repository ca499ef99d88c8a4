#!/usr/bin/env bash
# Submits a batch template with as many tasks as the run YAML needs (tp x pp, from
# `parafuse config --world-size`), on nodes of GPUS_PER_NODE GPUs, one task per GPU:
#
#   cluster/sbatch/submit.sh [options] generate|serve|bench RUN.yaml [parafuse args...]
#
#   --launcher srun|mpirun   srun --mpi=pmix (default) or mpirun inside the allocation
#   --gpus-per-node N        GPUs (ranks) per node (default 8); 0: CPU nodes, no GPU request,
#                            tasks per node = --tasks-per-node
#   --tasks-per-node N       with --gpus-per-node 0: ranks per node (default: all on one node)
#   --sbatch "ARGS"          more sbatch options (partition, account, --overcommit, ...)
#   --wait                   wait for the job to end (sbatch --wait) and exit with its code
#   --print                  print the sbatch command line instead of running it
#
# Prints sbatch's output ("Submitted batch job N"; the job id alone with --parsable in
# --sbatch). Nodes = ceil(tp x pp / per node); a YAML whose world does not fill whole nodes
# gets a last node with fewer tasks.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${PF_BIN:-$root/build/parafuse}
launcher=srun gpus=8 per_node=0 extra="" wait=() print=0
while [ $# -gt 0 ]; do
  case "$1" in
    --launcher) launcher=$2; shift 2 ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --tasks-per-node) per_node=$2; shift 2 ;;
    --sbatch) extra=$2; shift 2 ;;
    --wait) wait=(--wait); shift ;;
    --print) print=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) echo "submit.sh: unknown option '$1' (--help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { echo "usage: submit.sh [options] generate|serve|bench RUN.yaml [args...]" >&2; exit 2; }
command=$1 config=$2
shift 2
[ -f "$here/$command.sbatch" ] || { echo "submit.sh: no template $here/$command.sbatch" >&2; exit 2; }

world=$("$bin" config --world-size "$config")  # the YAML is the one source of tp and pp
[ "$gpus" -gt 0 ] && per_node=$gpus
[ "$per_node" -gt 0 ] && [ "$per_node" -le "$world" ] || per_node=$world
nodes=$(( (world + per_node - 1) / per_node ))
layout=(--nodes="$nodes" --ntasks="$world")
# One node: --ntasks says it all (and Slurm refuses --ntasks-per-node above a node's CPUs even
# with --overcommit, as on a small test machine).
[ "$nodes" -gt 1 ] && layout+=(--ntasks-per-node="$per_node")
[ "$gpus" -gt 0 ] && layout+=(--gpus-per-node="$per_node")
echo "submit.sh: $config: tp x pp = $world ranks -> $nodes node(s) x $per_node task(s), launcher $launcher" >&2
# shellcheck disable=SC2086  # --sbatch is split like a shell would
run=(env PF_LAUNCHER="$launcher" PF_BIN="$bin" PF_HOME="$root"
  sbatch "${wait[@]}" "${layout[@]}" --chdir="$PWD" $extra "$here/$command.sbatch" "$config" "$@")
if ((print)); then
  printf '%q ' "${run[@]}"
  echo
  exit 0
fi
exec "${run[@]}"

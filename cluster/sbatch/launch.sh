#!/usr/bin/env bash
# Runs `parafuse COMMAND --config RUN.yaml ARGS...` on every task of the current Slurm
# allocation; the batch templates beside it (generate.sbatch, serve.sbatch, bench.sbatch) call
# it. One rank per task, i.e. per GPU: tasks = tp x pp from the YAML (`parafuse config
# --world-size`), which submit.sh asks sbatch for. If the allocation has another number of
# tasks, parafuse itself refuses to start, on every rank, with its message.
#
#   PF_LAUNCHER=srun (default)  srun --mpi=pmix -K: Slurm starts the ranks, PMIx wires them up,
#                               a rank that dies ends the step (-K, --kill-on-bad-exit)
#   PF_LAUNCHER=mpirun          mpirun inside the allocation (Open MPI reads it from Slurm and
#                               starts its daemons with srun)
#   PF_BIN                      the parafuse binary (default: build/parafuse of this checkout)
#   PF_MPIRUN_ARGS              more mpirun options (e.g. --mca btl_tcp_if_include ib0)
#
# The CPU backend wants one BLAS thread per rank (OPENBLAS_NUM_THREADS=1, set here unless set).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${PF_BIN:-$root/build/parafuse}
launcher=${PF_LAUNCHER:-srun}
[ $# -ge 2 ] || { echo "usage: launch.sh generate|serve|bench RUN.yaml [parafuse args...]" >&2; exit 2; }
command=$1 config=$2
shift 2
[ -n "${SLURM_JOB_ID:-}" ] || { echo "launch.sh: not inside a Slurm allocation (sbatch/salloc)" >&2; exit 2; }
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

world=$("$bin" config --world-size "$config")
tasks=${SLURM_NTASKS:-?}
echo "launch.sh: job $SLURM_JOB_ID: parafuse $command --config $config: tp x pp = $world ranks;" \
  "the allocation has $tasks tasks on ${SLURM_JOB_NUM_NODES:-?} node(s) (${SLURM_JOB_NODELIST:-?}), launcher $launcher"

case "$launcher" in
  srun)
    # -K: a rank that exits non-zero (or is killed) ends every other rank of the step at once.
    # --cpu-bind=none: BLAS threads are set per rank; binding is the site's choice.
    srun --mpi=pmix -K --cpu-bind=none "$bin" "$command" --config "$config" "$@" &
    ;;
  mpirun)
    as_root=()
    [ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)
    # -np from the allocation; the YAML's world size is checked by parafuse on every rank.
    mpirun "${as_root[@]}" -np "$tasks" --bind-to none ${PF_MPIRUN_ARGS:-} \
      -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS -x PATH -x LD_LIBRARY_PATH \
      "$bin" "$command" --config "$config" "$@" &
    ;;
  *) echo "launch.sh: PF_LAUNCHER must be srun or mpirun, got '$launcher'" >&2; exit 2 ;;
esac
# scancel sends SIGTERM to this script too: let the ranks drain (parafuse serve finishes the
# running requests for serve.drain_seconds) and report their exit code, not the signal's.
child=$!
trap 'echo "launch.sh: SIGTERM: waiting for the ranks to stop"; kill -TERM $child 2>/dev/null || true' TERM
trap 'kill -INT $child 2>/dev/null || true' INT
# mpirun ends the ranks itself on SIGTERM; to drain a server it launched, signal the batch
# script: scancel --batch --signal=USR1 JOBID (mpirun forwards USR1 to every rank).
trap 'kill -USR1 $child 2>/dev/null || true' USR1
rc=0
while true; do
  wait $child && rc=0 || rc=$?
  kill -0 $child 2>/dev/null || break  # wait returned because of a trapped signal
done
echo "launch.sh: parafuse $command exited with $rc"
exit $rc

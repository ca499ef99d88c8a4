#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests and for trying the batch templates: munged,
# slurmctld and slurmd from Debian's packages (cluster/setup.sh installs them), as root, with
# every file (config, munge key and socket, state, spool, logs, pid files) under one folder.
#
#   cluster/local-slurm.sh start    write the config, start munged + slurmctld + slurmd, wait
#                                   until `sinfo` shows the node idle (at most 60 s)
#   cluster/local-slurm.sh stop     stop all three (SIGTERM, then SIGKILL), cancel jobs; leaves
#                                   nothing running; the folder stays for its logs
#   cluster/local-slurm.sh status   what runs, sinfo and squeue
#   cluster/local-slurm.sh env      the line to eval so that sinfo/srun/sbatch use this Slurm:
#                                   eval "$(cluster/local-slurm.sh env)"
#
# PF_SLURM_DIR   the folder (default /tmp/parafuse-slurm)
# PF_SLURM_PORT  slurmctld's port; slurmd uses the next one (default 6817)
#
# The partition "local" has one node with as many CPUs as this machine (nproc). Jobs with more
# tasks than CPUs (4 ranks on 2 cores) ask for it with --overcommit. MpiDefault=pmix: Debian's
# slurm-wlm-basic-plugins ships mpi_pmix.so (built against libpmix2 4.2), and Debian's Open MPI
# 4.1 uses the same external PMIx (ompi_info: "MCA pmix: ext3x"), so `srun --mpi=pmix` starts
# MPI ranks directly. No cgroups (proctrack/linuxproc, task/none): this works in a container.
set -euo pipefail

dir=${PF_SLURM_DIR:-/tmp/parafuse-slurm}
port=${PF_SLURM_PORT:-6817}
conf=$dir/etc/slurm.conf
host=$(hostname -s)

die() { echo "local-slurm: $*" >&2; exit 1; }

env_line() { echo "export SLURM_CONF=$conf"; }

pid_of() {  # the pid in a pid file, if that process is alive
  local file=$1 pid
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

write_config() {
  mkdir -p "$dir"/{etc,munge,ctld,spool,log,run}
  chmod 0700 "$dir/munge" "$dir/etc"
  if [ ! -s "$dir/etc/munge.key" ]; then
    dd if=/dev/urandom of="$dir/etc/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/etc/munge.key"
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >"$conf" <<EOF
# Written by cluster/local-slurm.sh: a single-node Slurm under $dir.
ClusterName=parafuse-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
# Slurm's default: scancel sends SIGTERM, then SIGKILL this long after (serve drains between)
KillWait=30
MinJobAge=300
# a killed task ends its step's other tasks at once (srun -K asks for this per step too)
KillOnBadExit=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
  for p in munged slurmctld slurmd sinfo; do
    command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] ||
      die "$p is not installed (cluster/setup.sh installs munge, slurmctld, slurmd, slurm-client)"
  done
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs the job's tasks as their user)"
  if pid_of "$dir/run/slurmctld.pid" >/dev/null; then
    echo "local-slurm: already running under $dir"
    wait_idle
    return
  fi
  write_config
  export SLURM_CONF=$conf
  # --force: /tmp is world-writable (munged otherwise refuses a socket below it).
  /usr/sbin/munged --force --key-file="$dir/etc/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" 2>>"$dir/log/munged.log" ||
    die "munged did not start: $(tail -3 "$dir/log/munged.log")"
  /usr/sbin/slurmctld -f "$conf" -c || die "slurmctld did not start: $(tail -5 "$dir/log/slurmctld.log")"
  /usr/sbin/slurmd -f "$conf" || die "slurmd did not start: $(tail -5 "$dir/log/slurmd.log")"
  wait_idle
}

wait_idle() {
  export SLURM_CONF=$conf
  local state=""
  for _ in $(seq 1 120); do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    if [ "$state" = idle ]; then
      echo "local-slurm: node $host idle ($(nproc) CPUs), partition local; $(env_line)"
      return 0
    fi
    # a node that came up "down" (e.g. after an unclean stop) is resumed
    case "$state" in down*|drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;; esac
    sleep 0.5
  done
  echo "local-slurm: node not idle after 60 s (state '$state'); logs:" >&2
  tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  return 1
}

stop_daemon() {  # name pidfile
  local name=$1 file=$2 pid
  pid=$(pid_of "$file") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "local-slurm: $name ($pid) still running 5 s after SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  export SLURM_CONF=$conf
  if pid_of "$dir/run/slurmctld.pid" >/dev/null; then
    scancel --quiet --partition=local 2>/dev/null || true
    for _ in $(seq 1 50); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # Both daemons take ~2 s to shut down: in parallel.
  stop_daemon slurmctld "$dir/run/slurmctld.pid" &
  stop_daemon slurmd "$dir/run/slurmd.pid"
  wait
  # slurmstepd processes (and their tasks) outlive slurmd; they belong to this Slurm when
  # they inherited its SLURM_CONF from our slurmd.
  local pid
  for pid in $(pgrep -x slurmstepd || true); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$conf"; then
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  stop_daemon munged "$dir/run/munged.pid"
  echo "local-slurm: stopped (logs in $dir/log)"
}

status() {
  export SLURM_CONF=$conf
  local rc=0
  for d in munged slurmctld slurmd; do
    if pid=$(pid_of "$dir/run/$d.pid"); then echo "$d: running (pid $pid)"; else echo "$d: not running"; rc=3; fi
  done
  if [ $rc = 0 ]; then sinfo; squeue; fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_line ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac

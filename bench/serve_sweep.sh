#!/usr/bin/env bash
# Starts `parafuse serve` (alone, or under mpirun with --np N), runs `parafuse bench serve` against
# it at concurrency 1, 8 and 32, writes the JSON, and stops the server.
#
#   bench/serve_sweep.sh OUT.json [--np N] [-- SERVE FLAGS...]
#   bench/serve_sweep.sh bench-results/serve-tp3.json --np 3 -- --tp 3
# Environment: MODEL (default: the embedded SmolLM2), BENCH_FLAGS (default: --concurrency 1,8,32
# --num-prompts 32 --input-len 64 --output-len 32).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bench/serve_sweep.sh OUT.json [--np N] [-- SERVE FLAGS...]}
shift
np=0
if [ "${1:-}" = "--np" ]; then np=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift
model=${MODEL:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
bench_flags=${BENCH_FLAGS:---concurrency 1,8,32 --num-prompts 32 --input-len 64 --output-len 32}
log=$(mktemp)
launcher=()
if ((np > 0)); then
  launcher=(mpirun --oversubscribe --allow-run-as-root --bind-to none -np "$np")
fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
setsid "${launcher[@]}" build/parafuse serve -m "$model" --port 0 -q "$@" 2> "$log" &
server=$!
trap 'kill -INT -- -$server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 300); do
  grep -q "serving .* on http" "$log" && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.5
done
url=$(grep -o "serving .* on http://[^ ]*" "$log" | grep -o "http://[^ ]*")
label="$(basename "$model") np=${np} $*"
# shellcheck disable=SC2086  # BENCH_FLAGS is a list of flags
build/parafuse bench serve --url "$url" $bench_flags --json "$out" --label "$label"

#!/usr/bin/env bash
# Tokens/s of one model at tp in {1,2} x pp in {1,2} on this machine (CPU backend, one BLAS
# thread per rank, mpirun --oversubscribe), each step's time split into compute and
# communication. Writes one JSON per split and a merged bench-parallel.json.
#   bench/parallel_sweep.sh [MODEL] [OUT_DIR]
# MODEL defaults to a 140M-parameter synthetic Llama, big enough that compute dominates.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-synthetic:configs/models/bench-llama-140m.json}
out=${2:-bench-results}
mkdir -p "$out"
mpirun_cmd=(mpirun --oversubscribe --allow-run-as-root --bind-to none -x OPENBLAS_NUM_THREADS=1)
for tp in 1 2; do
  for pp in 1 2; do
    n=$((tp * pp))
    echo "== tp=$tp pp=$pp ($n ranks)"
    cmd=(build/parafuse bench -q -m "$model" --tp "$tp" --pp "$pp" --threads 1
         --batch 1,8 --prompt-tokens 64 --decode-steps 8 --json "$out/bench-tp${tp}-pp${pp}.json")
    if ((n > 1)); then "${mpirun_cmd[@]}" -np "$n" "${cmd[@]}"; else "${cmd[@]}"; fi
  done
done
python3 - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "bench-tp*-pp*.json")))]
json.dump({"benchmark": "parallel_sweep", "runs": runs}, open(os.path.join(out, "bench-parallel.json"), "w"), indent=2)
print(f"{'tp':>3} {'pp':>3} {'batch':>6} {'decode t/s':>11} {'step ms':>9} {'compute ms':>11} {'comm ms':>9}")
for r in runs:
    for x in r["results"]:
        comm = (x["collective_seconds_per_step"] + x["pipeline_seconds_per_step"]) * 1e3
        print(f"{r['tp']:>3} {r['pp']:>3} {x['batch']:>6} {x['decode_tokens_per_second']:>11.1f} "
              f"{x['decode_step_seconds']*1e3:>9.2f} {x['compute_seconds_per_step']*1e3:>11.2f} {comm:>9.2f}")
print("wrote", os.path.join(out, "bench-parallel.json"))
PY

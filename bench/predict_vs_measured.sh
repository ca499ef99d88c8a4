#!/usr/bin/env bash
# The check that `parafuse predict`'s structure is right: calibrate this machine, sweep SmolLM2
# at tp=1 (one rank) and tp=3 (mpirun -np 3), predict the same points from the calibrated
# cluster files, and print predicted / measured per point. Each calibration runs right before
# its sweep, with the same rank count, so both see the same machine; the load average before
# and after each step is printed (a shared machine skews both).
#   bench/predict_vs_measured.sh [OUT_DIR] [BATCHES] [INPUT_LEN] [OUTPUT_LEN]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results/predict-check}
batches=${2:-1,8,32}
input=${3:-32}
output=${4:-16}
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
pf=build/parafuse
mpi=(mpirun --oversubscribe --allow-run-as-root --bind-to none -x OPENBLAS_NUM_THREADS=1)
mkdir -p "$out"
load() { echo "load: $(cut -d' ' -f1-3 /proc/loadavg) ($1)" | tee -a "$out/load.txt"; }
: > "$out/load.txt"
for tp in 1 3; do
  run=()
  [ "$tp" -gt 1 ] && run=("${mpi[@]}" -np "$tp")
  load "before calibrate np$tp"
  "${run[@]}" "$pf" predict --calibrate -q --out "$out/cluster-cpu-np$tp.yaml"
  load "before sweep tp$tp"
  # F32 weights: what the calibration times and what `predict --dtype f32` models.
  "${run[@]}" "$pf" bench -q -m "$model" --tp "$tp" --threads 1 --weight-dtype f32 \
    --batch "$batches" \
    --input-len "$input" --output-len "$output" --label "SmolLM2 tp$tp measured" \
    --json "$out/smollm2-tp$tp.json" --csv "$out/smollm2-tp$tp.csv" > "$out/smollm2-tp$tp.txt"
  load "after sweep tp$tp"
  "$pf" predict -m "$model" --cluster "$out/cluster-cpu-np$tp.yaml" --tp "$tp" --dtype f32 \
    --batch "$batches" --input-len "$input" --output-len "$output" \
    --json "$out/predict-smollm2-tp$tp.json" > "$out/predict-smollm2-tp$tp.txt"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = []
print(f"{'tp':>3} {'batch':>5} | {'pred tok/s/user':>15} {'meas tok/s/user':>15} {'ratio':>6} | "
      f"{'pred tok/s':>10} {'meas tok/s':>10} {'ratio':>6} | {'pred AR ms':>10} {'meas AR ms':>10}")
for tp in (1, 3):
    pred = {p["batch"]: p for p in json.load(open(f"{out}/predict-smollm2-tp{tp}.json"))["layouts"]}
    for m in json.load(open(f"{out}/smollm2-tp{tp}.json"))["results"]:
        p = pred[m["batch"]]
        # Measured per-user rate: 1 / median step, the quantity the predictor models.
        meas_user = 1.0 / m["decode_step_seconds"]
        row = {"tp": tp, "batch": m["batch"],
               "predicted_tokens_per_s_per_user": p["tokens_per_s_per_user"],
               "measured_tokens_per_s_per_user": meas_user,
               "ratio_per_user": p["tokens_per_s_per_user"] / meas_user,
               "predicted_tokens_per_s": p["tokens_per_s"],
               "measured_tokens_per_s": m["decode_tokens_per_second"],
               "ratio_tokens_per_s": p["tokens_per_s"] / m["decode_tokens_per_second"],
               "predicted_allreduce_ms": p["step_ms_split"]["all_reduce"],
               "measured_allreduce_ms": m["collective_seconds_per_step"] * 1e3}
        rows.append(row)
        print(f"{tp:>3} {m['batch']:>5} | {row['predicted_tokens_per_s_per_user']:>15.2f} "
              f"{meas_user:>15.2f} {row['ratio_per_user']:>6.2f} | {p['tokens_per_s']:>10.1f} "
              f"{m['decode_tokens_per_second']:>10.1f} {row['ratio_tokens_per_s']:>6.2f} | "
              f"{row['predicted_allreduce_ms']:>10.2f} {row['measured_allreduce_ms']:>10.2f}")
json.dump({"benchmark": "predict vs measured", "rows": rows}, open(f"{out}/ratios.json", "w"), indent=2)
print(f"wrote {out}/ratios.json")
PY

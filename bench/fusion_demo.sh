#!/usr/bin/env bash
# FFN Fusion on SmolLM2-135M, end to end, with a perplexity after every step and tokens/s
# before and after. SmolLM2 has attention in every block, so (as Puzzle did) the K least
# important attention sublayers are removed first, which makes runs of attention-free FFNs:
#   1. original model: perplexity on held-out text
#   2. analyze: per-sublayer statistics (which attention matters least)
#   3. remove K attention sublayers: perplexity
#   4. analyze again without them: the block-wise dependency matrix (heatmap PNG)
#   5. plan: fuse neighbouring FFNs, lowest dependency first, within a perplexity budget
#   6. fuse: write the fused checkpoint; perplexity of the fused model (= step 5's plan)
#   7. tokens/s and per-token latency before and after (tp=1, and tp=3 under mpirun: SmolLM2's
#      9 heads do not split over 2 ranks)
#
#   bench/fusion_demo.sh [K] [MAX_PPL_INCREASE_PCT] [OUT_DIR]     (defaults: 8 3 demo-fusion)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-8}
budget=${2:-3}
out=${3:-demo-fusion}
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
calibration=/usr/share/common-licenses/GPL-3
heldout=/usr/share/common-licenses/Apache-2.0
pf=build/parafuse
[ -x "$pf" ] || { echo "fusion_demo: build first (cluster/setup.sh)" >&2; exit 1; }
[ -s "$model" ] || { echo "fusion_demo: $model missing (cluster/setup.sh fetches it)" >&2; exit 1; }
mkdir -p "$out"
mpirun_cmd=(mpirun --oversubscribe --allow-run-as-root --bind-to none -x OPENBLAS_NUM_THREADS=1)
ppl() {  # MODEL [extra args...]: perplexity on 512 held-out tokens
  local m=$1; shift
  "$pf" eval-ppl -q -m "$m" --text "$heldout" --max-tokens 512 "$@" | sed -n 's/^perplexity \([0-9.]*\).*/\1/p'
}
step() { printf '\n== %s\n' "$*"; }

step "1. original model"
ppl_original=$(ppl "$model")
echo "perplexity $ppl_original (512 tokens of $heldout)"

step "2. analyze the original model on $calibration"
"$pf" analyze -q -m "$model" --text "$calibration" --tokens 256 --out "$out/analysis-original" | tail -n 5

step "3. remove the $k least important attention sublayers"
"$pf" plan -q -m "$model" --analysis "$out/analysis-original/analysis.json" --text "$heldout" \
  --tokens 256 --remove-attention "$k" --max-steps 0 --out "$out/removal.yaml" | grep -E "attention removed|baseline"
ppl_removed=$(ppl "$model" --fusion-plan "$out/removal.yaml")
echo "perplexity $ppl_removed"

step "4. analyze without them: block-wise dependency of the new attention-free FFNs"
"$pf" analyze -q -m "$model" --text "$calibration" --tokens 256 --plan "$out/removal.yaml" \
  --out "$out/analysis-removed" | tail -n 5
echo "heatmap: $out/analysis-removed/dependency.png, per-block chart: $out/analysis-removed/blocks.png"

step "5. plan the fusion (budget: perplexity +$budget% over step 3)"
"$pf" plan -q -m "$model" --analysis "$out/analysis-removed/analysis.json" --text "$heldout" \
  --tokens 256 --max-ppl-increase "$budget" --out "$out/plan.yaml" | grep -E "^step|final plan|fusable"
ppl_parallel=$(ppl "$model" --fusion-plan "$out/plan.yaml")
echo "perplexity in parallel-FFN mode $ppl_parallel"

step "6. fuse"
rm -rf "$out/fused"
"$pf" fuse -q -m "$model" --plan "$out/plan.yaml" --out "$out/fused" --text "$heldout" --tokens 256
ppl_fused=$(ppl "$out/fused")
echo "perplexity of the fused checkpoint $ppl_fused"

step "7. tokens/s before and after"
for split in "1 1" "3 3"; do
  set -- $split
  tp=$1 n=$2
  for m in "$model" "$out/fused"; do
    name=$([ "$m" = "$model" ] && echo original || echo fused)
    cmd=("$pf" bench -q -m "$m" --tp "$tp" --threads 1 --batch 1,32 --prompt-tokens 32 --decode-steps 8
         --json "$out/bench-$name-tp$tp.json" --label "$name")
    if ((n > 1)); then "${mpirun_cmd[@]}" -np "$n" "${cmd[@]}" > /dev/null; else "${cmd[@]}" > /dev/null; fi
  done
done
python3 - "$out" "$ppl_original" "$ppl_removed" "$ppl_parallel" "$ppl_fused" <<'PY'
import json, sys, os
out, p0, p1, p2, p3 = sys.argv[1:]
print(f"\nperplexity: original {p0} -> attention removed {p1} -> fused (parallel mode) {p2} -> fused checkpoint {p3}")
print(f"{'tp':>3} {'batch':>6} {'original t/s':>13} {'fused t/s':>10} {'speedup':>8} {'allreduce/step':>15}")
summary = []
for tp in (1, 3):
    a = json.load(open(os.path.join(out, f"bench-original-tp{tp}.json")))
    b = json.load(open(os.path.join(out, f"bench-fused-tp{tp}.json")))
    for x, y in zip(a["results"], b["results"]):
        s = y["decode_tokens_per_second"] / x["decode_tokens_per_second"]
        print(f"{tp:>3} {x['batch']:>6} {x['decode_tokens_per_second']:>13.1f} {y['decode_tokens_per_second']:>10.1f} "
              f"{s:>7.3f}x {x['all_reduces_per_step']:>7.0f} -> {y['all_reduces_per_step']:<5.0f}")
        summary.append({"tp": tp, "batch": x["batch"], "original": x, "fused": y, "speedup": s})
json.dump({"perplexity": {"original": float(p0), "attention_removed": float(p1),
                          "fused_parallel_mode": float(p2), "fused_checkpoint": float(p3)},
           "throughput": summary}, open(os.path.join(out, "fusion-demo.json"), "w"), indent=2)
print("wrote", os.path.join(out, "fusion-demo.json"))
PY

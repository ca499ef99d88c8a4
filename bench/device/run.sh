#!/usr/bin/env bash
# The prepared script for the GPU machine (device tool, one H200). Nothing is built there: its
# image has CUDA 13.0, cuBLAS and PyTorch's NCCL but none of our Debian dependencies, so
# bench/device/pack.sh builds here and packs the binaries with their libraries and a relocated
# Open MPI (.device-pack/), and splits the SmolLM2 GGUF (94 MiB, over the 64 MiB a call can
# carry) into .device-model-a/ and .device-model-b/. Two calls, the second within ~30 s of the
# first so the machine is still warm (/tmp and ignored paths in the checkout survive). Each
# call carries ~58 MiB (tree 1 + pack 10 + model part 47). Carrying the pack in both calls
# means phase 2 still has the binaries if the machine went cold in between (only part a of the
# model is then lost, which the summary says).
#
#   bash bench/device/run.sh 1   carry [.device-pack, .device-model-a], timeout_s 360
#       unpack, env facts, stash model part a in /tmp/pf-model/, then test_cuda_backend_ops,
#       test_cuda_e2e (its SmolLM2 case skips: no model yet), test_cuda_parallel under mpirun
#       at 1 and 2 ranks, bench_gpu. Writes env.txt ops.log ops.xml e2e.log parallel.log
#       bench.log bench.json summary.txt to $OUT (8 files, the most that come back).
#   bash bench/device/run.sh profile   carry [.device-pack], timeout_s 300
#       ncu per-kernel durations of batch-1 decode steps of the 8B model (ncu.log, env, summary)
#   bash bench/device/run.sh 2   carry [.device-pack, .device-model-b], timeout_s 180
#       unpack (if not already), join the model (sha256 checked) into .cache/models/, then
#       test_cuda_e2e again (SmolLM2 case runs) and a parafuse chat demo: CPU reference, CUDA
#       on one rank, and CUDA under mpirun at tp=3 (3 ranks) and pp=2 (2 ranks) sharing the GPU
#       (SmolLM2's 9 heads rule out tp=2). Writes env2.txt e2e2.log e2e2.xml demo.log summary.txt.
#
# summary.txt has one line per step (ok / FAILED (exit N) / TIMEOUT, seconds, log); its first
# line says whether the packed binaries start at all (a GLIBC/GLIBCXX mismatch shows there).
# Every step runs under `timeout`, bounded by a deadline (PF_DEVICE_DEADLINE seconds, default
# 330 for phase 1 and 150 for phase 2) so summary.txt is written before the device call's own
# timeout; failures do not stop later steps. The exit status is 0 only if every step passed.
# OUT defaults to /tmp/parafuse-device-out, so it can be dry-run on a machine without a GPU
# (the GPU tests skip, bench_gpu exits 2 "no CUDA device").
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
PHASE=${1:-}
case $PHASE in 1|2|profile) ;; *) echo "usage: bash bench/device/run.sh 1|2|profile" >&2; exit 64;; esac
OUT=${OUT:-/tmp/parafuse-device-out}
mkdir -p "$OUT"
T0=$(date +%s)
case $PHASE in 1) budget=330 ;; 2) budget=150 ;; *) budget=270 ;; esac
DEADLINE=$(( T0 + ${PF_DEVICE_DEADLINE:-$budget} ))
DEV=$ROOT/.device
MODEL_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
STASH=/tmp/pf-model
summary=$OUT/summary.txt
: > "$summary"
status=0
note() { echo "$*" | tee -a "$summary"; }
since() { echo $(( $(date +%s) - $1 )); }

# step NAME LOG CAP_S CMD...: run CMD with stdout+stderr appended to $OUT/LOG, under a timeout
# of CAP_S or what is left before the deadline (less 15 s to write the summary), and add one
# line to the summary (with gtest's totals when the log has them).
step() {
  local name=$1 log=$2 cap=$3; shift 3
  local left=$(( DEADLINE - $(date +%s) - 15 ))
  if [ "$left" -lt 10 ]; then note "$(printf '%-18s %-22s' "$name" "SKIPPED (no time left)")"; status=1; return; fi
  local t=$(( cap < left ? cap : left )) s rc res
  s=$(date +%s)
  echo "== $(date -u +%T) $name: $* (timeout ${t}s)" >> "$OUT/$log"
  timeout -k 10 "$t" "$@" >> "$OUT/$log" 2>&1
  rc=$?
  case $rc in
    0) res=ok ;;
    124|137) res="TIMEOUT (${t}s)"; status=1 ;;
    *) res="FAILED (exit $rc)"; status=1 ;;
  esac
  # gtest totals of this run only (the log may hold several runs).
  local totals
  totals=$(awk -v n="== $(date -u -d @"$s" +%T) $name:" 'index($0, n) == 1 {on=1} on' "$OUT/$log" |
           grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' | sed 's/^\[ *\([A-Z]*\) *\] \([0-9]*\).*/\1 \2/' |
           sort | uniq | tr '\n' ' ')
  note "$(printf '%-18s %-22s %4ss  %-13s %s' "$name" "$res" "$(since "$s")" "$log" "$totals")"
}

# ------------------------------------------------------------------ the pack
# Unpack .device-pack (carried) unless .device already holds that very pack (phase 2 on a warm
# machine). The tarball's sha256 is checked first: a truncated carry should say so.
unpack() {
  local tb=.device-pack/parafuse-device.tar.xz
  if [ -f "$tb" ]; then
    if ! (cd .device-pack && sha256sum -c --quiet SHA256); then
      note "START FAILED: .device-pack/parafuse-device.tar.xz does not match its SHA256"; return 1
    fi
    if [ -f "$DEV/PACK_SHA256" ] && cmp -s "$DEV/PACK_SHA256" .device-pack/SHA256; then return 0; fi
    rm -rf "$DEV"
    # xz may be missing from a minimal image; Python's tarfile reads xz too.
    if command -v xz > /dev/null; then tar -xJf "$tb"
    else
      local py; py=$(command -v python3 || echo /opt/torch/.venv/bin/python)
      "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(".")' "$tb"
    fi || { note "START FAILED: could not unpack $tb"; return 1; }
    cp .device-pack/SHA256 "$DEV/PACK_SHA256"
  elif [ ! -x "$DEV/bin/parafuse" ]; then
    note "START FAILED: no .device-pack carried and no .device from an earlier call (carry .device-pack)"
    return 1
  fi
}
unpack || exit 2
# shellcheck source=/dev/null
source "$DEV/env.sh"

# CUDA libraries from the image, after ours: the toolkit's cuBLAS/cuBLASLt/cudart, and NCCL
# from the toolkit or else the pip wheel PyTorch brings (nvidia-nccl-cu13).
find_lib_dir() {  # PATTERN DIR... -> first dir holding PATTERN, else a find under /usr /opt
  local pat=$1 d f; shift
  for d in "$@"; do
    f=$(ls -1 "$d"/$pat 2>/dev/null | head -1)
    [ -n "$f" ] && { dirname "$f"; return; }
  done
  f=$(find /usr /opt -name "$pat" \( -type f -o -type l \) 2>/dev/null | sort | head -1)
  [ -n "$f" ] && dirname "$f"
}
CUDA_DIRS=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib)
CUBLASLT_DIR=$(find_lib_dir 'libcublasLt.so.13*' "${CUDA_DIRS[@]}")
CUBLAS_DIR=$(find_lib_dir 'libcublas.so.13*' "${CUDA_DIRS[@]}")
CUDART_DIR=$(find_lib_dir 'libcudart.so.13*' "${CUDA_DIRS[@]}")
NCCL_DIR=$(find_lib_dir 'libnccl.so.2*' "${CUDA_DIRS[@]}" \
             /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl/lib \
             /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl/lib64)
for d in "$CUBLASLT_DIR" "$CUBLAS_DIR" "$CUDART_DIR" "$NCCL_DIR"; do
  [ -n "$d" ] && case ":$LD_LIBRARY_PATH:" in *":$d:"*) ;; *) LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d" ;; esac
done
export LD_LIBRARY_PATH

# GCC runtime: the machine's own if it is new enough (it normally is), else GCC 12's from the
# pack. ldd names the missing GLIBCXX/CXXABI version when it is not.
if ldd "$DEV/bin/parafuse" 2>&1 | grep -qE "(GLIBCXX|CXXABI|GCC)_[0-9.]+' not found|libstdc\+\+.*not found"; then
  export LD_LIBRARY_PATH="$DEV/lib:$DEV/lib/fallback:${LD_LIBRARY_PATH#"$DEV/lib:"}"
  GCCRT="pack's GCC 12 libstdc++ (the machine's is older or missing)"
else
  GCCRT="the machine's libstdc++"
fi

# The tests have this checkout's path from the build machine compiled in (tests/data, the
# model cache): make that path lead here.
BUILD_ROOT=$(cat "$DEV/BUILD_ROOT")
LINKED=""
if [ "$(readlink -f "$BUILD_ROOT" 2>/dev/null)" != "$(readlink -f "$ROOT")" ]; then
  if [ ! -e "$BUILD_ROOT" ] || [ -L "$BUILD_ROOT" ]; then
    mkdir -p "$(dirname "$BUILD_ROOT")" && ln -sfn "$ROOT" "$BUILD_ROOT" && LINKED="$BUILD_ROOT -> $ROOT"
  else
    LINKED="WARNING: $BUILD_ROOT exists and is not this checkout: tests that read tests/data may fail"
  fi
fi

# ------------------------------------------------------------------ do the binaries start?
# First line of the summary: a GLIBC/GLIBCXX mismatch or a missing library makes every later
# step fail, so it is said once, plainly, here.
start_errors=""
for b in "$DEV"/bin/* "$DEV"/mpi/bin/mpirun; do
  e=$(ldd "$b" 2>&1 | grep -E 'not found|version .* not found' | sed "s|^|$(basename "$b"): |")
  [ -n "$e" ] && start_errors+="$e"$'\n'
done
if ! help=$("$DEV/bin/parafuse" --help 2>&1); then start_errors+="parafuse --help: $(echo "$help" | head -3)"$'\n'; fi
if ! mv=$(mpirun --version 2>&1); then start_errors+="mpirun --version: $(echo "$mv" | head -3)"$'\n'; fi
if [ -n "$start_errors" ]; then
  note "START FAILED: the packed binaries do not start here (GLIBC needed: $(grep -o 'GLIBC_[0-9.]*' "$DEV/BUILD_INFO" | head -1), here: $(ldd --version 2>&1 | head -1 | grep -o '[0-9.]*$')):"
  echo "$start_errors" | grep . | head -20 | sed 's/^/  /' | tee -a "$summary"
  status=1
else
  note "start: ok (glibc $(ldd --version 2>&1 | head -1 | grep -o '[0-9.]*$'), $GCCRT, $(mpirun --version 2>&1 | head -1))"
fi

# ------------------------------------------------------------------ environment facts
ENVF=$OUT/$(case $PHASE in 1) echo env.txt;; 2) echo env2.txt;; *) echo env-profile.txt;; esac)
{
  echo "== phase $PHASE, $(date -u) on $(hostname), checkout $ROOT"
  cat "$DEV/BUILD_INFO"
  echo "== machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  nvidia-smi 2>&1 | head -15
  ldd --version 2>&1 | head -1
  cat /etc/os-release 2>/dev/null | grep -E '^(PRETTY_NAME|ID)='
  echo "cpus $(nproc --all); $(grep MemTotal /proc/meminfo)"
  echo "== libraries"
  echo "cublasLt: ${CUBLASLT_DIR:-NOT FOUND}; cublas: ${CUBLAS_DIR:-NOT FOUND}; cudart: ${CUDART_DIR:-NOT FOUND}; nccl: ${NCCL_DIR:-NOT FOUND}"
  ls -l "$NCCL_DIR"/libnccl.so* "$CUBLASLT_DIR"/libcublasLt.so* 2>&1
  [ -n "$NCCL_DIR" ] && strings "$NCCL_DIR"/libnccl.so.2 2>/dev/null | grep -m1 'NCCL version'
  echo "gcc runtime: $GCCRT"
  echo "build root: ${LINKED:-same path as the build}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "== ldd (as resolved here)"
  for b in "$DEV"/bin/* "$DEV"/mpi/bin/mpirun; do echo "-- $b"; ldd "$b" 2>&1; done
  echo "== MPI / OMPI env"
  env | grep -E '^(OMPI_|OPAL_|PMIX_)' | sort
} > "$ENVF" 2>&1
note "env: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)${CUBLASLT_DIR:+ cublasLt in $CUBLASLT_DIR}${NCCL_DIR:+, nccl in $NCCL_DIR}"
[ -n "$CUBLASLT_DIR" ] && [ -n "$NCCL_DIR" ] && [ -n "$CUDART_DIR" ] || note "env: WARNING a CUDA library was not found (see $(basename "$ENVF"))"
[ -n "$LINKED" ] && note "env: $LINKED"

MPIRUN=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

if [ "$PHASE" = profile ]; then
  # ---------------------------------------------------------------- profile
  # Per-kernel GPU time of 2 eager and 2 replayed batch-1 decode steps of the 8B model (ncu,
  # duration only: one pass per kernel; clocks left alone as METHOD.md says). The CSV rows
  # are the quoted lines of ncu.log; bench/device/ncu_summary.py sums them per kernel.
  step ncu_decode ncu.log 240 ncu --profile-from-start off --clock-control none \
    --metrics gpu__time_duration.sum --csv --page raw \
    "$DEV/bin/bench_gpu" --only decode --decode-steps 16 --profile-steps 2
elif [ "$PHASE" = 1 ]; then
  # ---------------------------------------------------------------- phase 1
  # Keep model part a for phase 2 (a warm machine keeps /tmp between calls).
  if [ -d .device-model-a ]; then
    mkdir -p "$STASH" && cp .device-model-a/* "$STASH/" &&
      note "model: part a stashed in $STASH ($(du -sh "$STASH" | cut -f1))" ||
      note "model: FAILED to stash part a"
  else
    note "model: no .device-model-a carried (phase 2 will lack part a)"
  fi
  step ops_test ops.log 90 "$DEV/bin/test_cuda_backend_ops" --gtest_output="xml:$OUT/ops.xml"
  # A sticky CUDA error fails every later test of the process: rerun the first few failures
  # one per process to tell real failures from the cascade, and the first one under
  # compute-sanitizer (memcheck) for an out-of-bounds access.
  failed=$(grep -E '^\[  FAILED  \] [A-Za-z0-9_/.]+\.[A-Za-z0-9_/]+' "$OUT/ops.log" 2>/dev/null |
           awk '{print $4}' | sort -u | head -6)
  for t in $failed; do
    step "ops_alone" ops.log 20 "$DEV/bin/test_cuda_backend_ops" --gtest_filter="$t"
  done
  first=$(echo "$failed" | head -1)
  if [ -n "$first" ] && command -v compute-sanitizer > /dev/null; then
    step ops_memcheck ops.log 60 compute-sanitizer --tool memcheck --print-limit 10 \
      "$DEV/bin/test_cuda_backend_ops" --gtest_filter="$first"
  fi
  step e2e_test e2e.log 90 "$DEV/bin/test_cuda_e2e"
  step parallel_np1 parallel.log 45 "${MPIRUN[@]}" -np 1 "$DEV/bin/test_cuda_parallel"
  step parallel_np2 parallel.log 60 "${MPIRUN[@]}" -np 2 "$DEV/bin/test_cuda_parallel"
  # From the checkout root: its default --model is configs/models/llama-3.1-8b.json.
  step bench_gpu bench.log 200 "$DEV/bin/bench_gpu" --json "$OUT/bench.json" --repeats 10 \
    --decode-batches 8,32
  grep -E 'copy|decode|gemm|ffn|ratio|fraction|GB/s|TFLOP' "$OUT/bench.log" 2>/dev/null | head -20 | sed 's/^/  /' >> "$summary"
else
  # ---------------------------------------------------------------- phase 2
  mkdir -p .cache/models
  target=.cache/models/$MODEL_NAME
  s=$(date +%s)
  joined=0
  if [ -f "$target" ] && [ -f .device-model-b/SHA256SUMS ] &&
     [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$(awk 'NR==1 {print $1}' .device-model-b/SHA256SUMS)" ]; then
    joined=1; note "model: already joined ($target)"
  elif [ ! -f .device-model-b/SHA256SUMS ]; then
    note "model: JOIN FAILED: no .device-model-b carried"
  elif [ ! -f "$STASH/$MODEL_NAME.part-a" ]; then
    note "model: JOIN FAILED: part a is not in $STASH (the machine went cold between the calls? rerun phase 1, then phase 2 within 30 s)"
  elif ! (cd "$STASH" && sha256sum -c --quiet <(tail -n +2 SHA256SUMS)) ||
       ! (cd .device-model-b && sha256sum -c --quiet <(tail -n +2 SHA256SUMS)); then
    note "model: JOIN FAILED: a part does not match its sha256"
  else
    cat "$STASH/$MODEL_NAME.part-a" ".device-model-b/$MODEL_NAME.part-b" > "$target.tmp"
    if [ "$(sha256sum "$target.tmp" | cut -d' ' -f1)" = "$(awk 'NR==1 {print $1}' .device-model-b/SHA256SUMS)" ]; then
      mv "$target.tmp" "$target"; joined=1
      note "model: joined, sha256 ok ($(since "$s")s)"
    else
      rm -f "$target.tmp"; note "model: JOIN FAILED: the joined file's sha256 differs"
    fi
  fi
  [ $joined = 1 ] || status=1
  step e2e_test_smollm2 e2e2.log 150 "$DEV/bin/test_cuda_e2e" --gtest_output="xml:$OUT/e2e2.xml"
  if [ $joined = 1 ]; then
    DEMO=(generate -m "$target" --chat -p "What is the capital of France?" -n 32)
    # CPU first: the reference text for the same greedy prompt (135M, a few seconds).
    step demo_cpu demo.log 60 "$DEV/bin/parafuse" "${DEMO[@]}" --backend cpu
    step demo_cuda_tp1 demo.log 90 "$DEV/bin/parafuse" "${DEMO[@]}" --backend cuda
    # Several ranks on the one GPU (they share it). SmolLM2 has 9 query / 3 KV heads, so tp=2
    # is refused ("9 query heads do not split evenly"): tensor parallel runs at tp=3, and 2
    # ranks as a pipeline (pp=2). Either may fail while GPU collectives are not wired.
    step demo_cuda_tp3 demo.log 120 "${MPIRUN[@]}" -np 3 "$DEV/bin/parafuse" "${DEMO[@]}" --backend cuda --tp 3
    step demo_cuda_pp2 demo.log 90 "${MPIRUN[@]}" -np 2 "$DEV/bin/parafuse" "${DEMO[@]}" --backend cuda --pp 2
    # The answer text, so the summary shows whether the model said "Paris".
    grep -iE 'paris' "$OUT/demo.log" | head -3 | sed 's/^/  demo says: /' >> "$summary" ||
      echo "  demo: no 'Paris' in demo.log" >> "$summary"
  else
    note "demo: SKIPPED (no model)"
  fi
fi

note "total: $(since "$T0")s, $([ $status = 0 ] && echo 'all steps ok' || echo 'SOME STEPS FAILED')"
exit $status

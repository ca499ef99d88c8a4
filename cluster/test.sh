#!/usr/bin/env bash
# The whole test suite: set up (packages, model, build), then every test under ctest.
#   cluster/test.sh            preset "default"
#   PARAFUSE_PRESET=asan cluster/test.sh   the same suite under ASan + UBSan
set -euo pipefail
cd "$(dirname "$0")/.."
cluster/setup.sh
preset=${PARAFUSE_PRESET:-default}
ctest --preset "$preset" "$@"

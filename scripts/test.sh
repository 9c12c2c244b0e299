#!/usr/bin/env bash
# The README's second command (and exactly what CI runs): set up, build, run the test suite.
# Tests labelled `slow` are left out; pass ctest arguments to change the selection, e.g.
#   bash scripts/test.sh -L cuda
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- -LE slow; fi
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"

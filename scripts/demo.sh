#!/usr/bin/env bash
# The README's first command: set up, build, and run the main job. Until strand-train lands this
# is strand-smoke, a small end-to-end training run on synthetic data.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
./"${BUILD_DIR:-build}"/strand-smoke "$@"

#!/usr/bin/env bash
# Installs what strand needs from Debian's packages (only what is missing), then configures and
# builds into ./build. Safe to run again. Needs root or sudo for the install step.
# Environment: BUILD_DIR (default build), STRAND_CMAKE_ARGS (extra cmake arguments).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pkgs=(build-essential cmake ninja-build pkg-config libgtest-dev libbenchmark-dev libopenblas-dev libopenblas-openmp-dev nlohmann-json3-dev libtoml11-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "strand setup: installing ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "strand setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo_cmd="sudo"
  fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nvcc is often installed outside PATH; with it found, the CUDA backend is built (and its tests
# skip on machines without a GPU).
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi

build=${BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${STRAND_CMAKE_ARGS:-} | grep -E '^-- strand:' || true
cmake --build "$build" -j "$(nproc)"

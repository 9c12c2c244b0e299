#!/usr/bin/env bash
# The smallest device a GPU-scale case fits on, by the emulated device's dry run (no GPU needed):
# bisects STRAND_EMU_DEVICE_MIB for compare_cpu_emu's case until the step runs, to 8 MiB. The gap
# between that and the case's peak of allocated bytes is the caching allocator's fragmentation.
#   bash tools/min_device_memory.sh CASE [--bf16-mixed]      (cases: build/tests/compare_cpu_emu --list)
# Environment: BUILD_DIR (default build), STRAND_EXPANDABLE_SEGMENTS=1 to measure expandable segments.
# Prints one line: case, precision, expandable, peak allocated MiB, smallest device MiB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ $# -ge 1 ] || { sed -n '2,7p' "$0"; exit 2; }
bin=${BUILD_DIR:-build}/tests/compare_cpu_emu
[ -x "$bin" ] || { echo "min_device_memory: $bin not found (build with the CUDA backend on)" >&2; exit 1; }
case_name=$1; shift
run() {  # run MIB [args]: the JSON line, or nothing when it does not fit
  local mib=$1; shift
  STRAND_EMU_DRY_RUN=1 STRAND_EMU_DEVICE_MIB=$mib "$bin" --device cuda --case "$case_name" --reps 1 --warmup 0 "$@" \
    2>/dev/null | grep '"device_peak_bytes"' || true
}
line=$(run 131072 "$@")
[ -n "$line" ] || { echo "min_device_memory: $case_name does not run even on 128 GiB" >&2; exit 1; }
peak=$(grep -o '"device_peak_bytes": [0-9]*' <<< "$line" | grep -o '[0-9]*$')
lo=$(( peak / 1048576 - 1 )) hi=131072
while [ $(( hi - lo )) -gt 8 ]; do
  mid=$(( (lo + hi) / 2 ))
  if [ -n "$(run $mid "$@")" ]; then hi=$mid; else lo=$mid; fi
done
echo "$case_name ${1:-fp32} expandable=${STRAND_EXPANDABLE_SEGMENTS:-0} peak_allocated_MiB=$(( peak / 1048576 )) smallest_device_MiB=$hi"

#!/usr/bin/env bash
# Builds the CUDA targets for sm_90 (Hopper; STRAND_GPU_CMAKE="-DCMAKE_CUDA_ARCHITECTURES=80" for an
# A100) in build-gpu/ and runs the steps asked for on the GPU (see README, "GPU"). On the lent GPU
# machines of this workplace it first unpacks the build dependencies that ../shared/device/prepare.sh
# put into .devdeps/. Logs go to $OUT (or /tmp).
#   bash scripts/gpu.sh [step ...]      steps: tests, tests-optin, embed, bench, compare, train
#                                       (default: tests)
# tests-optin runs the cuda tests again with the opt-in GPU paths switched on for everything
# (STRAND_TC_ATTENTION=1 STRAND_CUBLASLT_BIAS=1 STRAND_CUDNN_CONV=1 STRAND_FUSED_GPU_ATTENTION=1
# STRAND_EXPANDABLE_SEGMENTS=1: tensor-core attention, cuBLASLt bias epilogue, cuDNN conv1d, the
# models' fused rel/dropout attention on the GPU, the allocator's expandable segments), so
# the whole-model and training parity tests go through them too.
# STRAND_MODELS=1 adds the whole-model cases to compare (their PyTorch side: carry .whl from
# tools/fetch_gpu_wheels.sh, or STRAND_REF_SITE), STRAND_BF16=1 runs each in bf16-mixed too,
# STRAND_PROFILE_MODELS=1 adds a per-kernel profile of each; STRAND_BENCH_FILTER narrows the kernels.
# Extra CMake arguments: STRAND_GPU_CMAKE="-D..." ; build dir: build-gpu.
set -uo pipefail
out=${OUT:-/tmp}
steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(tests)
# On a machine without the build dependencies installed (the lent GPU machines here), the setup part
# of .devdeps/gpu-run.sh (everything before its build) unpacks them; elsewhere scripts/setup.sh's
# packages are expected.
if [ -f .devdeps/gpu-run.sh ]; then
  # shellcheck disable=SC1090
  source <(sed -n '1,/^nvcc --version/p' .devdeps/gpu-run.sh | grep -v '^nvcc --version\|^set -\|^label=')
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRAND_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  ${STRAND_GPU_CMAKE:-} > "$out/configure.log" 2>&1 || { tail -n 40 "$out/configure.log"; exit 1; }
targets=(strand-embed strand-train strand-synth strand-eval cuda_tests compare_cpu)
[ -f bench/cuda_bench.cpp ] && targets+=(cuda_bench)
cmake --build build-gpu -j 16 --target "${targets[@]}" > "$out/build.log" 2>&1 || { grep -B2 -A12 'error' "$out/build.log" | head -n 80; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
for step in "${steps[@]}"; do
  echo "=== $step"
  case $step in
    tests|tests-optin)
      log="$out/ctest.log"
      [ "$step" = tests-optin ] && log="$out/ctest_optin.log" && export STRAND_TC_ATTENTION=1 STRAND_CUBLASLT_BIAS=1 STRAND_CUDNN_CONV=1 STRAND_FUSED_GPU_ATTENTION=1 STRAND_EXPANDABLE_SEGMENTS=1
      ctest --test-dir build-gpu -L cuda --output-on-failure --timeout 300 > "$log" 2>&1
      [ "$step" = tests-optin ] && unset STRAND_TC_ATTENTION STRAND_CUBLASLT_BIAS STRAND_CUDNN_CONV STRAND_FUSED_GPU_ATTENTION STRAND_EXPANDABLE_SEGMENTS
      grep -E 'tests passed|Failed|FAILED|\*\*\*|Passed|Error|error' "$log" | grep -v '^\[       OK' | head -n 80 ;;
    embed)
      for m in tests/fixtures/esm2/tiny_base/model tests/fixtures/aido_rna/tiny_rms/model; do
        printf '>a\nMKTAYIAKQR\n>b\nMKT\n' > /tmp/p.fa
        [[ $m == *aido* ]] && printf '>a\nACGTACGTAC\n>b\nACG\n' > /tmp/p.fa
        for d in cpu cuda; do build-gpu/strand-embed --model-dir "$m" --input /tmp/p.fa --output /tmp/e_$d.safetensors --device $d --quiet || echo "embed $m $d FAILED"; done
        cmp -s /tmp/e_cpu.safetensors /tmp/e_cuda.safetensors && echo "embed $m: cpu and cuda files identical" || echo "embed $m: files differ (see parity tests for tolerance)"
      done ;;
    bench)
      [ -x build-gpu/bench/cuda_bench ] && build-gpu/bench/cuda_bench --benchmark_out="$out/cuda_bench.json" \
        --benchmark_out_format=json --benchmark_min_time=0.2 ${STRAND_BENCH_FILTER:+--benchmark_filter=$STRAND_BENCH_FILTER} 2>&1 | tail -n 80 ;;
    compare)
      # the reference packages the GPU image lacks (tools/fetch_gpu_wheels.sh; carry .whl)
      if [ -z "${STRAND_REF_SITE:-}" ] && ls .whl/*.whl > /dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/refsite .whl/*.whl && export STRAND_REF_SITE=/tmp/refsite
      fi
      PYTHONUNBUFFERED=1 python3 tools/compare_gpu.py --strand build-gpu/bench/cuda_bench ${STRAND_BENCH_FILTER:+--filter=$STRAND_BENCH_FILTER} \
        ${STRAND_MODELS:+--models} ${STRAND_PROFILE_MODELS:+--profile} ${STRAND_BF16:+--bf16-mixed} --out "$out/gpu_compare.json" --md "$out/gpu_compare.md" > "$out/compare.log" 2>&1
      tail -n 50 "$out/compare.log" ;;
    train)  # the tiny recipe on the GPU: synthetic data, strand-train --device cuda, then the CPU eval
      build-gpu/strand-synth --out data/tiny --train 512 --valid 128 --test 128 --dna-length 512 --seed 1 > /dev/null
      build-gpu/strand-train --config configs/tiny_cpu.toml --set trainer.device=cuda --set trainer.run_dir=../runs/tiny_gpu 2>&1 | tail -n 8
      build-gpu/strand-eval --config configs/tiny_cpu.toml --checkpoint runs/tiny_gpu/best.safetensors --split test 2>&1 | tail -n 2 ;;
    *) echo "unknown step $step" ;;
  esac
done
exit 0

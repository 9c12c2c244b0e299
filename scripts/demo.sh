#!/usr/bin/env bash
# The README's first command: install what is missing, build, generate synthetic data, train the
# tiny CPU recipe (Enformer + AIDO.RNA + ESM-2 from scratch, concat fusion), evaluate it on the test
# split and print the test Spearman. Extra arguments go to strand-train (e.g. --set trainer.epochs=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
build=${BUILD_DIR:-build}
"$build"/strand-synth --out data/tiny --train 512 --valid 128 --test 128 --dna-length 512 --seed 1
"$build"/strand-train --config configs/tiny_cpu.toml "$@"
"$build"/strand-eval --config configs/tiny_cpu.toml --checkpoint runs/tiny_cpu/best.safetensors --split test \
  | tee runs/tiny_cpu/eval_test.txt | tail -n 2
spearman=$(grep -o 'test spearman [0-9.-]*' runs/tiny_cpu/eval_test.txt | awk '{print $3}')
echo "Test Spearman (mean over 30 tissues): $spearman"

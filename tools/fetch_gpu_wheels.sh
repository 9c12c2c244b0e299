#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the PyTorch-side reference packages that a GPU machine without
# network lacks, for tools/compare_gpu.py --models: ModelGenerator (RNABert, the fusion adapters)
# with the transformers 4.38 it needs, and enformer-pytorch. Python 3.12, manylinux x86-64 (the lent
# GPU machines' python3); all --no-deps: torch, numpy, einops, safetensors, ... are already there.
# On the GPU machine scripts/gpu.sh installs them with pip --target into a folder that goes first on
# PYTHONPATH for those cases only (ESM runs with the machine's own transformers).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl "$@"
}
dl transformers==4.38.0 tokenizers==0.15.2 huggingface-hub==0.20.3 modelgenerator==0.1.3.post0 enformer-pytorch==0.8.12
ls -1 .whl
du -sh .whl | cut -f1 | xargs echo "size (it travels with the tree, 64 MiB in all):"

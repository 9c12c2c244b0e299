#!/usr/bin/env python3
"""bf16-mixed parity data for the ESM-2 golden models (run after esm2.py, whose folders it reads;
same environment). Writes tests/fixtures/esm2/<name>/bf16.safetensors: the fp64 last_hidden_state
and LoRA gradients of the esm2.py batch and loss, and in metadata["bf16_errors"] how far PyTorch's
bf16 autocast lands from them (see common.bf16_fixture). strand's bf16-mixed run must stay within
twice that error (GoldenParity.Bf16MixedStaysWithinTwicePyTorchsBf16Error in tests/models/golden_test.cpp)."""
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import EsmForMaskedLM, EsmModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, bf16_fixture  # noqa: E402
from esm2 import CONFIGS, forward  # noqa: E402


def main():
    for name, c in CONFIGS.items():
        folder = FIXTURES / "esm2" / name
        exp = load_file(str(folder / "expected.safetensors"))

        def make():
            if c["mlm"]:
                return EsmForMaskedLM.from_pretrained(folder / "model").esm.eval()
            return EsmModel.from_pretrained(folder / "model").eval()

        tensors, meta = bf16_fixture(make, ["query", "value"], 4, 8.0, exp, forward=forward)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "bf16.safetensors"), metadata=meta)
        print(f"{name}: {meta['bf16_errors']}")


if __name__ == "__main__":
    main()

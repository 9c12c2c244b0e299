#!/usr/bin/env python3
"""bf16-mixed parity data for the ESM-2 golden models (run after esm2.py, whose folders it reads;
same environment). Writes tests/fixtures/esm2/<name>/bf16.safetensors: the fp64 last_hidden_state
and LoRA gradients of the esm2.py batch and loss, and in metadata["bf16_errors"] how far PyTorch's
bf16 autocast lands from them (see common.bf16_fixture). strand's bf16-mixed run must stay within
twice that error (GoldenParity.Bf16MixedStaysWithinTwicePyTorchsBf16Error in tests/models/golden_test.cpp)."""
import sys
from pathlib import Path

from transformers import EsmForMaskedLM, EsmModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, write_bf16_fixtures  # noqa: E402
from esm2 import CONFIGS, forward  # noqa: E402


def make(folder, c):
    if c["mlm"]:
        return EsmForMaskedLM.from_pretrained(folder / "model").esm.eval()
    return EsmModel.from_pretrained(folder / "model").eval()


if __name__ == "__main__":
    write_bf16_fixtures(FIXTURES / "esm2", CONFIGS, make, forward=forward)

#!/usr/bin/env python3
"""bf16-mixed parity data for the AIDO.RNA golden models (run after rnabert.py, whose folders it
reads; same environment: transformers 4.38 first on PYTHONPATH). Writes
tests/fixtures/aido_rna/<name>/bf16.safetensors as esm2_bf16.py does for ESM-2.

One change to the reference: RNABertModel masks attention with torch.finfo(torch.float).min,
which rounds to -inf in bf16, so under autocast every padded query row is all -inf, its softmax
NaN, and although the forward masks those rows to 0 the backward spreads the NaN into every
gradient (PyTorch's bf16 LoRA gradients on this padded batch are all NaN, on the CPU as on a GPU,
whose autocast runs the same bf16 add before its f32 softmax). The mask is scaled here to bf16's
lowest finite value, which changes no fp32 or fp64 result and makes PyTorch's bf16 run finite, so
that there is a PyTorch bf16 error to compare with."""
import sys
from pathlib import Path

import torch
import modelgenerator.huggingface_models.rnabert.modeling_rnabert as mr
from modelgenerator.huggingface_models.rnabert.modeling_rnabert import RNABertForMaskedLM, RNABertModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, write_bf16_fixtures  # noqa: E402
from rnabert import CONFIGS  # noqa: E402


def finite_bf16_mask(original=mr.bert_extended_attention_mask):
    scale = torch.finfo(torch.bfloat16).min / torch.finfo(torch.float).min
    # The caller multiplies by finfo(float).min: pads end at bf16's lowest finite value.
    return lambda attention_mask: original(attention_mask).to(torch.float32) * scale


def make(folder, c):
    if c["mlm"]:
        return RNABertForMaskedLM.from_pretrained(folder / "model").bert.eval()
    return RNABertModel.from_pretrained(folder / "model").eval()


if __name__ == "__main__":
    mr.bert_extended_attention_mask = finite_bf16_mask()
    write_bf16_fixtures(FIXTURES / "aido_rna", CONFIGS, make,
                        extra_meta={"reference_change": "attention mask scaled to bf16's lowest finite value "
                                                        "(see the script)"})

#!/usr/bin/env python3
"""bf16-mixed parity data for the Enformer golden models (run after enformer.py, which it imports
to rebuild the same random models; same environment). For the training-mode step of enformer.py
(dropout off, BatchNorm on batch statistics, its loss), writes
tests/fixtures/enformer/<name>/bf16.safetensors: the fp64 output and every trunk gradient, and in
metadata["bf16_errors"] how far PyTorch's bf16 autocast lands from them (relative L2 and max abs;
plain CPU autocast and CPU autocast with CUDA's fp32 list, see common.CudaAutocastLists). strand's
bf16-mixed step must stay within twice that error (tests/models/enformer_test.cpp)."""
import contextlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from enformer_pytorch import Enformer, EnformerConfig
from enformer_pytorch.data import str_to_one_hot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CudaAutocastLists, rel_errors  # noqa: E402
from enformer import CONFIGS, ROOT, loss_of, randomise_  # noqa: E402


def step(spec, seqs, dtype, autocast, mode):
    torch.manual_seed(spec["seed"])
    model = Enformer(EnformerConfig(**spec["cfg"]))
    randomise_(model, spec["seed"])
    model = model.to(dtype).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = str_to_one_hot(seqs).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), (mode or contextlib.nullcontext()):
        y = model(x, return_only_embeddings=True)
    loss = loss_of(y.to(dtype)) if dtype != torch.float64 else loss_of_f64(y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if not n.startswith("_trunk") and not n.startswith("_heads")}
    return y.detach(), grads


def loss_of_f64(y):
    w = torch.cos(0.37 * torch.arange(y.numel(), dtype=torch.float64)).float().double().reshape(y.shape)
    return (y * y).mean() + (y * w).mean()


def main():
    for name, spec in CONFIGS.items():
        folder = ROOT / name
        seqs = json.loads((folder / "inputs.json").read_text())["sequences"]
        y64, g64 = step(spec, seqs, torch.float64, False, None)
        flat64 = torch.cat([g.flatten() for g in g64.values()])
        meta = {}
        for variant, mode in (("cpu_autocast", None), ("cuda_lists", CudaAutocastLists())):
            y, g = step(spec, seqs, torch.float32, True, mode)
            meta[variant] = {"train_out": rel_errors(y, y64),
                             "grads": rel_errors(torch.cat([g[n].flatten() for n in g64]), flat64)}
        tensors = {"train_out_f64": y64, **{"grad_f64." + n: g for n, g in g64.items()}}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "bf16.safetensors"),
                  metadata={"bf16_errors": json.dumps(meta), "torch": torch.__version__})
        print(f"{name}: {json.dumps(meta)}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden fixtures for the fusion heads, from ModelGenerator's own adapters
(modelgenerator.adapters.fusion MMFusionTokenAdapter(ConcatFusion, MLPAdapter) and
MMFusionSeqAdapter(CrossAttentionFusion, MLPPoolAdapter)), on tiny random configs with padded masks.

For each config, tests/fixtures/fusion/<name>.safetensors holds the head's state dict (its own key
names), the inputs (h0..h2, m0..m2), the output, the upstream gradient r, and the gradient of
sum(out * r) for every parameter ("grad.<key>") and input ("grad.h<i>"). Eval mode (dropout off).

Run: refenv/bin/python tools/golden/fusion.py   (torch, safetensors, modelgenerator --no-deps)
"""
import functools
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from modelgenerator.adapters.adapters import MLPAdapter, MLPPoolAdapter
from modelgenerator.adapters.fusion import (ConcatFusion, CrossAttentionFusion, MMFusionSeqAdapter,
                                            MMFusionTokenAdapter)

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "fusion"


def make(cfg):
    sizes = cfg["sizes"]
    s1 = sizes[1]
    s2 = sizes[2] if len(sizes) == 3 else None
    if cfg["kind"] == "concat":
        head = MMFusionTokenAdapter(
            cfg["out"], sizes[0], s1, s2,
            fusion=functools.partial(ConcatFusion, project_size=cfg["project"]),
            adapter=functools.partial(MLPAdapter, hidden_sizes=cfg["hidden"], dropout=0.1, dropout_in_middle=False))
    else:
        head = MMFusionSeqAdapter(
            cfg["out"], sizes[0], s1, s2,
            fusion=functools.partial(CrossAttentionFusion, num_attention_heads=cfg["heads"]),
            adapter=functools.partial(MLPPoolAdapter, hidden_sizes=cfg["hidden"], dropout=0.1, dropout_in_middle=False))
    return head.double().eval()


def run(name, cfg, seed):
    torch.manual_seed(seed)
    head = make(cfg)
    B = 3
    lens = cfg["lens"]
    hs = [torch.randn(B, lens[i], cfg["sizes"][i], dtype=torch.float64, requires_grad=True) for i in range(len(lens))]
    ms = [torch.ones(B, lens[0], dtype=torch.float64)]  # Enformer bins: all ones
    for i in range(1, len(lens)):
        m = torch.ones(B, lens[i], dtype=torch.int64)
        for b in range(B):
            m[b, lens[i] - b:] = 0  # right padding of different lengths
        ms.append(m)
    args = []
    for h, m in zip(hs, ms):
        args += [h, m]
    while len(args) < 6:
        args.append(None)
    out = head(*args)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    t = {k: v.detach().clone() for k, v in head.state_dict().items()}
    for k, p in head.named_parameters():
        t["grad." + k] = p.grad.detach().clone()
    for i, (h, m) in enumerate(zip(hs, ms)):
        t[f"h{i}"] = h.detach().clone()
        t[f"m{i}"] = m.clone()
        t[f"grad.h{i}"] = h.grad.detach().clone()
    t["out"] = out.detach().clone()
    t["r"] = r
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in t.items()}, str(OUT / f"{name}.safetensors"),
              metadata={"config": json.dumps(cfg)})
    print(f"wrote {name}: out {tuple(out.shape)}")


def main():
    run("concat2", {"kind": "concat", "sizes": [12, 10], "lens": [4, 6], "project": 8, "hidden": [16], "out": 5}, 1)
    run("concat3", {"kind": "concat", "sizes": [12, 10, 6], "lens": [4, 6, 5], "project": 8, "hidden": [16], "out": 5}, 2)
    run("attention2", {"kind": "attention", "sizes": [12, 10], "lens": [4, 6], "heads": 3, "hidden": [7], "out": 5}, 3)
    run("attention3", {"kind": "attention", "sizes": [12, 10, 6], "lens": [4, 6, 5], "heads": 4, "hidden": [7], "out": 5}, 4)


if __name__ == "__main__":
    main()

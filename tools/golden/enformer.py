#!/usr/bin/env python3
"""Golden fixtures for strand's Enformer (models/enformer/) from enformer-pytorch (PyPI).

Environment: torch, enformer-pytorch (0.8.x), safetensors, transformers (see tools/make_golden.py).
Weights are random (constructed from a config; nothing is downloaded).

Writes, for each tiny config, tests/fixtures/enformer/<name>/:
  config.json, model.safetensors   an enformer-pytorch folder. tiny_a is written by
                                   safetensors.torch.save_model, which keeps the aliased `_trunk.*`
                                   names (plus `_heads.*`); tiny_b keeps the canonical `stem.*` names.
  inputs.json                      the DNA strings (with N/n/'.'/other bytes) and the loss recipe
  expected.safetensors             eval_out (eval-mode embedding), train_out (train mode,
                                   dropout off, BN batch statistics), loss, grad.<param> for every
                                   trunk parameter, after.<buffer> BN running stats after the step
And tests/fixtures/enformer/posfeat.safetensors: get_positional_embed rows for a few lengths.

    refenv/bin/python tools/golden/enformer.py [--tf-gammas OUT.safetensors]

--tf-gammas additionally exports enformer-pytorch's precomputed TF gamma table ([3071, 32]) for
strand's use_tf_gamma path (not committed: it is only valid for T = 1536).
"""
import argparse
import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file, save_model

import enformer_pytorch.modeling_enformer as me
from enformer_pytorch import Enformer, EnformerConfig
from enformer_pytorch.data import str_to_one_hot

ROOT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "enformer"

CONFIGS = {
    # T = 1024 / 2^3 = 128 bins, crop to 100
    "tiny_a": dict(cfg=dict(dim=48, depth=2, heads=4, attn_dim_key=8, num_downsamples=3, dim_divisible_by=8,
                            target_length=100, output_heads=dict(human=5, mouse=3)),
                   length=1024, batch=2, seed=1, aliases=True),
    # T = 1536 / 2^4 = 96 bins; target 81 leaves an odd 15 to crop: the reference keeps 80 (its quirk)
    "tiny_b": dict(cfg=dict(dim=48, depth=2, heads=2, attn_dim_key=12, num_downsamples=4, dim_divisible_by=8,
                            target_length=81, output_heads=dict(human=7)),
                   length=1536, batch=1, seed=2, aliases=False),
}


def dna(rng, n):
    s = [rng.choice("ACGTacgt") for _ in range(n)]
    for ch in "NnNx.-Z.":  # unknown bytes -> zeros, '.' -> 0.25
        s[rng.randrange(n)] = ch
    return "".join(s)


def randomise_(model, seed):
    # Non-trivial values everywhere (the reference zero-initialises to_out and BN is identity at init).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("_trunk"):
                continue
            fan = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g) / max(fan, 1) ** 0.5)
            if "to_attn_logits" in name:
                p.add_(2 * torch.eye(p.shape[0])[:, :, None, None])
            if name.endswith("fn.0.weight") or ".0.0.weight" in name or name.endswith("1.0.weight"):
                if p.dim() == 1:
                    p.add_(1.0)
        for name, b in model.named_buffers():
            if name.startswith("_trunk"):
                continue
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def loss_of(out):
    # mean(out^2) + mean(out * w), w[i] = cos(0.37 i) over the flattened output
    w = torch.cos(0.37 * torch.arange(out.numel(), dtype=torch.float64)).float().reshape(out.shape)
    return (out * out).mean() + (out * w).mean()


def make(name, spec):
    out_dir = ROOT / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    torch.manual_seed(spec["seed"])
    cfg = EnformerConfig(**spec["cfg"])
    model = Enformer(cfg)
    randomise_(model, spec["seed"])
    model.config.save_pretrained(out_dir)
    if spec["aliases"]:
        save_model(model, str(out_dir / "model.safetensors"))  # keeps `_trunk.*` (deduplicated) names
    else:
        sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("_trunk")}
        save_file(sd, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    rng = random.Random(spec["seed"])
    seqs = [dna(rng, spec["length"]) for _ in range(spec["batch"])]
    (out_dir / "inputs.json").write_text(json.dumps({"sequences": seqs,
                                                     "loss": "mean(y*y) + mean(y*w), w[i] = cos(0.37 i)"}))
    x = str_to_one_hot(seqs)
    exp = {}

    model.eval()
    with torch.no_grad():
        exp["eval_out"] = model(x, return_only_embeddings=True)

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    y = model(x, return_only_embeddings=True)
    loss = loss_of(y)
    loss.backward()
    exp["train_out"] = y.detach()
    exp["loss"] = loss.detach().reshape(1)
    for n, p in model.named_parameters():
        if n.startswith("_trunk") or n.startswith("_heads"):
            continue
        assert p.grad is not None, n
        exp["grad." + n] = p.grad
    for n, b in model.state_dict().items():
        if n.startswith("_trunk") or not (n.endswith("running_mean") or n.endswith("running_var")
                                          or n.endswith("num_batches_tracked")):
            continue
        exp["after." + n] = b
    save_file({k: v.contiguous() for k, v in exp.items()}, str(out_dir / "expected.safetensors"))
    print(f"{name}: out {tuple(y.shape)}, params {sum(p.numel() for p in model.parameters())}, loss {loss.item():.6f}")


def posfeat():
    out = {}
    for T, F in [(128, 12), (96, 24), (7, 6)]:
        out[f"T{T}_F{F}"] = me.get_positional_embed(T, F, "cpu", use_tf_gamma=False)
    T = 1536
    rows = torch.tensor(sorted(set([0, 1, 2, 700, 1400, 1530, 1534, 1535, 1536, 1537, 1600, 2000, 2500, 3069, 3070]
                                  + list(range(0, 3071, 97)))))
    full = me.get_positional_embed(T, 192, "cpu", use_tf_gamma=False)
    out["T1536_F192_rows"] = rows
    out["T1536_F192"] = full[rows]
    save_file({k: v.contiguous() for k, v in out.items()}, str(ROOT / "posfeat.safetensors"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf-gammas", default="")
    args = ap.parse_args()
    ROOT.mkdir(parents=True, exist_ok=True)
    for name, spec in CONFIGS.items():
        make(name, spec)
    posfeat()
    if args.tf_gammas:
        save_file({"tf_gammas": me.TF_GAMMAS.contiguous()}, args.tf_gammas)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Self-test of tools/convert_checkpoint.py (needs torch + safetensors; no network):
sharded .bin folder -> safetensors (same tensors), an enformer-pytorch .bin with its _trunk aliases,
Lightning .ckpt with PEFT LoRA under
backbone1.encoder.base_model.model. -> merged weights (W + alpha/r B A), adapter-only .ckpt +
--base-dir -> the same result, and the errors (no --lora-alpha, no base weights, several backbones).

    refenv/bin/python tools/test_convert_checkpoint.py
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
FIX = HERE.parent / "tests" / "fixtures" / "aido_rna" / "tiny_mlm" / "model"


def convert(*args):
    return subprocess.run([sys.executable, str(HERE / "convert_checkpoint.py"), *map(str, args)],
                          capture_output=True, text=True)


def folder(d: Path):
    if (d / "model.safetensors").exists():
        return load_file(d / "model.safetensors")
    out = {}
    for s in set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"].values()):
        out.update(load_file(d / s))
    return out


def main():
    sd = load_file(FIX / "model.safetensors")
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        # sharded .bin folder
        b = t / "bin"
        b.mkdir()
        (b / "config.json").write_text((FIX / "config.json").read_text())
        keys = sorted(sd)
        half = len(keys) // 2
        torch.save({k: sd[k] for k in keys[:half]}, b / "pytorch_model-00001-of-00002.bin")
        torch.save({k: sd[k] for k in keys[half:]}, b / "pytorch_model-00002-of-00002.bin")
        wm = {k: f"pytorch_model-0000{1 if i < half else 2}-of-00002.bin" for i, k in enumerate(keys)}
        (b / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
        r = convert(b, t / "out1", "--max-shard-size-mb", 0)
        assert r.returncode == 0, r.stderr
        out = folder(t / "out1")
        assert set(out) == set(sd) and all(torch.equal(out[k], sd[k]) for k in sd)
        assert (t / "out1" / "model.safetensors.index.json").exists()

        # Lightning .ckpt with PEFT LoRA, plus a task head that must be left out
        g = torch.Generator().manual_seed(0)
        ck, lora = {}, {}
        for k, v in sd.items():
            if not k.startswith("bert."):
                continue
            k = k[5:]
            if k.endswith(("query.weight", "query.bias", "value.weight", "value.bias")):
                mod, leaf = k.rsplit(".", 1)
                ck[f"backbone1.encoder.base_model.model.{mod}.base_layer.{leaf}"] = v
                if leaf == "weight":
                    A, B = torch.randn(4, v.shape[1], generator=g), torch.randn(v.shape[0], 4, generator=g)
                    ck[f"backbone1.encoder.base_model.model.{mod}.lora_A.default.weight"] = A
                    ck[f"backbone1.encoder.base_model.model.{mod}.lora_B.default.weight"] = B
                    lora[k] = v + 2.0 * (B @ A)
            else:
                ck["backbone1.encoder.base_model.model." + k] = v
        ck["adapter.fc.weight"] = torch.randn(3, 40)
        torch.save({"state_dict": ck, "epoch": 3}, t / "task.ckpt")
        r = convert(t / "task.ckpt", t / "out2", "--config", FIX / "config.json")
        assert r.returncode == 2 and "--lora-alpha" in r.stderr, r.stderr
        r = convert(t / "task.ckpt", t / "out2", "--config", FIX / "config.json", "--lora-alpha", 8)
        assert r.returncode == 0, r.stderr
        out = folder(t / "out2")
        assert not any("lora" in k or "adapter" in k for k in out)
        for k, w in lora.items():
            assert torch.allclose(out[k], w, atol=1e-5), k
        assert torch.equal(out["encoder.layer.0.mlp.up_proj.weight"], sd["bert.encoder.layer.0.mlp.up_proj.weight"])

        # adapter-only checkpoint (save_peft_only) merged into the base folder
        torch.save({"state_dict": {k: v for k, v in ck.items() if "lora_" in k}}, t / "peft.ckpt")
        r = convert(t / "peft.ckpt", t / "out3", "--lora-alpha", 8)
        assert r.returncode == 2 and "--base-dir" in r.stderr, r.stderr
        r = convert(t / "peft.ckpt", t / "out3", "--lora-alpha", 8, "--base-dir", FIX)
        assert r.returncode == 0, r.stderr
        out3 = folder(t / "out3")
        assert set(out3) == set(out) and all(torch.allclose(out3[k], out[k]) for k in out)

        # two backbones: --prefix required
        ck2 = dict(ck)
        ck2.update({k.replace("backbone1.", "backbone2."): v for k, v in ck.items() if k.startswith("backbone1.")})
        torch.save({"state_dict": ck2}, t / "two.ckpt")
        r = convert(t / "two.ckpt", t / "out4", "--config", FIX / "config.json", "--lora-alpha", 8)
        assert r.returncode == 2 and "--prefix" in r.stderr, r.stderr
        r = convert(t / "two.ckpt", t / "out4", "--config", FIX / "config.json", "--lora-alpha", 8,
                    "--prefix", "backbone2.encoder.base_model.model.")
        assert r.returncode == 0, r.stderr

        # an enformer-pytorch pytorch_model.bin as published: every tensor under its canonical name
        # and again under the _trunk.* alias (shared storage, which save_file refuses as is)
        try:
            from enformer_pytorch import Enformer, EnformerConfig
        except ImportError:
            print("(enformer-pytorch not installed: Enformer case skipped)")
        else:
            cfg = EnformerConfig(dim=48, depth=1, heads=2, attn_dim_key=8, num_downsamples=3, dim_divisible_by=8,
                                 target_length=100, output_heads=dict(human=5, mouse=3))
            enf = Enformer(cfg)
            (t / "enf").mkdir()
            sd = enf.state_dict()
            assert any(k.startswith("_trunk.") for k in sd)
            torch.save(sd, t / "enf" / "pytorch_model.bin")
            cfg.to_json_file(str(t / "enf" / "config.json"))
            r = convert(t / "enf", t / "enf_out")
            assert r.returncode == 0, r.stderr
            got = folder(t / "enf_out")
            for k, v in sd.items():  # canonical names kept; aliases either dropped or equal
                if not k.startswith("_trunk."):
                    assert k in got and torch.equal(got[k], v), k
                elif k in got:
                    assert torch.equal(got[k], v), k
            assert json.loads((t / "enf_out" / "config.json").read_text())["model_type"] == "enformer"
    print("convert_checkpoint self-test: OK")


if __name__ == "__main__":
    main()

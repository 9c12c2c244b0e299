#!/usr/bin/env python3
"""Converts PyTorch checkpoints to the Hugging Face folder layout strand loads (config.json +
model.safetensors, or sharded model-0000i-of-0000n.safetensors with model.safetensors.index.json).

Inputs:
  * a Hugging Face folder with pytorch_model.bin, or sharded pytorch_model-0000i-of-0000n.bin with
    pytorch_model.bin.index.json (how AIDO.RNA is published); config.json and tokenizer files are
    copied along;
  * a single .bin file (then --config gives the config.json to use);
  * a ModelGenerator / Lightning .ckpt: the backbone is found by its prefix (e.g.
    "backbone.encoder." or, under PEFT, "backbone1.encoder.base_model.model."); --prefix picks one
    when the task holds several backbones. LoRA layers are merged into the base weights
    (W += alpha/r * B @ A; --lora-alpha is required since the .ckpt does not say it reliably). A
    save_peft_only checkpoint holds only the adapters: give the base model with --base-dir and they
    are merged into a copy of it. --config (or --base-dir) provides config.json.

Only tensors are read. torch.load runs with weights_only=True; Lightning checkpoints whose
hyper-parameters hold arbitrary Python objects need --unsafe-pickle (runs pickle code: only for
files you trust).

    python tools/convert_checkpoint.py IN OUT_DIR [--config config.json] [--prefix P]
        [--lora-alpha A] [--base-dir DIR] [--max-shard-size-mb N] [--unsafe-pickle]
Needs torch and safetensors.
"""
import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TOKENIZER_FILES = ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"]


def die(msg):
    print(f"convert_checkpoint: error: {msg}", file=sys.stderr)
    sys.exit(2)


def torch_load(path, unsafe):
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure the same way
        if unsafe:
            die(f"cannot read {path}: {e}")
        die(f"cannot read {path} with weights_only=True ({type(e).__name__}: {str(e).splitlines()[0]}); "
            "if you trust the file, pass --unsafe-pickle")


def tensors_only(sd, where):
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[k] = v
        else:
            print(f"convert_checkpoint: skipping non-tensor entry {k!r} in {where}", file=sys.stderr)
    return out


def read_bin_folder(d: Path, unsafe):
    index = d / "pytorch_model.bin.index.json"
    if index.exists():
        wm = json.loads(index.read_text())["weight_map"]
        sd = {}
        for shard in sorted(set(wm.values())):
            sd.update(tensors_only(torch_load(d / shard, unsafe), shard))
        missing = set(wm) - set(sd)
        if missing:
            die(f"{index}: {len(missing)} tensors listed but not found in the shards, e.g. {sorted(missing)[:3]}")
        return sd
    single = d / "pytorch_model.bin"
    if single.exists():
        return tensors_only(torch_load(single, unsafe), single.name)
    die(f"{d} has neither pytorch_model.bin nor pytorch_model.bin.index.json")


def read_base_folder(d: Path):
    if (d / "model.safetensors").exists():
        return load_file(d / "model.safetensors")
    index = d / "model.safetensors.index.json"
    if index.exists():
        sd = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            sd.update(load_file(d / shard))
        return sd
    return read_bin_folder(d, unsafe=False)


LORA = re.compile(r"(.*)\.lora_([AB])\.default\.weight$")


def find_prefixes(keys):
    """Prefixes P such that P + 'embeddings.word_embeddings.weight' (or P + 'encoder.layer.0....lora_A')
    is a key, i.e. where a backbone's own key names begin."""
    out = set()
    for k in keys:
        m = re.match(r"(.*?)(embeddings\.word_embeddings\.weight|encoder\.layer\.\d+\.)", k)
        if m:
            out.add(m.group(1))
    return sorted(out)


def extract_backbone(sd, prefix, lora_alpha, base):
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not sub:
        die(f"no tensor starts with prefix {prefix!r}")
    lora = {}
    plain = {}
    for k, v in sub.items():
        m = LORA.match(k)
        if m:
            lora.setdefault(m.group(1), {})[m.group(2)] = v
        else:
            plain[k.replace(".base_layer.", ".")] = v
    if base is not None:
        merged = dict(base)
        for k in plain:
            if k in merged and merged[k].shape != plain[k].shape:
                die(f"{k}: checkpoint {tuple(plain[k].shape)} vs base model {tuple(merged[k].shape)}")
        merged.update(plain)
        plain = merged
    if lora:
        if lora_alpha is None:
            die(f"the checkpoint has LoRA adapters on {len(lora)} layers (e.g. {next(iter(lora))}); "
                "pass --lora-alpha (the recipes use 32 with r 16) to merge them")
        for mod, ab in lora.items():
            if set(ab) != {"A", "B"}:
                die(f"{mod}: LoRA A or B missing")
            w = mod + ".weight"
            if w not in plain:
                die(f"{mod}: no base weight {w} to merge the adapter into (give the base model with --base-dir)")
            r = ab["A"].shape[0]
            plain[w] = (plain[w].float() + (lora_alpha / r) * (ab["B"].float() @ ab["A"].float())).to(plain[w].dtype)
        print(f"convert_checkpoint: merged LoRA adapters of {len(lora)} layers (alpha {lora_alpha}, r {r})")
    return plain


def write_folder(sd, out: Path, max_shard_mb):
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    # Tied weights share storage; safetensors refuses aliases, so give each its own copy.
    seen = {}
    for k, v in sd.items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if ptr in seen:
            sd[k] = v.clone()
        seen[ptr] = k
    limit = max_shard_mb * 2**20
    shards, cur, size = [], {}, 0
    for k in sorted(sd):
        n = sd[k].numel() * sd[k].element_size()
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = sd[k]
        size += n
    shards.append(cur)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    names, wm, total = [], {}, 0
    for i, s in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, str(out / name), metadata=meta)
        names.append(name)
        for k, v in s.items():
            wm[k] = name
            total += v.numel() * v.element_size()
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": wm}, indent=2) + "\n")
    return names + ["model.safetensors.index.json"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="HF folder with pytorch_model*.bin, a .bin file, or a .ckpt")
    ap.add_argument("output", type=Path, help="output folder (created)")
    ap.add_argument("--config", type=Path, help="config.json to write (default: the input folder's)")
    ap.add_argument("--prefix", help="key prefix of the backbone inside a .ckpt (default: detected)")
    ap.add_argument("--lora-alpha", type=float, help="LoRA alpha, to merge adapters found in a .ckpt")
    ap.add_argument("--base-dir", type=Path, help="base model folder for adapter-only (save_peft_only) checkpoints")
    ap.add_argument("--max-shard-size-mb", type=int, default=2048, help="shard size limit (default 2048)")
    ap.add_argument("--unsafe-pickle", action="store_true", help="allow full pickle loading (trusted files only)")
    a = ap.parse_args()

    src = a.input
    if not src.exists():
        die(f"input {src} does not exist")
    config = a.config
    extra_dir = None
    if src.is_dir():
        sd = read_bin_folder(src, a.unsafe_pickle)
        config = config or src / "config.json"
        extra_dir = src
    elif src.suffix == ".ckpt":
        ck = torch_load(src, a.unsafe_pickle)
        sd = tensors_only(ck.get("state_dict", ck) if isinstance(ck, dict) else {}, src.name)
        if not sd:
            die(f"{src} holds no state_dict tensors")
        prefixes = find_prefixes(sd.keys())
        if a.prefix is None:
            if len(prefixes) != 1:
                die(f"{src} holds {len(prefixes)} backbone candidates {prefixes}; choose one with --prefix")
            a.prefix = prefixes[0]
        base = None
        if a.base_dir is not None:
            base = read_base_folder(a.base_dir)
            for p in ("esm.", "bert."):  # the base folder may be a *ForMaskedLM save
                if any(k.startswith(p) for k in base):
                    base = {k[len(p):]: v for k, v in base.items() if k.startswith(p)}
            config = config or a.base_dir / "config.json"
            extra_dir = a.base_dir
        sd = extract_backbone(sd, a.prefix, a.lora_alpha, base)
        print(f"convert_checkpoint: backbone prefix {a.prefix!r}: {len(sd)} tensors")
    else:
        sd = tensors_only(torch_load(src, a.unsafe_pickle), src.name)
        if "state_dict" in sd or (len(sd) == 0):
            die(f"{src} is not a plain state dict")
        if src.parent.joinpath("config.json").exists():
            config = config or src.parent / "config.json"
            extra_dir = src.parent
    if config is None or not Path(config).exists():
        die("no config.json: pass --config (the base model's config.json)")
    if not sd:
        die("no tensors to write")
    files = write_folder(sd, a.output, a.max_shard_size_mb)
    shutil.copyfile(config, a.output / "config.json")
    if extra_dir is not None:
        for f in TOKENIZER_FILES:
            if (extra_dir / f).exists() and not (a.output / f).exists():
                shutil.copyfile(extra_dir / f, a.output / f)
    print(f"convert_checkpoint: wrote {a.output} ({', '.join(files)}, config.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

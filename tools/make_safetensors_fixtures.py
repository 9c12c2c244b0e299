#!/usr/bin/env python3
"""Writes the safetensors golden fixtures read by tests/tensor/safetensors_test.cpp.

The files are produced by the reference `safetensors` Python package (with torch), so the C++
reader is tested against the real format, not against our own writer. Needs a Python with torch
and safetensors; nothing here runs at build or test time. From the repository root:

    /path/to/python tools/make_safetensors_fixtures.py            # (re)writes the fixtures
    /path/to/python tools/make_safetensors_fixtures.py --verify F  # checks a file written by strand

Output, in tests/fixtures/safetensors/ (a few KB in all):
  all_dtypes.safetensors     every dtype strand reads (F32 F64 F16 BF16 I64 I32 U8 BOOL), a 0-d
                             and an empty tensor, and __metadata__.
  sharded/model-0000i-of-00003.safetensors + sharded/model.safetensors.index.json
                             a Hugging Face style sharded checkpoint (greedy split in name order,
                             index {"metadata": {"total_size": N}, "weight_map": {...}}).
  expected.json              for each file and tensor: dtype, shape, the values (flattened, as
                             numbers) and the raw little-endian bytes (hex), so the C++ test can
                             compare bit-exactly; plus each file's metadata.

--verify F loads F (written by the C++ test's round trip of all_dtypes.safetensors when the
environment variable STRAND_SAFETENSORS_EXPORT=F is set) with the Python package and checks that
it holds exactly the tensors and metadata of all_dtypes.safetensors: proof that the Python
package reads what strand writes.
"""
import argparse
import json
import os
import struct
import sys

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "safetensors")

DTYPE_NAMES = {
    torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
}


def all_dtypes():
    g = torch.Generator().manual_seed(0)
    # Edge values: signed zero, subnormals and the largest finite numbers of the small types.
    f16 = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08, 0.1],
                       dtype=torch.float16)
    bf16 = torch.tensor([[1.0, -1.0, 3.140625], [1e-30, -3.3895313892515355e38, 0.5]], dtype=torch.bfloat16)
    # Values of a transpose: save_file only takes contiguous tensors, so its contiguous copy.
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t().contiguous()
    return {
        "f32": torch.randn(2, 3, generator=g),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "f16": f16,
        "bf16": bf16,
        "i64": torch.tensor([0, -1, 2**62, -(2**63), 2**63 - 1], dtype=torch.int64),
        "i32": torch.tensor([[7, -7], [2**31 - 1, -(2**31)]], dtype=torch.int32),
        "u8": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, False, True, True]),
        "scalar": torch.tensor(-0.75, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
        "transposed": t,
        "layer.0.weight": torch.randn(4, 2, generator=g).to(torch.bfloat16),
    }


ALL_DTYPES_METADATA = {"format": "pt", "note": "written by tools/make_safetensors_fixtures.py"}


def sharded_tensors():
    g = torch.Generator().manual_seed(1)
    return {
        "embed.weight": torch.randn(6, 4, generator=g),
        "layers.0.bias": torch.randn(4, generator=g).to(torch.float16),
        "layers.0.weight": torch.randn(4, 4, generator=g),
        "layers.1.weight": torch.randn(4, 4, generator=g, dtype=torch.float64),
        "head.index": torch.arange(5, dtype=torch.int64),
    }


def save_sharded(tensors, directory, max_shard_bytes):
    """Greedy split in name order, as transformers' shard_checkpoint / save_pretrained do."""
    shards, current, size = [], {}, 0
    for name in sorted(tensors):
        n = tensors[name].numel() * tensors[name].element_size()
        if current and size + n > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensors[name]
        size += n
    shards.append(current)
    os.makedirs(directory, exist_ok=True)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(directory, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return len(shards)


def describe(tensors):
    out = {}
    for name, t in sorted(tensors.items()):
        flat = t.reshape(-1)
        if t.dtype in (torch.float16, torch.bfloat16, torch.float32):
            values = [float(v) for v in flat.float().tolist()]
        elif t.dtype == torch.float64:
            values = [float(v) for v in flat.tolist()]
        elif t.dtype == torch.bool:
            values = [bool(v) for v in flat.tolist()]
        else:
            values = [int(v) for v in flat.tolist()]
        raw = flat.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "values": values, "hex": raw.hex()}
    return out


def save_deterministic(tensors, path, metadata):
    """save_file, repeated until the metadata keys come out sorted: the package keeps metadata in
    a randomly ordered hash map, and reruns of this script should write identical bytes."""
    for _ in range(1000):
        save_file(tensors, path, metadata=metadata)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n), object_pairs_hook=lambda kv: kv)
        keys = [k for k, _ in dict(header)["__metadata__"]]
        if keys == sorted(keys):
            return
    raise RuntimeError("metadata never came out sorted")


def read_metadata(path):
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


def write_fixtures():
    os.makedirs(OUT, exist_ok=True)
    expected = {}

    tensors = all_dtypes()
    path = os.path.join(OUT, "all_dtypes.safetensors")
    save_deterministic(tensors, path, ALL_DTYPES_METADATA)
    # Describe what the package reads back, not what we meant to write: the two must agree.
    back = load_file(path)
    assert describe(back) == describe(tensors)
    expected["all_dtypes.safetensors"] = {"metadata": read_metadata(path), "tensors": describe(back)}

    sharded = sharded_tensors()
    sdir = os.path.join(OUT, "sharded")
    for f in os.listdir(sdir) if os.path.isdir(sdir) else []:
        os.remove(os.path.join(sdir, f))
    n = save_sharded(sharded, sdir, max_shard_bytes=120)
    assert n == 3, n
    expected["sharded/model.safetensors.index.json"] = {"metadata": {"format": "pt"}, "tensors": describe(sharded)}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


def verify(path):
    got = load_file(path)
    want = all_dtypes()
    assert describe(got) == describe(want), "tensors differ from all_dtypes"
    meta = read_metadata(path)
    assert meta == ALL_DTYPES_METADATA, meta
    print(f"{path}: {len(got)} tensors and metadata match all_dtypes.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verify", metavar="FILE", help="check a file written by strand instead of writing fixtures")
    args = ap.parse_args()
    if args.verify:
        verify(args.verify)
    else:
        write_fixtures()
    return 0


if __name__ == "__main__":
    sys.exit(main())

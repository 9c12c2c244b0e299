#!/usr/bin/env python3
"""CPU comparison of strand against PyTorch: whole models (forward, forward+backward, one training
step) and single kernels, same shapes, same thread count, same timing and memory method.

    refenv/bin/python tools/compare_cpu.py [--threads 2] [--cases a,b,...] [--strand build/bench/compare_cpu]
                                           [--reps N] [--warmup W] [--out-dir bench/results] [--tag NAME]
    refenv/bin/python tools/compare_cpu.py --list

Every case runs in a fresh subprocess per side, with OMP/OPENBLAS/MKL_NUM_THREADS=T:
  PyTorch: this script's internal mode  --torch-case NAME --threads T --reps R --warmup W
  strand:  <strand binary>              --case NAME --threads T --reps R --warmup W
Each prints one JSON line (the last one starting with '{'):
  {"case": NAME, "times_s": [...], "peak_rss_delta_bytes": int}   (strand may add keys)
Method, identical on both sides: build model and inputs (not timed); malloc_trim(0); write "5" to
/proc/self/clear_refs (resets VmHWM); base = VmRSS; W warmup iterations; R iterations each timed
with a monotonic clock; peak_rss_delta_bytes = (VmHWM - base) * 1024. The table shows medians.
Targets: model rows speed (torch/strand) >= 1.0 and strand peak <= PyTorch peak; kernel rows
speed >= 0.7. Writes <out-dir>/cpu_compare_<tag>.md and .json (tag defaults to threads<T>).

Environments (outside the repository), as for tools/make_golden.py:

    python3 -m venv refenv && refenv/bin/pip install torch transformers enformer-pytorch safetensors
    refenv/bin/pip install --no-deps modelgenerator
    refenv/bin/pip install --target tf438 --no-deps transformers==4.38.0 tokenizers==0.15.2 huggingface-hub==0.20.3

ModelGenerator's RNABertModel needs transformers 4.38, so the aido_* and tiny_step cases run with
<tf438> first on PYTHONPATH (--tf438, env STRAND_TF438, default /work/tf438). The PyTorch side runs
with --python (env STRAND_REFENV_PYTHON, default the interpreter running this script).
"""
import argparse
import ctypes
import datetime
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------- case builders
# Each builder runs in the PyTorch subprocess and returns a zero-argument callable: one iteration.

def _torch():
    import torch
    torch.manual_seed(0)
    return torch, torch.Generator().manual_seed(1)


def _esm(hidden, layers, heads, inter):
    from transformers import EsmConfig, EsmModel
    cfg = EsmConfig(vocab_size=33, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=inter, position_embedding_type="rotary", max_position_embeddings=1026,
                    layer_norm_eps=1e-5, emb_layer_norm_before=False, token_dropout=True, pad_token_id=1,
                    mask_token_id=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return EsmModel(cfg, add_pooling_layer=False)


def _rnabert(hidden, layers, heads, inter):
    import transformers
    from modelgenerator.huggingface_models.rnabert.configuration_rnabert import RNABertConfig
    from modelgenerator.huggingface_models.rnabert.modeling_rnabert import RNABertModel
    assert transformers.__version__.startswith("4.38"), f"RNABert needs transformers 4.38 (--tf438), got {transformers.__version__}"
    return RNABertModel(RNABertConfig(vocab_size=16, hidden_size=hidden, num_hidden_layers=layers,
                                      num_attention_heads=heads, intermediate_size=inter, hidden_act="swiglu",
                                      normalization_type="LayerNorm", layer_norm_eps=1e-5, rotary_percent=1.0,
                                      max_position_embeddings=1024, add_linear_bias=True, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0))


def _ids(torch, gen, batch, length, lo, hi, first, last):
    """Random ids in [lo, hi) with the special ids first / last at the ends."""
    ids = torch.randint(lo, hi, (batch, length), generator=gen)
    ids[:, 0], ids[:, -1] = first, last
    return ids


def _one_hot_dna(torch, gen, batch, length):
    return torch.nn.functional.one_hot(torch.randint(0, 4, (batch, length), generator=gen), 4).float()


def _fwd(torch, model, *args, **kw):
    """eval, no_grad forward returning the embeddings."""
    model.eval()
    return torch.no_grad()(lambda: model(*args, **kw))


def _fwdbwd(model, out, train_all=True):
    """train mode (all params trainable unless train_all is False); forward, mean(h^2).backward(),
    zero_grad(set_to_none=True)."""
    model.train()
    for p in model.parameters() if train_all else ():
        p.requires_grad_(True)

    def step():
        out().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
    return step


def esm_fwd():
    torch, gen = _torch()
    m, ids = _esm(320, 6, 20, 1280), _ids(torch, gen, 16, 256, 4, 24, 0, 2)
    f = _fwd(torch, m, input_ids=ids, attention_mask=torch.ones_like(ids))
    return lambda: f().last_hidden_state


def esm_fwdbwd():
    torch, gen = _torch()
    m, ids = _esm(320, 6, 20, 1280), _ids(torch, gen, 16, 256, 4, 24, 0, 2)
    mask = torch.ones_like(ids)
    return _fwdbwd(m, lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state)


AIDO = (1280, 4, 20, 3392)  # hidden, layers, heads, SwiGLU intermediate


def aido_fwd():
    torch, gen = _torch()
    m, ids = _rnabert(*AIDO), torch.randint(5, 9, (4, 512), generator=gen)
    f = _fwd(torch, m, input_ids=ids, attention_mask=torch.ones_like(ids))
    return lambda: f().last_hidden_state


def aido_lora_fwdbwd():
    torch, gen = _torch()
    sys.path.insert(0, str(REPO / "tools" / "golden"))
    from common import inject_lora
    m, ids = _rnabert(*AIDO), torch.randint(5, 9, (4, 512), generator=gen)
    inject_lora(m, ["query", "value"], 16, 32.0, gen)  # freezes the base; A/B trainable
    mask = torch.ones_like(ids)
    return _fwdbwd(m, lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state, train_all=False)


def _enformer():
    from enformer_pytorch import Enformer
    return Enformer.from_hparams(dim=384, depth=4, heads=8, num_downsamples=7, target_length=-1,
                                 output_heads=dict(human=5313, mouse=1643))


def enformer_fwd():
    torch, gen = _torch()
    m, x = _enformer(), _one_hot_dna(torch, gen, 1, 32768)
    return _fwd(torch, m, x, return_only_embeddings=True)


def enformer_fwdbwd():
    torch, gen = _torch()
    m, x = _enformer(), _one_hot_dna(torch, gen, 1, 32768)
    return _fwdbwd(m, lambda: m(x, return_only_embeddings=True))


def tiny_step():
    """configs/tiny_cpu.toml's model, composed as ModelGenerator's MMSequenceRegression."""
    torch, gen = _torch()
    from enformer_pytorch import Enformer, EnformerConfig
    from modelgenerator.adapters.adapters import MLPAdapter
    from modelgenerator.adapters.fusion import ConcatFusion, MMFusionTokenAdapter
    dna = Enformer(EnformerConfig(dim=48, depth=1, heads=2, attn_dim_key=8, num_downsamples=3, dim_divisible_by=8,
                                  target_length=48, dropout_rate=0.1, attn_dropout=0.05, pos_dropout=0.01,
                                  output_heads=dict(human=5313, mouse=1643)))
    rna, prot = _rnabert(32, 2, 4, 64), _esm(32, 2, 4, 64)
    head = MMFusionTokenAdapter(30, 2 * 48, 32, 32, fusion=functools.partial(ConcatFusion, project_size=32),
                                adapter=functools.partial(MLPAdapter, hidden_sizes=[32], dropout=0.1,
                                                          dropout_in_middle=False))
    task = torch.nn.ModuleList([dna, rna, prot, head]).train()  # parameters() dedups Enformer's _trunk aliases
    x = _one_hot_dna(torch, gen, 8, 512)
    rna_ids = _ids(torch, gen, 8, 256, 5, 9, 2, 3)  # RNABertTokenizer v2: [CLS]=2 ... [SEP]=3
    prot_ids = _ids(torch, gen, 8, 128, 4, 24, 0, 2)  # ESM: <cls>=0 ... <eos>=2
    m0, m1, m2 = torch.ones(8, 48), torch.ones_like(rna_ids), torch.ones_like(prot_ids)  # all real tokens
    labels = torch.randn(8, 30, generator=gen)
    params = list(task.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        h0 = dna(x, return_only_embeddings=True)
        h1 = rna(input_ids=rna_ids, attention_mask=m1).last_hidden_state
        h2 = prot(input_ids=prot_ids, attention_mask=m2).last_hidden_state
        preds = head(h0, m0, h1, m1, h2, m2)
        torch.nn.functional.mse_loss(preds, labels).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return step


def _kernel(fn, *shapes, grad=False):
    """Kernel builder: random normal inputs of the given shapes; with grad, out.pow(2).mean() is
    backpropagated and the input gradients are set to None after each iteration."""
    def build():
        torch, gen = _torch()
        xs = [torch.randn(s, generator=gen).requires_grad_(grad) for s in shapes]
        F = torch.nn.functional
        if not grad:
            return torch.no_grad()(lambda: fn(torch, F, *xs))

        def step():
            fn(torch, F, *xs).pow(2).mean().backward()
            for t in xs:
                t.grad = None
        return step
    return build


def _conv(torch, F, x, w, b):
    return F.conv1d(x, w, b, padding=2)


def _ln(torch, F, x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b, 1e-5)


def _sdpa(torch, F, q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


CONV = ((1, 192, 16384), (192, 192, 5), (192,))

# name -> (kind, what, default reps, builder, needs transformers 4.38). Kernel rows take milliseconds and
# their medians are noisy on a shared 2-core machine, so they default to 30 repetitions.
CASES = {
    "esm_fwd": ("model", "ESM-2 8M-shape (6L, 320) forward, [16, 256]", 5, esm_fwd, False),
    "esm_fwdbwd": ("model", "ESM-2 8M-shape forward+backward, all params, [16, 256]", 5, esm_fwdbwd, False),
    "aido_fwd": ("model", "AIDO.RNA (4L, 1280, SwiGLU 3392) forward, [4, 512]", 5, aido_fwd, True),
    "aido_lora_fwdbwd": ("model", "AIDO.RNA 4L + LoRA r16 q/v forward+backward, [4, 512]", 5, aido_lora_fwdbwd, True),
    "enformer_fwd": ("model", "Enformer (dim 384, depth 4) embeddings forward, 32 kb", 3, enformer_fwd, False),
    "enformer_fwdbwd": ("model", "Enformer (dim 384, depth 4) forward+backward, 32 kb", 3, enformer_fwdbwd, False),
    "tiny_step": ("model", "tiny_cpu.toml DNA+RNA+protein AdamW training step, batch 8", 5, tiny_step, True),
    "gemm_esm_ffn": ("kernel", "linear [4096, 320] x [1280, 320]^T", 30,
                     _kernel(lambda torch, F, x, w: F.linear(x, w), (4096, 320), (1280, 320)), False),
    "gemm_aido_ffn": ("kernel", "linear [2048, 1280] x [6784, 1280]^T (SwiGLU gate+up)", 30,
                      _kernel(lambda torch, F, x, w: F.linear(x, w), (2048, 1280), (6784, 1280)), False),
    "gemm_1024": ("kernel", "mm [1024, 1024] x [1024, 1024]", 30,
                  _kernel(lambda torch, F, a, b: torch.mm(a, b), (1024, 1024), (1024, 1024)), False),
    "conv1d_enformer": ("kernel", "conv1d [1, 192, 16384] * [192, 192, 5] + bias, pad 2", 30,
                        _kernel(_conv, *CONV), False),
    "conv1d_enformer_fwdbwd": ("kernel", "conv1d as above, forward+backward (x, w, b grads)", 30,
                               _kernel(_conv, *CONV, grad=True), False),
    "layer_norm_esm": ("kernel", "layer_norm [4096, 320]", 30, _kernel(_ln, (4096, 320), (320,), (320,)), False),
    "layer_norm_aido": ("kernel", "layer_norm [2048, 1280]", 30, _kernel(_ln, (2048, 1280), (1280,), (1280,)), False),
    "softmax_esm": ("kernel", "softmax [16, 20, 256, 256] over the last dim", 30,
                    _kernel(lambda torch, F, x: torch.softmax(x, dim=-1), (16, 20, 256, 256)), False),
    "attention_esm": ("kernel", "SDPA q,k,v [16, 20, 256, 16], no mask", 30,
                      _kernel(_sdpa, *[(16, 20, 256, 16)] * 3), False),
    "attention_esm_fwdbwd": ("kernel", "SDPA [16, 20, 256, 16] forward+backward (q, k, v grads)", 30,
                             _kernel(_sdpa, *[(16, 20, 256, 16)] * 3, grad=True), False),
    "attention_aido": ("kernel", "SDPA q,k,v [4, 20, 512, 64], no mask", 30,
                       _kernel(_sdpa, *[(4, 20, 512, 64)] * 3), False),
}


# ----------------------------------------------------------------------------- measurement (subprocess)

def _status_kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def torch_case(name, threads, reps, warmup):
    import torch
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    step = CASES[name][3]()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = _status_kb("VmHWM")
    print(json.dumps({"case": name, "times_s": times, "peak_rss_delta_bytes": (peak - base) * 1024}), flush=True)


# ----------------------------------------------------------------------------- driver

def run_side(cmd, env, timeout):
    """Runs one side of one case; returns its JSON dict or {"error": text}."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " / ".join(tail)}
    try:
        res = json.loads(lines[-1])
        res["median_s"] = statistics.median(res["times_s"])
        return res
    except (ValueError, KeyError, statistics.StatisticsError) as e:
        return {"error": f"bad output line {lines[-1]!r}: {e}"}


def versions(python, env):
    code = ("import json, importlib.metadata as m, torch, transformers; print(json.dumps({'torch': torch.__version__,"
            " 'transformers': transformers.__version__, 'enformer-pytorch': m.version('enformer-pytorch')}))")
    try:
        return json.loads(subprocess.run([python, "-c", code], env=env, capture_output=True, text=True,
                                         check=True).stdout.strip().splitlines()[-1])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError) as e:
        return {"error": str(e)}


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def git_head():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def row_of(name, torch_res, strand_res):
    kind, what = CASES[name][:2]
    row = {"case": name, "kind": kind, "what": what, "torch": torch_res, "strand": strand_res}
    if "error" in torch_res or "error" in strand_res:
        row["speed"], row["meets_target"] = None, None
        return row
    row["speed"] = torch_res["median_s"] / strand_res["median_s"]
    ok = row["speed"] >= (1.0 if kind == "model" else 0.7)
    if kind == "model":
        ok = ok and strand_res["peak_rss_delta_bytes"] <= torch_res["peak_rss_delta_bytes"]
    row["meets_target"] = ok
    return row


def markdown(header, rows):
    def cell(res, key):
        if "error" in res:
            return "error: " + res["error"].replace("|", "/").replace("\n", " ")[:160]
        return f"{res['median_s']:.4f}" if key == "median_s" else f"{res['peak_rss_delta_bytes'] / MIB:.1f}"

    def peak(res):
        return "" if "error" in res else cell(res, "peak")

    out = [f"# strand vs PyTorch on CPU ({header['threads']} threads)", ""]
    out += [f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in header.items()]
    out += ["", "Speed = PyTorch median / strand median (>= 1 means strand is faster). Peaks are VmHWM minus "
            "VmRSS before the first iteration. Targets: model rows speed >= 1.0 and strand peak <= PyTorch "
            "peak; kernel rows speed >= 0.7.", "",
            "| case | what | PyTorch s (median) | strand s (median) | speed | PyTorch peak MiB | strand peak MiB "
            "| meets target |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = "" if r["speed"] is None else f"{r['speed']:.2f}"
        meets = "n/a" if r["meets_target"] is None else ("yes" if r["meets_target"] else "no")
        out.append(f"| {r['case']} | {r['what']} | {cell(r['torch'], 'median_s')} | {cell(r['strand'], 'median_s')} "
                   f"| {speed} | {peak(r['torch'])} | {peak(r['strand'])} | {meets} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--strand", default=str(REPO / "build" / "bench" / "compare_cpu"), help="strand's binary")
    ap.add_argument("--reps", type=int, default=None, help="timed iterations (default: per case)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    ap.add_argument("--tag", default=None, help="output name suffix (default: threads<T>)")
    ap.add_argument("--python", default=os.environ.get("STRAND_REFENV_PYTHON", sys.executable),
                    help="interpreter for the PyTorch side (env STRAND_REFENV_PYTHON)")
    ap.add_argument("--tf438", default=os.environ.get("STRAND_TF438", "/work/tf438"),
                    help="folder holding transformers==4.38.0 (env STRAND_TF438)")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per side per case")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--torch-case", default=None, help=argparse.SUPPRESS)  # internal: the PyTorch side
    args = ap.parse_args()

    if args.list:
        for name, (kind, what, reps, _, _) in CASES.items():
            print(f"{name:24s} {kind:7s} reps {reps}  {what}")
        return 0
    names = [c for c in args.cases.split(",") if c] or list(CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        print(f"compare_cpu: unknown case(s) {unknown}; see --list", file=sys.stderr)
        return 2
    if args.torch_case:
        torch_case(args.torch_case, args.threads, args.reps or CASES[args.torch_case][2], args.warmup)
        return 0

    base_env = dict(os.environ, **{v: str(args.threads) for v in
                                   ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    tf_env = dict(base_env, PYTHONPATH=os.pathsep.join(p for p in (args.tf438, base_env.get("PYTHONPATH")) if p))
    rows = []
    for name in names:
        reps = args.reps or CASES[name][2]
        common = ["--threads", str(args.threads), "--reps", str(reps), "--warmup", str(args.warmup)]
        env = tf_env if CASES[name][4] else base_env
        print(f"== {name} (reps {reps}, warmup {args.warmup})", file=sys.stderr, flush=True)
        t = run_side([args.python, str(Path(__file__).resolve()), "--torch-case", name] + common, env, args.timeout)
        s = run_side([args.strand, "--case", name] + common, base_env, args.timeout)
        rows.append(row_of(name, t, s))

    v_main, v_tf = versions(args.python, base_env), versions(args.python, tf_env)
    header = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
              "threads": args.threads, "torch": v_main.get("torch", v_main.get("error")),
              "transformers": f"{v_main.get('transformers', '?')} (ESM, Enformer cases); "
                              f"{v_tf.get('transformers', v_tf.get('error'))} (aido_*, tiny_step)",
              "enformer-pytorch": v_main.get("enformer-pytorch", "?"), "strand": git_head(),
              "command": shlex.join([sys.executable] + sys.argv)}
    md = markdown(header, rows)
    print(md)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"cpu_compare_{args.tag or f'threads{args.threads}'}"
    stem.with_suffix(".md").write_text(md)
    stem.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1) + "\n")
    print(f"wrote {stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

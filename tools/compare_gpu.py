#!/usr/bin/env python3
"""strand's CUDA kernels against PyTorch's on the same GPU, at the same shapes, in fp32 (TF32 off on
both sides: PyTorch's matmul default, and cuDNN's TF32 switched off for the convolutions; the
benchmarks whose last argument is 1 turn TF32 on, on both sides).

strand's side is bench/cuda_bench (Google Benchmark, CUDA-event timing); this script runs it, then
times the PyTorch equivalent of every benchmark it reported (torch.cuda events around each call,
warm-up first, median of --reps), and writes a table of both and their ratio
(ratio = PyTorch time / strand time: above 1 means strand is faster).

  python3 tools/compare_gpu.py --strand build-gpu/bench/cuda_bench --out results.json --md results.md

With --models, whole-model steps too: strand's `compare_cpu --device cuda --case NAME` and, in a
subprocess each, PyTorch's same model (transformers' EsmModel; ModelGenerator's RNABert with
PEFT-style LoRA, enformer-pytorch and ModelGenerator's ConcatFusion adapter from --ref-site), timed
with synchronisation (median of --model-reps after a warm-up) with torch.cuda.max_memory_allocated.

PyTorch equivalents: F.layer_norm and its autograd backward (input, weight and bias gradients, as
strand's), torch.softmax / torch._softmax_backward_data, F.linear, F.scaled_dot_product_attention
(PyTorch picks its fp32 kernel) forward and forward+backward, F.conv1d (cuDNN; channels-first,
PyTorch's layout) forward and forward+backward, F.batch_norm in training mode, and
torch.optim.AdamW(fused=True).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(torch, fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def torch_case(torch, F, name, args):
    """(fn, counter name, work per call) for one strand benchmark, or None if there is no equivalent."""
    dev = "cuda"
    r = lambda *s, grad=False: torch.randn(*s, device=dev, requires_grad=grad)
    if name in ("BM_LayerNorm", "BM_LayerNormBackward"):
        rows, n = args
        fwd = name == "BM_LayerNorm"
        x, w, b = r(rows, n, grad=not fwd), r(n, grad=not fwd), r(n, grad=not fwd)
        if fwd:
            return (lambda: F.layer_norm(x, (n,), w, b, 1e-5)), "bytes/s", 2.0 * rows * n * 4
        y, g = F.layer_norm(x, (n,), w, b, 1e-5), r(rows, n)
        return (lambda: torch.autograd.grad(y, (x, w, b), g, retain_graph=True)), "bytes/s", 3.0 * rows * n * 4
    if name == "BM_Softmax":
        rows, n = args
        x = r(rows, n)
        return (lambda: torch.softmax(x, -1)), "bytes/s", 2.0 * rows * n * 4
    if name == "BM_SoftmaxBackward":
        rows, n = args
        y, g = torch.softmax(r(rows, n), -1), r(rows, n)
        return (lambda: torch._softmax_backward_data(g, y, -1, torch.float32)), "bytes/s", 3.0 * rows * n * 4
    if name == "BM_Linear":
        M, N, K, mode = args
        x, w = r(M, K), r(N, K)
        b = r(N) if mode >= 3 else None  # with a bias: PyTorch's addmm takes cuBLASLt's epilogue
        if mode in (2, 4, 5):  # bf16 operands and result
            x, w = x.bfloat16(), w.bfloat16()
            b = b.bfloat16() if b is not None else None
        return (lambda: F.linear(x, w, b)), "FLOP/s", 2.0 * M * N * K
    if name == "BM_Attention":
        B, H, T, D, bwd, mode = args
        q, k, v, g = (r(B, H, T, D) for _ in range(4))
        if mode == 2:  # bf16 operands: SDPA takes its flash kernel, as strand its tensor-core kernels
            q, k, v, g = (t.bfloat16() for t in (q, k, v, g))
        for t in (q, k, v):
            t.requires_grad_(bool(bwd))
        fwd_flop = 4.0 * B * H * T * T * D
        if not bwd:
            def f():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v)
            return f, "FLOP/s", fwd_flop

        def fb():
            F.scaled_dot_product_attention(q, k, v).backward(g)
            q.grad = k.grad = v.grad = None
        return fb, "FLOP/s", 3.5 * fwd_flop
    if name == "BM_RelAttention":
        # enformer-pytorch's composed attention on the same operands: einsum logits, the relative
        # shift, softmax, einsum with v
        B, H, T, Dk, Dv, bwd = args
        qc, qr, k = (r(B, H, T, Dk, grad=bool(bwd)) for _ in range(3))
        rk, v, g = r(H, 2 * T - 1, Dk, grad=bool(bwd)), r(B, H, T, Dv, grad=bool(bwd)), r(B, H, T, Dv)

        def composed():
            content = torch.einsum("bhid,bhjd->bhij", qc, k)
            rel = torch.einsum("bhid,hjd->bhij", qr, rk)  # [B, H, T, 2T-1], column m <-> distance m - (T-1)
            rel = torch.cat([torch.zeros_like(rel[..., :1]), rel], -1).reshape(B, H, 2 * T, T)[:, :, 1:]
            rel = rel.reshape(B, H, T, 2 * T - 1)[..., :T]  # enformer-pytorch's relative_shift
            return torch.einsum("bhij,bhjd->bhid", (content + rel).softmax(-1), v)
        fwd_flop = 2.0 * B * H * T * T * (2 * Dk + Dv)
        if not bwd:
            def f():
                with torch.no_grad():
                    composed()
            return f, "FLOP/s", fwd_flop

        def fb():
            composed().backward(g)
            for t in (qc, qr, k, rk, v):
                t.grad = None
        return fb, "FLOP/s", 3.5 * fwd_flop
    if name == "BM_Conv1d":
        B, L, Cin, Cout, K, bwd, mode = args
        half = mode % 3 == 2  # bf16 operands and result (modes 3-5: strand through cuDNN, as PyTorch)
        rb = lambda *s, grad=False: (r(*s).bfloat16() if half else r(*s)).requires_grad_(grad)  # noqa: E731
        x, w, b = rb(B, Cin, L, grad=bool(bwd)), rb(Cout, Cin, K, grad=bool(bwd)), rb(Cout, grad=bool(bwd))
        g = rb(B, Cout, L)
        flop = 2.0 * B * L * Cout * Cin * K
        if not bwd:
            def f():
                with torch.no_grad():
                    F.conv1d(x, w, b, padding=K // 2)
            return f, "FLOP/s", flop

        def fb():
            F.conv1d(x, w, b, padding=K // 2).backward(g)
            x.grad = w.grad = b.grad = None
        return fb, "FLOP/s", 3 * flop
    if name == "BM_BatchNormTrain":
        rows, C = args
        x, w, b = r(rows, C), r(C), r(C)
        return (lambda: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5)), "bytes/s", 2.0 * rows * C * 4
    if name == "BM_AdamW":
        (n,) = args
        p = torch.nn.Parameter(r(n))
        p.grad = r(n)
        opt = torch.optim.AdamW([p], lr=1e-4, weight_decay=0.01, fused=True)
        return opt.step, "bytes/s", 7.0 * n * 4
    return None


MODEL_CASES = ["esm150m_fwdbwd", "aido1b6_lora_fwdbwd", "enformer_official_fwdbwd", "dna_rna_concat_step"]
# The cases whose reference packages are ModelGenerator (RNABert, under transformers 4.38) and
# enformer-pytorch: they run with --ref-site first on PYTHONPATH.
NEEDS_REF_SITE = {"aido1b6_lora_fwdbwd", "enformer_official_fwdbwd", "dna_rna_concat_step"}


class _LoRALinear:
    """PEFT's LoRA on a Linear: base(x) + B(A(dropout(x))) * alpha / r, base frozen (built lazily so
    that torch is imported only in the subprocess)."""

    @staticmethod
    def wrap(torch, model, targets, r, alpha, dropout, gen):
        class LoRALinear(torch.nn.Module):
            def __init__(self, base):
                super().__init__()
                self.base, self.scale, self.drop = base, alpha / r, torch.nn.Dropout(dropout)
                self.A = torch.nn.Linear(base.in_features, r, bias=False)
                self.B = torch.nn.Linear(r, base.out_features, bias=False)
                with torch.no_grad():  # random, non-zero: both gradients carry work
                    self.A.weight.copy_(torch.randn(self.A.weight.shape, generator=gen) * 0.02)
                    self.B.weight.copy_(torch.randn(self.B.weight.shape, generator=gen) * 0.02)

            def forward(self, x):
                return self.base(x) + self.B(self.A(self.drop(x))) * self.scale
        for p in model.parameters():
            p.requires_grad_(False)
        for _, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if child_name in targets and isinstance(child, torch.nn.Linear):
                    setattr(module, child_name, LoRALinear(child))


def torch_model_step(torch, name, device, small):
    """One iteration of PyTorch's side of a whole-model case, on `device`, the same shapes and work as
    compare_cpu's case of the same name (small: tiny widths and lengths, to check this code on a CPU)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_cpu import _esm, _ids, _rnabert  # the configurations the CPU comparison uses
    gen = torch.Generator().manual_seed(1)
    L_rna = 64 if small else 1024

    def fwdbwd(m, out):
        def step():
            out().pow(2).mean().backward()
            m.zero_grad(set_to_none=True)
        return step

    def rnabert():
        m = _rnabert(*((64, 2, 4, 96) if small else (2048, 32, 32, 5440)))
        _LoRALinear.wrap(torch, m, ["query", "value"], 32, 64.0, 0.1, gen)
        return m.to(device).train()

    def enformer(target_length):
        from enformer_pytorch import Enformer
        hp = dict(dim=48, depth=1, heads=2, attn_dim_key=8, dim_divisible_by=8) if small else {}
        if small and target_length > 0:
            target_length = 32  # 8192 bp -> 64 bins
        return Enformer.from_hparams(use_checkpointing=True, target_length=target_length,  # official: dim 1536, depth 11
                                     **hp).to(device).train()

    L_dna = 8192 if small else 196608
    if name == "esm150m_fwdbwd":
        m = _esm(*((64, 2, 4, 128) if small else (640, 30, 20, 2560))).to(device).train()
        ids = _ids(torch, gen, 2, L_rna, 4, 24, 0, 2).to(device)
        mask = torch.ones_like(ids)
        return fwdbwd(m, lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state)
    if name == "aido1b6_lora_fwdbwd":
        m, ids = rnabert(), torch.randint(5, 9, (2, L_rna), generator=gen).to(device)
        mask = torch.ones_like(ids)
        return fwdbwd(m, lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state)
    x = torch.nn.functional.one_hot(torch.randint(0, 4, (2, L_dna), generator=gen), 4).float().to(device)
    if name == "enformer_official_fwdbwd":
        m = enformer(-1)  # the whole trunk output, as strand's case
        return fwdbwd(m, lambda: m(x, return_only_embeddings=True))
    if name == "dna_rna_concat_step":  # bench/gpu_dna_rna_concat.toml, composed as MMSequenceRegression
        import functools
        from modelgenerator.adapters.adapters import MLPAdapter
        from modelgenerator.adapters.fusion import ConcatFusion, MMFusionTokenAdapter
        dna, rna = enformer(896), rnabert()  # the official crop, as the config
        dim = 48 if small else 1536
        head = MMFusionTokenAdapter(30, 2 * dim, 64 if small else 2048,
                                    fusion=functools.partial(ConcatFusion, project_size=1024),
                                    adapter=functools.partial(MLPAdapter, hidden_sizes=[1024], dropout=0.1,
                                                              dropout_in_middle=False)).to(device).train()
        ids = _ids(torch, gen, 2, L_rna, 5, 9, 2, 3).to(device)
        m1 = torch.ones_like(ids)
        labels = torch.randn(2, 30, generator=gen).to(device)
        params = [p for mod in (dna, rna, head) for p in mod.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            h0 = dna(x, return_only_embeddings=True)
            m0 = torch.ones(h0.shape[:2], device=device)
            h1 = rna(input_ids=ids, attention_mask=m1).last_hidden_state
            torch.nn.functional.mse_loss(head(h0, m0, h1, m1), labels).backward()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            opt.step()
        return step
    raise ValueError(f"unknown model case {name}")


def stub_enformer_data_imports():
    """enformer_pytorch.data imports polars and pyfaidx; its model code does not use them."""
    import types
    for mod in ("polars", "pyfaidx"):
        try:
            __import__(mod)
        except ImportError:
            stub = types.ModuleType(mod)
            stub.Fasta = object
            sys.modules[mod] = stub


def torch_model_main(a):
    """Subprocess mode: one PyTorch model case, one JSON line {times_s, peak_bytes}."""
    stub_enformer_data_imports()
    import torch
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    # bf16 GEMMs sum split-K partials in f32, as strand's cuBLAS handle is set to
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    dev = torch.device(a.device)
    step = torch_model_step(torch, a.torch_model, dev, a.small)
    if a.bf16_mixed:  # Lightning's precision="bf16-mixed": the step under bf16 autocast
        fp32_step = step

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                fp32_step()
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    step()  # warm-up
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.model_reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    print(json.dumps({"case": a.torch_model, "times_s": times, "peak_bytes": peak}), flush=True)


def run_models(a):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_cpu import run_side  # one subprocess-and-JSON convention for both comparisons

    def run_json(cmd, env=None):
        return run_side(cmd, env if env is not None else dict(os.environ), 1200)
    rows = []
    for name, bf16 in [(n, b) for b in ([False, True] if a.bf16_mixed else [False]) for n in MODEL_CASES]:
        mixed = ["--bf16-mixed"] if bf16 else []
        row = {"case": name, "precision": "bf16-mixed" if bf16 else "fp32"}
        sj = run_json([a.compare_bin, "--device", "cuda", "--case", name, "--reps", str(a.model_reps), "--warmup", "1"]
                      + mixed)
        if "error" in sj:
            row["strand_error"] = sj["error"]
        else:
            row.update(strand_s=statistics.median(sj["times_s"]), strand_peak_bytes=sj["device_peak_bytes"])
        if a.profile:  # a separate, slower run: where strand's step time goes, kernel by kernel
            pj = run_json([a.compare_bin, "--device", "cuda", "--case", name, "--reps", "1", "--warmup", "1", "--profile"]
                          + mixed)
            row["strand_profile"] = pj.get("profile", pj.get("error"))
        env = dict(os.environ)
        if name in NEEDS_REF_SITE:
            if not a.ref_site:
                row["torch_error"] = "not measured: needs --ref-site (ModelGenerator / enformer-pytorch)"
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                continue
            env["PYTHONPATH"] = a.ref_site + os.pathsep + env.get("PYTHONPATH", "")
        tj = run_json([sys.executable, __file__, "--torch-model", name, "--device", "cuda",
                       "--model-reps", str(a.model_reps)] + mixed, env=env)
        if "error" in tj:
            row["torch_error"] = tj["error"]
        else:
            row.update(torch_s=statistics.median(tj["times_s"]), torch_peak_bytes=tj["peak_bytes"])
            if "strand_s" in row:
                row["ratio"] = row["torch_s"] / row["strand_s"]
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def parse_name(full):
    parts = full.split("/")
    args = [int(a) for a in parts[1:] if re.fullmatch(r"-?\d+", a)]
    return parts[0], args


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strand", default="build-gpu/bench/cuda_bench", help="strand's cuda_bench binary")
    ap.add_argument("--strand-json", default=None, help="use this cuda_bench JSON instead of running it")
    ap.add_argument("--filter", default="", help="--benchmark_filter for cuda_bench")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="gpu_compare.json")
    ap.add_argument("--md", default=None, help="also write a markdown table here")
    ap.add_argument("--models", action="store_true", help="also time the whole-model cases (compare_cpu --device cuda)")
    ap.add_argument("--compare-bin", default="build-gpu/bench/compare_cpu", help="strand's compare_cpu binary")
    ap.add_argument("--model-reps", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="with --models: also strand's per-kernel time of each case")
    ap.add_argument("--bf16-mixed", action="store_true",
                    help="with --models: also run every model case in bf16-mixed (both sides under bf16 autocast)")
    ap.add_argument("--ref-site", default=os.environ.get("STRAND_REF_SITE", ""),
                    help="a folder put first on PYTHONPATH for the ModelGenerator / enformer-pytorch cases "
                         "(transformers 4.38, tokenizers 0.15, modelgenerator, enformer-pytorch: tools/fetch_gpu_wheels.sh)")
    ap.add_argument("--torch-model", default=None, help=argparse.SUPPRESS)  # subprocess mode
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--small", action="store_true", help=argparse.SUPPRESS)  # tiny shapes, to check on a CPU
    a = ap.parse_args()
    if a.torch_model:
        return torch_model_main(a)

    import torch
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # bf16 GEMMs sum split-K partials in f32, as strand's cuBLAS handle is set to
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.manual_seed(0)

    if a.strand_json:
        sj = json.load(open(a.strand_json))
    else:
        js = a.out + ".strand.json"
        cmd = [a.strand, f"--benchmark_out={js}", "--benchmark_out_format=json", "--benchmark_min_time=0.3"]
        if a.filter:
            cmd.append(f"--benchmark_filter={a.filter}")
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        sj = json.load(open(js))

    rows = []
    for bm in sj["benchmarks"]:
        if bm.get("error_occurred") or bm.get("run_type") == "aggregate":
            continue
        name, args = parse_name(bm["name"])
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[bm["time_unit"]]
        s_time = bm["real_time"] * unit
        # the same switch on both sides (BM_Conv1d's modes 3-5 repeat 0-2 through strand's cuDNN path)
        tf32 = (name == "BM_Linear" and args[-1] == 1) or (name == "BM_Conv1d" and args[-1] % 3 == 1)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        case = torch_case(torch, F, name, args)
        row = {"benchmark": bm["name"], "strand_s": s_time}
        if case is not None:
            fn, counter, work = case
            t_time = timed(torch, fn, a.reps)
            row.update(torch_s=t_time, counter=counter, strand_rate=work / s_time, torch_rate=work / t_time,
                       ratio=t_time / s_time)
            del fn
        del case  # its tensors (AdamW's 150M-element state, say) would count in the model rows' peaks
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    import gc
    gc.collect()
    torch.cuda.empty_cache()
    model_rows = run_models(a) if a.models else []
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "strand_context": sj.get("context", {}), "precision": "fp32, TF32 off on both sides except the cases whose last argument is 1"}
    json.dump({"meta": meta, "rows": rows, "models": model_rows}, open(a.out, "w"), indent=1)

    text = markdown(meta, rows, model_rows)
    print(text)
    if a.md:
        open(a.md, "w").write(text)


def markdown(meta, rows, model_rows):
    """The comparison as a markdown table (kernels, then whole models and their profiles)."""
    def rate(v, counter):
        return f"{v / 1e12:.2f} TFLOP/s" if counter == "FLOP/s" else f"{v / 1e9:.0f} GB/s"
    lines = [f"# strand CUDA kernels vs PyTorch — {meta['gpu']}, torch {meta['torch']} (CUDA {meta['cuda']})", "",
             "fp32, TF32 off on both sides (on for the BM_Linear and BM_Conv1d cases whose last argument is 1; with last argument 2 they are bf16). Time: median per call (strand: Google Benchmark with CUDA events; "
             "PyTorch: CUDA events, median of reps). Ratio = PyTorch time / strand time (above 1: strand faster).",
             "", "| benchmark | strand | PyTorch | strand rate | PyTorch rate | ratio |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "torch_s" in r:
            lines.append(f"| {r['benchmark']} | {r['strand_s'] * 1e3:.3f} ms | {r['torch_s'] * 1e3:.3f} ms | "
                         f"{rate(r['strand_rate'], r['counter'])} | {rate(r['torch_rate'], r['counter'])} | "
                         f"{r['ratio']:.2f} |")
        else:
            lines.append(f"| {r['benchmark']} | {r['strand_s'] * 1e3:.3f} ms | — | | | |")
    if model_rows:
        lines += ["", "## Whole models (strand: compare_cpu --device cuda; time per step, median)", "",
                  "| case | precision | strand | strand peak | PyTorch | PyTorch peak | ratio |",
                  "|---|---|---|---|---|---|---|"]
        gib = lambda b: f"{b / 2**30:.1f} GiB"
        for r in model_rows:
            st = f"{r['strand_s'] * 1e3:.0f} ms" if "strand_s" in r else "error"
            sp = gib(r["strand_peak_bytes"]) if "strand_peak_bytes" in r else ""
            tt = f"{r['torch_s'] * 1e3:.0f} ms" if "torch_s" in r else ("error" if "not measured" not in r.get("torch_error", "not measured") else "not measured")
            tp = gib(r["torch_peak_bytes"]) if "torch_peak_bytes" in r else ""
            ra = f"{r['ratio']:.2f}" if "ratio" in r else ""
            lines.append(f"| {r['case']} | {r.get('precision', 'fp32')} | {st} | {sp} | {tt} | {tp} | {ra} |")
        for r in model_rows:
            prof = r.get("strand_profile")
            if isinstance(prof, dict) and prof:
                total = sum(v[1] for v in prof.values())
                top = sorted(prof.items(), key=lambda kv: -kv[1][1])[:8]
                lines += ["", f"strand {r['case']} ({r.get('precision', 'fp32')}), one profiled step ({total * 1e3:.0f} ms of kernels, GPU synchronised "
                          "around each): " + ", ".join(f"{k} {v[1] * 1e3:.0f} ms ({v[0]} calls)" for k, v in top)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

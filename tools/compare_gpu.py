#!/usr/bin/env python3
"""strand's CUDA kernels against PyTorch's on the same GPU, at the same shapes, in fp32 (TF32 off on
both sides: PyTorch's matmul default, and cuDNN's TF32 switched off for the convolutions; the
benchmarks whose last argument is 1 turn TF32 on, on both sides).

strand's side is bench/cuda_bench (Google Benchmark, CUDA-event timing); this script runs it, then
times the PyTorch equivalent of every benchmark it reported (torch.cuda events around each call,
warm-up first, median of --reps), and writes a table of both and their ratio
(ratio = PyTorch time / strand time: above 1 means strand is faster).

  python3 tools/compare_gpu.py --strand build-gpu/bench/cuda_bench --out results.json --md results.md

PyTorch equivalents: F.layer_norm and its autograd backward (input, weight and bias gradients, as
strand's), torch.softmax / torch._softmax_backward_data, F.linear, F.scaled_dot_product_attention
(PyTorch picks its fp32 kernel) forward and forward+backward, F.conv1d (cuDNN; channels-first,
PyTorch's layout) forward and forward+backward, F.batch_norm in training mode, and
torch.optim.AdamW(fused=True).
"""
import argparse
import json
import re
import statistics
import subprocess
import sys


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
        M, N, K, _ = args
        x, w = r(M, K), r(N, K)
        return (lambda: F.linear(x, w)), "FLOP/s", 2.0 * M * N * K
    if name == "BM_Attention":
        B, H, T, D, bwd = args
        q, k, v = (r(B, H, T, D, grad=bool(bwd)) for _ in range(3))
        g = r(B, H, T, D)
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
    if name == "BM_Conv1d":
        B, L, Cin, Cout, K, bwd, _ = args
        x, w, b = r(B, Cin, L, grad=bool(bwd)), r(Cout, Cin, K, grad=bool(bwd)), r(Cout, grad=bool(bwd))
        g = r(B, Cout, L)
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


def torch_model_case(torch, name):
    """PyTorch's side of a whole-model case, or None where its reference package is not on the GPU
    machine (enformer-pytorch and ModelGenerator are not in its image, and nothing can be installed)."""
    if name != "esm150m_fwdbwd":
        return None
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
    from compare_cpu import _esm  # the same EsmModel configuration as the CPU comparison
    m = _esm(640, 30, 20, 2560).cuda().train()
    ids = torch.randint(4, 24, (2, 1024), device="cuda")
    ids[:, 0], ids[:, -1] = 0, 2
    mask = torch.ones_like(ids)

    def step():
        m(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).mean().backward()
        m.zero_grad(set_to_none=True)
    return step


def run_models(torch, a):
    rows = []
    for name in MODEL_CASES:
        row = {"case": name}
        try:
            out = subprocess.run([a.compare_bin, "--device", "cuda", "--case", name, "--reps", str(a.model_reps),
                                  "--warmup", "1"], check=True, capture_output=True, text=True, timeout=900)
            sj = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(strand_s=statistics.median(sj["times_s"]), strand_peak_bytes=sj["device_peak_bytes"])
        except subprocess.CalledProcessError as e:
            row["strand_error"] = (e.stderr or "")[-500:]
        step = torch_model_case(torch, name)
        if step is not None:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            row["torch_s"] = timed(torch, step, a.model_reps, warmup=1)
            row["torch_peak_bytes"] = torch.cuda.max_memory_allocated()
            if "strand_s" in row:
                row["ratio"] = row["torch_s"] / row["strand_s"]
            del step
            torch.cuda.empty_cache()
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
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
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
        tf32 = name in ("BM_Linear", "BM_Conv1d") and args[-1] == 1  # the same switch on both sides
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
    model_rows = run_models(torch, a) if a.models else []
    meta = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "strand_context": sj.get("context", {}), "precision": "fp32, TF32 off on both sides except the cases whose last argument is 1"}
    json.dump({"meta": meta, "rows": rows, "models": model_rows}, open(a.out, "w"), indent=1)

    def rate(v, counter):
        return f"{v / 1e12:.2f} TFLOP/s" if counter == "FLOP/s" else f"{v / 1e9:.0f} GB/s"
    lines = [f"# strand CUDA kernels vs PyTorch — {meta['gpu']}, torch {meta['torch']} (CUDA {meta['cuda']})", "",
             "fp32, TF32 off on both sides (on for the BM_Linear and BM_Conv1d cases whose last argument is 1). Time: median per call (strand: Google Benchmark with CUDA events; "
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
        lines += ["", "## Whole models (fp32; strand: compare_cpu --device cuda; time per step, median)", "",
                  "| case | strand | strand peak | PyTorch | PyTorch peak | ratio |", "|---|---|---|---|---|---|"]
        gib = lambda b: f"{b / 2**30:.1f} GiB"
        for r in model_rows:
            st = f"{r['strand_s'] * 1e3:.0f} ms" if "strand_s" in r else "error"
            sp = gib(r["strand_peak_bytes"]) if "strand_peak_bytes" in r else ""
            tt = f"{r['torch_s'] * 1e3:.0f} ms" if "torch_s" in r else "not measured"
            tp = gib(r["torch_peak_bytes"]) if "torch_peak_bytes" in r else ""
            ra = f"{r['ratio']:.2f}" if "ratio" in r else ""
            lines.append(f"| {r['case']} | {st} | {sp} | {tt} | {tp} | {ra} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.md:
        open(a.md, "w").write(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ESTIMATE, without a GPU, of what PyTorch's torch.cuda.max_memory_allocated() would report for the
whole-model cases of tools/compare_gpu.py --models (fp32 and --bf16-mixed), so that strand's device
peak (from its dry run) can be put next to a PyTorch figure for the cases never measured on a GPU.
Every figure this script prints is an estimate, not a measurement.

    refenv/bin/python tools/estimate_torch_memory.py [--cases a,b] [--precisions fp32,bf16-mixed]
                                 [--json out.json] [--md out.md] [--tf438 PATH] [--small] [--self-check]

Needs: a CUDA build of torch (the pip wheel; no GPU or driver needed), transformers (ESM-2),
ModelGenerator and enformer-pytorch, transformers 4.38 in --tf438 (RNABert), and a C++ compiler
(the shim below). All eight cases take about 2.5 minutes on 2 cores and little memory.

What it runs. The very code compare_gpu.py runs on the GPU: compare_gpu.torch_model_step (same
models, shapes, LoRA wrapping, loss, zero_grad(set_to_none=True), the AdamW step and gradient
clipping of dna_rna_concat_step), driven as compare_gpu.torch_model_main drives it: one warm-up
step, the peak reset, then --reps steps; bf16-mixed: each whole step (backward, zero_grad and
optimizer included) under torch.autocast("cuda", bfloat16). It runs under FakeTensorMode with
device "cuda": every tensor has its real shape, dtype, strides and device but no data, so official
sizes (AIDO.RNA-1.6B, Enformer at 196,608 bp) cost seconds and no memory. As the fake tensors are
CUDA tensors, PyTorch's CUDA-specific logic runs as on the GPU: the CUDA autocast lists (and
autocast's cache of the bf16 copies of trainable weights, kept until the autocast region ends),
the fused CUDA dropout (bool mask), cuDNN batch norm, and the autograd engine's own lifetimes (what
each node saves, when gradients are accumulated or stolen, when saved tensors die), reentrant
checkpointing (Enformer's checkpoint_sequential re-runs each block in the backward), foreach AdamW.

What it counts. A TorchDispatchMode sees every aten op's outputs; each new CUDA storage counts with
its size rounded up to 512 bytes (the caching allocator's block rounding, which is what
max_memory_allocated counts; the 2 MiB / 20 MiB segment rounding affects only reserved memory)
until the storage dies (a weakref finalizer on it). Estimated peak = the largest live sum after
the reset (parameters, inputs, whatever the warm-up step left: AdamW state, and for the concat step
the gradients its zero_grad frees only at the start of the next step), plus:
  * kernel scratch that is no aten output, where known: the memory-efficient attention backward's
    delta [B,H,T] f32 and, below f32, its f32 grad-Q accumulator (counted only at that op);
  * the cuBLAS workspaces, which stay allocated: 32 MiB (torch's default on sm90) per cuBLAS handle,
    one for the forward's thread and one for the autograd engine's device thread (2 x 32 MiB).
The JSON / markdown also break the live bytes at the peak down by where they were allocated (model
and inputs, kept from the warm-up step, forward, backward, clipping + optimizer).

Assumptions.
  * scaled_dot_product_attention: on fake tensors PyTorch would take the math path; it is replaced
    by the backend the CUDA dispatcher picks on an H100: flash (f16/bf16, no mask, head dim <= 256
    and a multiple of 8), else memory-efficient (saves its output and the logsumexp
    [B,H,ceil(T/32)*32] f32, not the [T,T] matrix), else math. ESM-2 (transformers' "sdpa"
    attention) passes an additive mask, so it is memory-efficient in fp32 *and* in bf16-mixed
    (autocast casts q, k, v and the mask to bf16 first). cuDNN attention, if torch picked it for
    bf16, saves about as much. AIDO.RNA (RNABert) and Enformer do not call SDPA: their eager
    attention keeps its [T,T] matrices, as on the GPU.
  * AdamW and clip_grad_norm_ take their foreach paths, as PyTorch does for CUDA parameters (fake
    parameters would otherwise make them fall back to per-tensor loops).
  * The autograd engine runs the backward on the calling thread (set_multithreading_enabled(False));
    on a GPU it runs on a device thread, in the same order.
  * torch here is the local one (2.15 when written); the GPU measurement was torch 2.11. Autocast
    lists, optimizer internals and transformers' ESM code may differ a little between versions.
  * Not modelled: cuDNN convolution workspaces (Enformer's convolutions: transient, their size is
    chosen by cuDNN's heuristics on the device), other kernels' internal scratch that is no aten
    output, and block-size effects of the allocator's cache (a cached block reused for a smaller
    request is not split when the remainder is <= 1 MiB, and all of it then counts): both can only
    make the real figure larger.

Calibration. The one PyTorch peak measured on a GPU for these cases is esm150m_fwdbwd, fp32, H100,
torch 2.11+cu130 (bench/results/gpu_models_h100.json): 4,535,842,304 B. This script estimates
4,542,449,664 B (+0.15 %; without the cuBLAS workspaces -1.3 %). The figure discriminates: had
the H100 used the math SDPA path (the [T,T] matrices kept), the estimate would be 9,730,897,408 B.
The script prints this comparison (--calibrate-against, default that file). --self-check checks the
method rather than the figures: at compare_gpu's tiny shapes on the CPU, the same tracker over real
and over fake tensors gives the same peak, to the byte, for all four cases (fake tensors do not
change any lifetime).

The fake CUDA device without a GPU. Fake CUDA tensors work in the forward, but the autograd engine
(in a CUDA build of torch) asks the CUDA hooks whether each device has a primary context before it
runs a backward, which needs a device. A small shim (compiled here with $CXX or c++, loaded with
LD_PRELOAD into the subprocess that runs each case) answers c10::cuda::device_count() with 0, except
from a torch.autograd.backward call until the first node of its graph runs, when it answers 64, and
provides cuDevicePrimaryCtxGetState ("no primary context"), so the engine stashes no streams.
No CUDA runtime call is needed; one would fail (no driver) and stop the case, never skew it.

Each case runs in its own subprocess, as in compare_gpu.py: the ModelGenerator / enformer-pytorch
cases with --tf438 (transformers 4.38) first on PYTHONPATH, ESM-2 with the interpreter's own
transformers (compare_gpu.py too runs ESM with the GPU machine's own).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))
from compare_gpu import MODEL_CASES, NEEDS_REF_SITE, stub_enformer_data_imports  # noqa: E402  (stdlib-only at import)

GIB = float(1 << 30)
BLOCK = 512                  # CUDA caching allocator: every block is a multiple of 512 bytes
CUBLAS_WORKSPACE = 32 << 20  # torch's default cuBLAS workspace on sm90 (CUBLAS_WORKSPACE_CONFIG unset)
CUBLAS_HANDLES = 2           # the forward's thread and the autograd engine's device thread
CALIBRATION = REPO / "bench" / "results" / "gpu_models_h100.json"

SHIM_SRC = r"""
// Loaded with LD_PRELOAD by tools/estimate_torch_memory.py: lets the autograd engine run over fake
// CUDA tensors on a machine without a GPU. Never used for real work.
#include <cstdint>
static int g_count = 0;
extern "C" void strand_fake_cuda_set_count(int n) { g_count = n; }
namespace c10 { namespace cuda { int8_t device_count() noexcept { return (int8_t)g_count; } } }
extern "C" int cuDevicePrimaryCtxGetState(int, unsigned int* flags, int* active) {
  if (flags) *flags = 0;
  if (active) *active = 0;  // no primary context: the engine stashes no streams
  return 0;
}
"""


def build_shim():
    """Compiles the shim once per source version into the temp directory; returns its path."""
    tag = hashlib.sha1(SHIM_SRC.encode()).hexdigest()[:12]
    d = Path(tempfile.gettempdir()) / f"strand_fake_cuda_{tag}"
    so = d / "libcuda.so.1"  # the soname lazy NVRTC dlopens, so its dlopen finds the preloaded shim
    if not so.exists():
        d.mkdir(parents=True, exist_ok=True)
        src = d / "shim.cpp"
        src.write_text(SHIM_SRC)
        cxx = os.environ.get("CXX", "c++")
        subprocess.run([cxx, "-O2", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(so) + ".tmp", str(src)],
                       check=True)
        os.replace(str(so) + ".tmp", so)
    return so


# ----------------------------------------------------------------------------------- subprocess side

def _round(n):
    return 0 if n == 0 else -(-n // BLOCK) * BLOCK


def estimate_one(name, bf16, reps, small, device="cuda", fake=True):
    """Runs one case under fake CUDA tensors in this process; returns the result dict. (device="cpu" and
    fake=False: the same tracker over real CPU tensors, for --self-check.)"""
    import contextlib
    import ctypes
    import weakref

    shim = ctypes.CDLL(os.environ["STRAND_FAKE_CUDA_SHIM"])
    stub_enformer_data_imports()  # as compare_gpu.torch_model_main
    import torch
    import torch.nn.functional as F
    import torch.utils.checkpoint as ckpt
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    aten = torch.ops.aten
    backward_starting = [None]  # graph task id at the start of a backward, until its first node runs

    # ---- the tracker: live CUDA storages, rounded as the caching allocator rounds blocks, each tagged
    # with where it was allocated (for the breakdown at the peak)
    class Tracker(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live, self.cur, self.peak, self.peak_at, self.peak_by = {}, 0, 0, "", {}
            self.by = {}  # tag -> live bytes
            self.phase, self.in_optimizer = "build", False

        def _tag(self):
            if self.phase != "timed steps":
                return {"build": "model and inputs", "warm-up": "kept from the warm-up step"}[self.phase]
            if torch._C._current_graph_task_id() != -1:
                return "backward"
            return "clip + optimizer" if self.in_optimizer else "forward"

        def _free(self, key):
            size, tag = self.live.pop(key, (0, None))
            self.cur -= size
            if tag is not None:
                self.by[tag] -= size

        def _note_peak(self, value, what):
            if value > self.peak:
                self.peak, self.peak_at, self.peak_by = value, f"{self.phase}, {self._tag()}: {what}", dict(self.by)

        def reset_peak(self):
            self.peak, self.peak_at, self.peak_by = self.cur, f"{self.phase}: state at reset", dict(self.by)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if backward_starting[0] is not None and torch._C._current_graph_task_id() != backward_starting[0]:
                # a node of the new graph task runs: the engine has stashed its (no) streams
                backward_starting[0] = None
                shim.strand_fake_cuda_set_count(0)
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type == device:
                    st = t.untyped_storage()
                    key, size = st._cdata, _round(st.nbytes())
                    old = self.live.get(key)
                    if old is None:
                        tag = self._tag()
                        self.live[key] = (size, tag)
                        self.cur += size
                        self.by[tag] = self.by.get(tag, 0) + size
                        weakref.finalize(st, self._free, key)
                    elif old[0] != size:  # resized in place
                        self.live[key] = (size, old[1])
                        self.cur += size - old[0]
                        self.by[old[1]] += size - old[0]
            scratch = kernel_scratch(func, args, out)
            if scratch:
                self.by["kernel scratch"] = scratch
            self._note_peak(self.cur + scratch, str(func))
            self.by.pop("kernel scratch", None)
            return out

    tracker = Tracker()

    def kernel_scratch(func, args, out):
        """Bytes a CUDA kernel allocates for itself (freed when it returns) that are no aten output."""
        if func is aten._scaled_dot_product_efficient_attention_backward.default:
            q = args[1]  # [B, H, T, D]
            B, H, T, D = q.shape
            scratch = _round(B * H * T * 4)  # delta = rowsum(dO * O), f32
            if q.dtype != torch.float32:    # below f32 the kernel accumulates dQ in an f32 workspace
                scratch += _round(B * H * T * D * 4)
            return scratch
        return 0

    # ---- scaled_dot_product_attention as the CUDA dispatcher runs it on an H100
    sdpa_math = F.scaled_dot_product_attention
    sdpa_used = set()

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if not query.is_cuda:
            return sdpa_math(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
        if torch.is_autocast_enabled("cuda"):  # sdpa is on autocast's lower-precision list: all args cast
            dt = torch.get_autocast_dtype("cuda")
            query, key, value = (x.to(dt) if x.is_floating_point() else x for x in (query, key, value))
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = attn_mask.to(dt)
        D = query.shape[-1]
        if query.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and D <= 256 and D % 8 == 0:
            sdpa_used.add("flash")
            return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                            scale=scale)[0]
        if query.dtype in (torch.float16, torch.bfloat16, torch.float32) and D % (4 if query.dtype == torch.float32 else 8) == 0:
            sdpa_used.add("efficient")
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:  # converted to an additive mask first
                    attn_mask = torch.where(attn_mask, 0.0, float("-inf")).to(query.dtype)
                attn_mask = attn_mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
            lse = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
            return aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, lse, dropout_p,
                                                                is_causal, scale=scale)[0]
        sdpa_used.add("math")
        return sdpa_math(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)

    F.scaled_dot_product_attention = sdpa
    torch.nn.functional.scaled_dot_product_attention = sdpa

    # ---- Module.to(device) without swap_tensors (which refuses fake parameters): plain reassignment
    def _apply(self, fn, recurse=True):
        if recurse:
            for child in self.children():
                child._apply(fn)
        for k, p in self._parameters.items():
            if p is not None:
                with torch.no_grad():
                    new = fn(p)
                if new is not p:
                    self._parameters[k] = torch.nn.Parameter(new, requires_grad=p.requires_grad)
        for k, b in self._buffers.items():
            if b is not None:
                self._buffers[k] = fn(b)
        return self
    torch.nn.Module._apply = _apply

    # ---- autocast("cuda") refuses to start without a device; H100 has bf16
    ac_init = torch.amp.autocast_mode.autocast.__init__

    def autocast_init(self, *a, **k):
        saved = torch.cuda.is_available
        torch.cuda.is_available = lambda: True
        try:
            ac_init(self, *a, **k)
        finally:
            torch.cuda.is_available = saved
    torch.amp.autocast_mode.autocast.__init__ = autocast_init
    torch.cuda.is_bf16_supported = lambda including_emulation=True: True

    # ---- the backward: the shim reports a device from torch.autograd.backward until the first node of
    # its graph runs (the engine's stream bookkeeping, see the module docstring); at no other time, or
    # device queries elsewhere (the convolution backend choice, say) would try to reach a real GPU
    backward = torch.autograd.backward

    def fake_backward(*a, **k):
        backward_starting[0] = torch._C._current_graph_task_id()  # -1, or the task of a reentrant caller
        shim.strand_fake_cuda_set_count(64)
        try:
            return backward(*a, **k)
        finally:
            backward_starting[0] = None
            shim.strand_fake_cuda_set_count(0)
    torch.autograd.backward = fake_backward

    # ---- reentrant checkpointing stashes the CUDA RNG states (host tensors, no device memory): there
    # is no generator behind fake tensors, so nothing is stashed or restored
    ckpt.get_device_states = lambda *args: ([], [])
    ckpt.set_device_states = lambda *args, **kw: None

    # ---- foreach optimizer / clipping, as PyTorch picks for real CUDA parameters
    import importlib
    import pkgutil
    for m in pkgutil.iter_modules(torch.optim.__path__):
        mod = importlib.import_module(f"torch.optim.{m.name}")
        if hasattr(mod, "_default_to_fused_or_foreach"):
            mod._default_to_fused_or_foreach = lambda params, differentiable, use_fused=False: (False, not differentiable)
    import torch.nn.utils.clip_grad as clip_grad
    clip_grad._has_foreach_support = lambda tensors, device: device.type in ("cuda", "cpu")

    # ---- (for the breakdown only) mark clip_grad_norm_ and optimizer steps
    clip = torch.nn.utils.clip_grad_norm_

    def marked_clip(*a, **k):
        tracker.in_optimizer = True
        return clip(*a, **k)
    torch.nn.utils.clip_grad_norm_ = marked_clip
    from torch.optim.optimizer import register_optimizer_step_post_hook
    register_optimizer_step_post_hook(lambda *a: setattr(tracker, "in_optimizer", False))

    # ---- the case itself, as compare_gpu.torch_model_main
    from compare_gpu import torch_model_step
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    dev = torch.device(device)
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext()
    with mode, tracker, torch.autograd.set_multithreading_enabled(False):
        step = torch_model_step(torch, name, dev, small)
        after_build = tracker.cur
        if bf16:
            fp32_step = step

            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16):
                    fp32_step()
        tracker.phase = "warm-up"
        step()
        tracker.phase = "timed steps"
        tracker.reset_peak()
        at_reset = tracker.cur
        for i in range(reps):
            step()
        peak = tracker.peak
    workspace = CUBLAS_HANDLES * CUBLAS_WORKSPACE
    import transformers
    return {"case": name, "precision": "bf16-mixed" if bf16 else "fp32", "estimated_peak_bytes": peak + workspace,
            "tensor_peak_bytes": peak, "cublas_workspace_bytes": workspace, "resident_after_build_bytes": after_build,
            "resident_at_reset_bytes": at_reset, "peak_at": tracker.peak_at,
            "at_peak_by_origin_bytes": {k: v for k, v in tracker.peak_by.items() if v}, "sdpa_backends": sorted(sdpa_used),
            "torch": torch.__version__, "transformers": transformers.__version__}


# ----------------------------------------------------------------------------------- driver side

def self_check(a, shim):
    bad = 0
    for name in [c.strip() for c in a.cases.split(",") if c.strip()]:
        peaks = {}
        for real in (True, False):
            r = run_case(name, False, a, shim, ["--small", "--device", "cpu"] + (["--real"] if real else []))
            # the step's own memory: tensors that exist before the fake mode starts (module-level
            # constants, made at import) are real ones that the fake run does not see on the CPU
            peaks["real" if real else "fake"] = (r["tensor_peak_bytes"] - r["resident_after_build_bytes"]
                                                 if "tensor_peak_bytes" in r else r.get("error"))
        ok = peaks["real"] == peaks["fake"]
        bad += not ok
        print(f"{name}: tracked CPU peak above the built model, real tensors {peaks['real']}, "
              f"fake tensors {peaks['fake']}: {'same' if ok else 'DIFFERENT'}")
    sys.exit(1 if bad else 0)


def run_case(name, bf16, a, shim, extra=()):
    env = dict(os.environ, STRAND_FAKE_CUDA_SHIM=str(shim), CUDA_VISIBLE_DEVICES="")
    env["LD_PRELOAD"] = os.pathsep.join(p for p in (str(shim), env.get("LD_PRELOAD")) if p)
    if name in NEEDS_REF_SITE:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (a.tf438, env.get("PYTHONPATH")) if p)
    cmd = [a.python, __file__, "--one", name, "--reps", str(a.reps)] + (["--bf16-mixed"] if bf16 else []) + \
          (["--small"] if a.small and "--small" not in extra else []) + list(extra)
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        return {"case": name, "precision": "bf16-mixed" if bf16 else "fp32", "error": f"timeout {a.timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-4:]
        return {"case": name, "precision": "bf16-mixed" if bf16 else "fp32",
                "error": f"exit {p.returncode}: " + " / ".join(tail)}
    return json.loads(lines[-1])


def calibration_row(rows, path):
    """The measured H100 ESM fp32 peak against this script's estimate of it."""
    try:
        measured = next(m for m in json.load(open(path))["models"]
                        if m["case"] == "esm150m_fwdbwd" and "torch_peak_bytes" in m)["torch_peak_bytes"]
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    est = next((r for r in rows if r["case"] == "esm150m_fwdbwd" and r["precision"] == "fp32"
                and "estimated_peak_bytes" in r), None)
    if est is None:
        return {"measured_bytes": measured, "source": str(path)}
    e = est["estimated_peak_bytes"]
    return {"source": str(path), "measured_bytes": measured, "estimated_bytes": e,
            "relative_error": (e - measured) / measured}


def markdown(rows, cal, meta):
    out = ["# PyTorch device peak memory: ESTIMATES without a GPU (tools/estimate_torch_memory.py)", "",
           f"- what: `torch.cuda.max_memory_allocated()` that `tools/compare_gpu.py --models` would report, "
           f"estimated by running its PyTorch code on fake CUDA tensors (no GPU, no data)",
           f"- torch {meta.get('torch')} here; transformers {', '.join(sorted(meta.get('transformers', [])))}",
           "- each figure = live CUDA tensor storages at their peak (512-byte blocks) + 2 x 32 MiB cuBLAS "
           "workspace; see the script's docstring for what is and is not modelled", ""]
    if cal and "estimated_bytes" in cal and not meta.get("small"):
        out += ["## Calibration", "",
                f"esm150m_fwdbwd fp32 on the H100 (torch 2.11, `{os.path.relpath(cal['source'], REPO)}`): measured "
                f"{cal['measured_bytes']:,} B ({cal['measured_bytes'] / GIB:.3f} GiB); estimated "
                f"{cal['estimated_bytes']:,} B ({cal['estimated_bytes'] / GIB:.3f} GiB); "
                f"estimate - measured = {cal['relative_error'] * 100:+.2f} %.", ""]
    out += ["## Estimates", "", "| case | precision | estimated PyTorch peak (bytes) | GiB | SDPA backend | peak reached in |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['case']} | {r['precision']} | not estimated: {r['error'][:200]} | | | |")
        else:
            out.append(f"| {r['case']} | {r['precision']} | {r['estimated_peak_bytes']:,} | "
                       f"{r['estimated_peak_bytes'] / GIB:.2f} | {', '.join(r['sdpa_backends']) or 'none (eager)'} | "
                       f"{r['peak_at']} |")
    tags = ["model and inputs", "kept from the warm-up step", "forward", "backward", "clip + optimizer", "kernel scratch"]
    out += ["", "## What is live at the peak (GiB, by where it was allocated; cuBLAS workspace apart)", "",
            "\"kept from the warm-up step\": optimizer state, gradients not yet freed (the concat step zeroes "
            "them at its start), caches a module keeps; \"forward\": activations saved for the backward (and "
            "autocast's bf16 weight copies); \"backward\": gradients and the backward's temporaries.", "",
            "| case | precision | " + " | ".join(tags) + " | cuBLAS workspace |", "|---|---|" + "---|" * (len(tags) + 1)]
    for r in rows:
        if "at_peak_by_origin_bytes" in r:
            by = r["at_peak_by_origin_bytes"]
            out.append(f"| {r['case']} | {r['precision']} | " + " | ".join(
                f"{by[t] / GIB:.2f}" if by.get(t) else "" for t in tags) + f" | {r['cublas_workspace_bytes'] / GIB:.2f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(MODEL_CASES), help="comma-separated (default: all of compare_gpu's)")
    ap.add_argument("--precisions", default="fp32,bf16-mixed", help="fp32, bf16-mixed or both (default)")
    ap.add_argument("--reps", type=int, default=1, help="steps after the warm-up (compare_gpu: --model-reps)")
    ap.add_argument("--json", default=None, help="write the rows and the calibration here")
    ap.add_argument("--md", default=None, help="write a markdown table here")
    ap.add_argument("--tf438", default=os.environ.get("STRAND_TF438", "/work/tf438"),
                    help="transformers 4.38 folder put first on PYTHONPATH for the RNABert / Enformer cases")
    ap.add_argument("--python", default=sys.executable, help="interpreter with torch, transformers, "
                    "modelgenerator and enformer-pytorch (default: this one)")
    ap.add_argument("--calibrate-against", default=str(CALIBRATION), help="compare_gpu JSON with a measured ESM peak")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    ap.add_argument("--small", action="store_true", help="compare_gpu's tiny shapes (a quick check of this script)")
    ap.add_argument("--self-check", action="store_true",
                    help="check the method, not the figures: every case at compare_gpu's tiny shapes on the CPU, "
                         "fp32, once on real tensors and once on fake ones, through the same tracker; the peaks "
                         "must agree (they do not involve any CUDA-specific modelling)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # subprocess mode
    ap.add_argument("--bf16-mixed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(estimate_one(a.one, a.bf16_mixed, a.reps, a.small, a.device, not a.real)), flush=True)
        return

    shim = build_shim()
    if a.self_check:
        return self_check(a, shim)
    rows = []
    for prec in [p.strip() for p in a.precisions.split(",") if p.strip()]:
        if prec not in ("fp32", "bf16-mixed"):
            sys.exit(f"unknown precision {prec}")
        for name in [c.strip() for c in a.cases.split(",") if c.strip()]:
            if name not in MODEL_CASES:
                sys.exit(f"unknown case {name} (one of {', '.join(MODEL_CASES)})")
            r = run_case(name, prec == "bf16-mixed", a, shim)
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    cal = calibration_row(rows, a.calibrate_against)
    meta = {"torch": next((r["torch"] for r in rows if "torch" in r), None),
            "transformers": sorted({r["transformers"] for r in rows if "transformers" in r}),
            "note": "ESTIMATES (fake CUDA tensors, no GPU); see tools/estimate_torch_memory.py",
            "small": a.small}
    text = markdown(rows, cal, meta)
    print(text)
    if a.md:
        Path(a.md).write_text(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"meta": meta, "calibration": cal, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

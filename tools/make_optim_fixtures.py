#!/usr/bin/env python3
"""Golden fixtures for strand's optimisers, LR schedules and gradient clipping (tests/nn/optim_test.cpp).

Writes tests/fixtures/optim/{adamw,sgd,schedules,clip_grad}.json from PyTorch itself:
  * adamw.json / sgd.json: torch.optim.AdamW / torch.optim.SGD (foreach=False, the single-tensor
    path strand mirrors) run for a number of steps on three small tensors ([3,4], [5], [2,2,3]), with
    deterministic initial values and per-step gradients generated here. Some gradients are None on
    some steps, to pin PyTorch's skipping (the state, step count included, does not advance).
    Each run stores the initial values, every step's gradients (null = None) and the parameters
    after every step; f64 runs are compared to ~1e-12, f32 runs store f32 values (exact in JSON).
  * schedules.json: learning rates from LambdaLR over the HF cosine-with-warmup (ModelGenerator's
    CosineWithWarmup: warmup = int(0.01 * 1000), base lr 1e-4, 1000 steps), linear-with-warmup and
    constant-with-warmup lambdas; lrs[k] is the lr after k scheduler.step() calls. The lambdas come
    from transformers when it is installed, otherwise they are transcribed from
    transformers/optimization.py below (identical arithmetic).
  * clip_grad.json: torch.nn.utils.clip_grad_norm_ total norms and clipped gradients for a few
    gradient sets (clipped, not clipped, just under max_norm, a None gradient, inf and 1 norms, f32).

Floats are written with Python's repr (shortest round-trip, at most 17 significant digits), so the
C++ side reads back exactly the doubles PyTorch produced.

Regenerate (from the repository root; any recent CPU torch wheel, no GPU needed):
    python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch   # once, outside the repo
    /tmp/refenv/bin/python tools/make_optim_fixtures.py
Optional: --out DIR (default tests/fixtures/optim next to this script's repository).
"""
import argparse
import functools
import json
import math
import os

import torch
from torch.optim.lr_scheduler import LambdaLR

SHAPES = [[3, 4], [5], [2, 2, 3]]
STEPS = 20
# (step, parameter index) pairs whose gradient is None: parameter 2 starts late, parameter 1 pauses.
NO_GRAD = {(0, 2), (3, 1), (7, 1), (8, 1)}


def flat(t):
    return t.detach().reshape(-1).tolist()


def make_inputs(seed):
    """Initial values and per-step gradients in f64 (gradient scale varies per step)."""
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=torch.float64) for s in SHAPES]
    grads = []
    for step in range(STEPS):
        scale = 0.05 + 2.0 * (step % 5) / 4.0
        row = []
        for i, s in enumerate(SHAPES):
            gr = torch.randn(s, generator=g, dtype=torch.float64) * scale
            if step == 2 and i == 0:
                gr.view(-1)[5] = 0.0  # an exact zero gradient element
            row.append(None if (step, i) in NO_GRAD else gr)
        grads.append(row)
    return init, grads


def run_optimizer(make_opt, init, grads, dtype, steps):
    params = [p.to(dtype).clone().requires_grad_(True) for p in init]
    opt = make_opt(params)
    out = {"dtype": "f64" if dtype == torch.float64 else "f32", "shapes": SHAPES,
           "init": [flat(p) for p in params], "grads": [], "params": []}
    for step in range(steps):
        row = []
        for p, gr in zip(params, grads[step]):
            p.grad = None if gr is None else gr.to(dtype).clone()
            row.append(None if gr is None else flat(p.grad))
        opt.step()
        out["grads"].append(row)
        out["params"].append([flat(p) for p in params])
    state = opt.state_dict()["state"]
    out["final_steps"] = [int(state[i]["step"]) if i in state and "step" in state[i] else 0
                          for i in range(len(params))]
    return out


def adamw_fixture():
    hyper = {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    init, grads = make_inputs(1234)

    def make(ps):
        return torch.optim.AdamW(ps, lr=hyper["lr"], betas=tuple(hyper["betas"]), eps=hyper["eps"],
                                 weight_decay=hyper["weight_decay"], amsgrad=False, foreach=False)

    runs = []
    for dtype in (torch.float64, torch.float32):
        r = run_optimizer(make, init, grads, dtype, STEPS)
        r["hyper"] = hyper
        runs.append(r)
    return {"torch_version": torch.__version__, "runs": runs}


def sgd_fixture():
    init, grads = make_inputs(4321)
    configs = [
        ({"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.01, "dampening": 0.0, "nesterov": False},
         [(torch.float64, STEPS), (torch.float32, STEPS)]),
        ({"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.01, "dampening": 0.0, "nesterov": True},
         [(torch.float64, 6)]),
        ({"lr": 5e-2, "momentum": 0.5, "weight_decay": 0.0, "dampening": 0.1, "nesterov": False},
         [(torch.float64, 6)]),
    ]
    runs = []
    for hyper, variants in configs:
        def make(ps, h=hyper):
            return torch.optim.SGD(ps, lr=h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"],
                                   dampening=h["dampening"], nesterov=h["nesterov"], foreach=False)
        for dtype, steps in variants:
            r = run_optimizer(make, init, grads, dtype, steps)
            r["hyper"] = hyper
            del r["final_steps"]  # SGD keeps no step count
            runs.append(r)
    return {"torch_version": torch.__version__, "runs": runs}


# Transcribed from transformers/optimization.py (used only when transformers is not installed).
def _cosine_lambda(current_step, *, num_warmup_steps, num_training_steps, num_cycles):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def _linear_lambda(current_step, *, num_warmup_steps, num_training_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps)))


def _constant_warmup_lambda(current_step, *, num_warmup_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


def make_scheduler(kind, opt, warmup, total):
    try:
        import transformers
        import transformers.optimization as hf
        source = "transformers " + transformers.__version__
        if kind == "cosine":
            return hf.get_cosine_schedule_with_warmup(opt, warmup, total), source
        if kind == "linear":
            return hf.get_linear_schedule_with_warmup(opt, warmup, total), source
        return hf.get_constant_schedule_with_warmup(opt, warmup), source
    except ImportError:
        pass
    if kind == "cosine":
        lam = functools.partial(_cosine_lambda, num_warmup_steps=warmup, num_training_steps=total, num_cycles=0.5)
    elif kind == "linear":
        lam = functools.partial(_linear_lambda, num_warmup_steps=warmup, num_training_steps=total)
    else:
        lam = functools.partial(_constant_warmup_lambda, num_warmup_steps=warmup)
    return LambdaLR(opt, lam), "torch LambdaLR + HF lambdas transcribed"


def schedule_run(kind, base_lr, warmup, total, steps):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=base_lr)
    sched, source = make_scheduler(kind, opt, warmup, total)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(steps):
        opt.step()  # no gradient: a no-op, only there to keep LambdaLR's call-order check quiet
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    return {"kind": kind, "base_lr": base_lr, "warmup_steps": warmup, "total_steps": total, "lrs": lrs,
            "source": source}


def schedules_fixture():
    total, ratio = 1000, 0.01
    cosine = schedule_run("cosine", 1e-4, int(ratio * total), total, total)
    cosine["warmup_ratio"] = ratio
    return {"torch_version": torch.__version__, "runs": [
        cosine,
        schedule_run("linear", 1e-4, 30, 300, 300),
        schedule_run("constant_with_warmup", 4e-4, 5, 0, 12),
    ]}


def clip_fixture():
    g = torch.Generator().manual_seed(99)

    def grads(scale, dtype=torch.float64, none_at=None):
        out = [torch.randn(s, generator=g, dtype=torch.float64) * scale for s in SHAPES]
        out = [x.to(dtype) for x in out]
        if none_at is not None:
            out[none_at] = None
        return out

    big = grads(1.0)
    small = grads(0.005)
    # Rescaled so the total norm is 5e-7 under max_norm 0.1: still scaled, by max/(total + 1e-6) < 1.
    near = grads(1.0)
    n = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in near]))
    near = [x * ((0.1 - 5e-7) / n) for x in near]
    cases = [
        ("clipped_max1", big, 1.0, 2.0),
        ("clipped_max0.1", big, 0.1, 2.0),
        ("not_clipped", small, 0.1, 2.0),
        ("just_under_max", near, 0.1, 2.0),
        ("none_grad", grads(0.7, none_at=1), 1.0, 2.0),
        ("inf_norm", grads(1.0), 0.1, math.inf),
        ("l1_norm", grads(0.3), 1.0, 1.0),
        ("f32_clipped", grads(1.0, dtype=torch.float32), 1.0, 2.0),
        ("f32_not_clipped", grads(0.01, dtype=torch.float32), 1.0, 2.0),
    ]
    out = []
    for name, gs, max_norm, norm_type in cases:
        params = []
        for s, gr in zip(SHAPES, gs):
            dtype = gr.dtype if gr is not None else gs[0].dtype
            p = torch.zeros(s, dtype=dtype, requires_grad=True)
            p.grad = None if gr is None else gr.clone()
            params.append(p)
        before = [None if p.grad is None else flat(p.grad) for p in params]
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type, foreach=False)
        out.append({
            "name": name, "dtype": "f64" if params[0].dtype == torch.float64 else "f32", "shapes": SHAPES,
            "max_norm": max_norm, "norm_type": "inf" if math.isinf(norm_type) else norm_type,
            "grads": before, "total_norm": float(total),
            "clipped": [None if p.grad is None else flat(p.grad) for p in params],
        })
    return {"torch_version": torch.__version__, "cases": out}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "optim"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, fn in [("adamw", adamw_fixture), ("sgd", sgd_fixture), ("schedules", schedules_fixture),
                     ("clip_grad", clip_fixture)]:
        path = os.path.join(args.out, name + ".json")
        with open(path, "w") as f:
            json.dump(fn(), f, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()

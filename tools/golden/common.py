"""Helpers shared by the golden-fixture scripts (not a model script itself: make_golden.py runs
every tools/golden/*.py, and this one does nothing when run)."""
import contextlib
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


class LoRALinear(torch.nn.Module):
    """PEFT's LoRA Linear (peft.tuners.lora.layer.Linear, default adapter): y = base(x) + (alpha/r) *
    lora_B(lora_A(dropout(x))), base frozen. Written out here because the reference environment
    has no peft; the parameter names are PEFT's (base_layer, lora_A.default, lora_B.default)."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base_layer = base
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(r, base.out_features, bias=False)})
        self.scale = alpha / r

    def forward(self, x):
        return self.base_layer(x) + self.lora_B["default"](self.lora_A["default"](x)) * self.scale


def inject_lora(model, targets, r, alpha, gen):
    """Wraps every Linear named in targets; A and B get random (non-zero) values so that both
    gradients are informative. Returns {name: LoRALinear}."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, torch.nn.Linear):
                lora = LoRALinear(child, r, alpha)
                with torch.no_grad():
                    lora.lora_A["default"].weight.copy_(torch.randn(lora.lora_A["default"].weight.shape, generator=gen) * 0.2)
                    lora.lora_B["default"].weight.copy_(torch.randn(lora.lora_B["default"].weight.shape, generator=gen) * 0.2)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}" if name else child_name] = lora
    return wrapped


def masked_mean(h, mask):
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)


def lora_fixture(model, targets, r, alpha, input_ids, attention_mask, gen, forward=None):
    """LoRA r/alpha on targets, loss = sum(masked_mean(last_hidden_state) * w). Returns tensors for
    the fixture (forward(model, ids, mask) -> last_hidden_state overrides the plain call): the A/B values, w, the loss and every A/B gradient (names as the model's own
    named_parameters give them, i.e. as strand names them)."""
    wrapped = inject_lora(model, targets, r, alpha, gen)
    out = {}
    hidden = model.config.hidden_size
    w = torch.randn(hidden, generator=gen)
    if forward is None:
        h = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    else:
        h = forward(model, input_ids, attention_mask)
    loss = (masked_mean(h, attention_mask) * w).sum()
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[f"lora.{name}"] = p.detach().clone()
            out[f"grad.{name}"] = p.grad.detach().clone()
    out["lora_loss_weight"] = w
    out["lora_loss"] = loss.detach().reshape(1)
    return out, len(wrapped)


class CudaAutocastLists(torch.overrides.TorchFunctionMode):
    """Applies (part of) CUDA autocast's fp32 list on the CPU. CPU autocast runs layer_norm and
    softmax in bf16; CUDA autocast (what bf16-mixed training on a GPU uses, and whose lists strand
    follows for these ops) runs them in f32. Under this mode the calls below get f32 operands while
    CPU autocast is on."""

    FP32 = {torch.nn.functional.layer_norm, torch.layer_norm, torch.nn.functional.softmax, torch.softmax,
            torch.Tensor.softmax, torch.nn.functional.log_softmax, torch.log_softmax, torch.Tensor.log_softmax,
            torch.nn.functional.mse_loss, torch.rsqrt, torch.Tensor.rsqrt, torch.pow, torch.Tensor.pow,
            torch.exp, torch.Tensor.exp}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FP32 and torch.is_autocast_enabled("cpu"):
            up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t  # noqa: E731
            with torch.autocast("cpu", enabled=False):
                return func(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
        return func(*args, **kwargs)


def rel_errors(got, ref):
    got, ref = got.double(), ref.double()
    return {"rel_l2": float((got - ref).norm() / ref.norm()), "max_abs": float((got - ref).abs().max())}


def bf16_fixture(make_model, targets, r, alpha, exp, forward=None):
    """bf16-mixed parity data for one golden model (exp: its expected.safetensors tensors, which
    hold the inputs and the LoRA values). The fp64 computation is the reference; PyTorch's bf16
    error is measured against it twice: plain CPU autocast ("cpu_autocast") and CPU autocast with
    CUDA's fp32 list ("cuda_lists", see CudaAutocastLists). Returns (tensors, metadata): the fp64
    last_hidden_state and LoRA A/B gradients, and each variant's relative L2 and max abs error of
    both, as JSON strings."""
    ids, mask = exp["input_ids"], exp["attention_mask"]

    def run(dtype, autocast, mode):
        model = make_model()
        inject_lora(model, targets, r, alpha, torch.Generator().manual_seed(0))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(exp["lora." + name])
        model = model.to(dtype)
        w = exp["lora_loss_weight"].to(dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), (mode or contextlib.nullcontext()):
            h = forward(model, ids, mask) if forward else model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = (masked_mean(h.to(dtype), mask) * w).sum()
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        return h.detach(), grads

    h64, g64 = run(torch.float64, False, None)
    flat64 = torch.cat([g.flatten() for g in g64.values()])
    meta = {}
    for variant, mode in (("cpu_autocast", None), ("cuda_lists", CudaAutocastLists())):
        h, g = run(torch.float32, True, mode)
        meta[variant] = {"last_hidden_state": rel_errors(h, h64),
                         "lora_grads": rel_errors(torch.cat([g[n].flatten() for n in g64]), flat64)}
    tensors = {"last_hidden_state_f64": h64, **{"grad_f64." + n: g for n, g in g64.items()}}
    return tensors, {"bf16_errors": json.dumps(meta), "torch": torch.__version__}


def write_bf16_fixtures(root, configs, make_model, forward=None, extra_meta=None):
    """bf16_fixture (LoRA r 4, alpha 8 on query/value) for each tiny config's folder under root,
    written to <folder>/bf16.safetensors. make_model(folder, config) builds the model."""
    from safetensors.torch import load_file, save_file
    for name, c in configs.items():
        folder = root / name
        exp = load_file(str(folder / "expected.safetensors"))
        tensors, meta = bf16_fixture(lambda: make_model(folder, c), ["query", "value"], 4, 8.0, exp, forward=forward)
        meta.update(extra_meta or {})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "bf16.safetensors"), metadata=meta)
        print(f"{name}: {meta['bf16_errors']}")


def write_meta(path: Path, meta: dict):
    path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    pass

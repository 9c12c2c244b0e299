"""Helpers shared by the golden-fixture scripts (not a model script itself: make_golden.py runs
every tools/golden/*.py, and this one does nothing when run)."""
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


def write_meta(path: Path, meta: dict):
    path.write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    pass

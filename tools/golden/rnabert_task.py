#!/usr/bin/env python3
"""Golden fixture for the whole DNA+RNA task, ModelGenerator-style: enformer-pytorch (train mode,
BatchNorm batch statistics, dropout off) and ModelGenerator's RNABertModel with PEFT-style LoRA
(r=4, alpha=8) on query/value, fused by ModelGenerator's MMFusionTokenAdapter(ConcatFusion,
MLPAdapter), MSE loss, exactly as MMSequenceRegression composes them.

Writes tests/fixtures/task/dna_rna_concat/:
  data/{train_1,validation,test}.tsv   three samples in the GenBio layout (labels already z-space)
  initial.safetensors                  the task's state under strand's names (backbone.model.*,
                                       backbone1.model.*, adapter.*)
  expected.safetensors                 preds, loss and grad.<name> of the first forward/backward;
                                       losses of a 5-step run (AdamW lr 1e-3 wd 0.01, HF cosine with
                                       warmup int(0.2*5) = 1, grad-norm clip 0.1) and final.<name>
Runs with transformers 4.38 first on PYTHONPATH (tools/make_golden.py sets it for rnabert*).
"""
import functools
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from enformer_pytorch import Enformer, EnformerConfig
from enformer_pytorch.data import str_to_one_hot
from modelgenerator.adapters.adapters import MLPAdapter
from modelgenerator.adapters.fusion import ConcatFusion, MMFusionTokenAdapter
from modelgenerator.huggingface_models.rnabert.configuration_rnabert import RNABertConfig
from modelgenerator.huggingface_models.rnabert.modeling_rnabert import RNABertModel
from modelgenerator.huggingface_models.rnabert.tokenization_rnabert import RNABertTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, inject_lora  # noqa: E402

OUT = FIXTURES / "task" / "dna_rna_concat"
ENFORMER = dict(dim=48, depth=1, heads=2, attn_dim_key=8, num_downsamples=3, dim_divisible_by=8, target_length=100,
                dropout_rate=0.0, attn_dropout=0.0, pos_dropout=0.0, output_heads=dict(human=5, mouse=3))
RNABERT = dict(vocab_size=16, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
               normalization_type="LayerNorm", layer_norm_eps=1e-5, rotary_percent=1.0, max_position_embeddings=1024,
               add_linear_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LABELS = 5


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    dna_model = Enformer(EnformerConfig(**ENFORMER))
    rna_model = RNABertModel(RNABertConfig(**RNABERT))
    with torch.no_grad():  # informative, non-default weights (norm weights near 1)
        for n, p in list(rna_model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.dim() > 1 else 0.2) +
                    (1.0 if n.endswith("ln.weight") or n.endswith("LayerNorm.weight") else 0.0))
    inject_lora(rna_model, ["query", "value"], 4, 8.0, gen)
    head = MMFusionTokenAdapter(
        LABELS, 96, 24, None, fusion=functools.partial(ConcatFusion, project_size=8),
        adapter=functools.partial(MLPAdapter, hidden_sizes=[16], dropout=0.0, dropout_in_middle=False))
    modules = {"backbone.model.": dna_model, "backbone1.model.": rna_model, "adapter.": head}
    for m in modules.values():
        m.train()

    g2 = torch.Generator().manual_seed(2)
    dna = ["".join("ACGT"[int(i)] for i in torch.randint(0, 4, (1024,), generator=g2)) for _ in range(3)]
    rna = ["".join("ACGT"[int(i)] for i in torch.randint(0, 4, (n,), generator=g2)) for n in (17, 9, 13)]
    labels = torch.randn(3, LABELS, generator=g2)
    import modelgenerator.huggingface_models.rnabert as rb
    tok = RNABertTokenizer(os.path.join(os.path.dirname(rb.__file__), "vocab.txt"), version="v2")

    def state():
        out = {}
        for prefix, m in modules.items():
            for k, v in m.state_dict().items():
                if k.startswith("_trunk."):  # enformer-pytorch's aliases of the same tensors
                    continue
                out[prefix + k] = v.detach().clone().contiguous()
        return out

    trainable = [(prefix + n, p) for prefix, m in modules.items() for n, p in m.named_parameters()
                 if p.requires_grad and not n.startswith("_trunk.")]

    def forward(order):
        enc = tok([rna[i] for i in order], padding=True, return_tensors="pt")
        h0 = dna_model(str_to_one_hot([dna[i] for i in order]), return_only_embeddings=True)
        m0 = torch.ones(h0.shape[:2])
        h1 = rna_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        preds = head(h0, m0, h1, enc["attention_mask"], None, None)
        return preds, torch.nn.functional.mse_loss(preds, labels[list(order)])

    initial = state()
    expected = {}
    preds, loss = forward([0, 1, 2])
    loss.backward()
    expected["preds"] = preds.detach().clone()
    expected["loss"] = loss.detach().reshape(1).clone()
    for n, p in trainable:
        if p.grad is not None:
            expected["grad." + n] = p.grad.detach().clone()
    # restore the BatchNorm running statistics the probe forward moved, and clear the gradients
    for prefix, m in modules.items():
        m.load_state_dict({k[len(prefix):]: v for k, v in initial.items() if k.startswith(prefix)}, strict=False)
        m.zero_grad(set_to_none=True)

    params = [p for _, p in trainable]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    total, warmup = 5, int(0.2 * 5)

    def lam(s):
        if s < warmup:
            return s / max(1, warmup)
        progress = (s - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    losses = []
    for _ in range(total):
        _, loss = forward([0, 1, 2])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    expected["losses"] = torch.tensor(losses, dtype=torch.float64)
    for n, p in trainable:
        expected["final." + n] = p.detach().clone()

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "data").mkdir(parents=True)
    save_file(initial, str(OUT / "initial.safetensors"))
    save_file(expected, str(OUT / "expected.safetensors"),
              metadata={"enformer": json.dumps(ENFORMER), "rnabert": json.dumps(RNABERT)})
    header = "transcript_id\t" + "\t".join(f"labels_{k}" for k in range(LABELS)) + "\trna_seq\tprotein_seq\tdna_seq\n"
    rows = "".join(f"T{i}\t" + "\t".join(repr(float(v)) for v in labels[i]) + f"\t{rna[i]}\t\t{dna[i]}\n" for i in range(3))
    for f in ("train_1.tsv", "validation.tsv", "test.tsv"):
        (OUT / "data" / f).write_text(header + rows)
    print(f"wrote {OUT}: loss {float(expected['loss']):.6f}, trajectory {[round(x, 6) for x in losses]}")


if __name__ == "__main__":
    main()

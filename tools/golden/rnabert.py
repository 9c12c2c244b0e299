#!/usr/bin/env python3
"""AIDO.RNA golden fixtures from ModelGenerator's RNABertModel / RNABertForMaskedLM, which need
transformers 4.38 (run with PYTHONPATH=<folder holding transformers==4.38.0>; make_golden.py does
that for scripts named rnabert*). Needs torch, safetensors, modelgenerator (--no-deps).

For each tiny random config, writes tests/fixtures/aido_rna/<name>/:
  model/      a real save_pretrained() folder (config.json + safetensors)
  expected.safetensors
              input_ids / attention_mask / special_tokens_mask from RNABertTokenizer(vocab.txt,
              version="v2") on metadata["sequences"] (ModelGenerator feeds the text unchanged),
              last_hidden_state (eval, fp32), and LoRA r=4 alpha=8 on query/value: A/B values, the
              loss weight w, the loss sum(masked_mean(last_hidden_state) * w) and every A/B gradient.

tiny_mlm  RNABertForMaskedLM (keys carry "bert." plus the cls.* MLM head), LayerNorm (as the
          published models), hidden 40, 4 heads, 2 layers, SwiGLU 56.
tiny_rms  RNABertModel, RMSNorm (RNABertConfig's default), hidden 30, 3 heads, 3 layers, SwiGLU 46,
          rotary_percent 0.6 (partial rotary: 6 of 10 head dims).
"""
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file

from modelgenerator.huggingface_models.rnabert.configuration_rnabert import RNABertConfig
from modelgenerator.huggingface_models.rnabert.modeling_rnabert import RNABertForMaskedLM, RNABertModel
from modelgenerator.huggingface_models.rnabert.tokenization_rnabert import RNABertTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import FIXTURES, lora_fixture  # noqa: E402

assert transformers.__version__.startswith("4.38"), f"needs transformers 4.38, found {transformers.__version__}"

SEQUENCES = ["ACGTACGTTAGCNACG", "GGCAUUAC", "ACGTacgtAC", "TTTTGGGGCCCCAAAATG"]

CONFIGS = {
    "tiny_mlm": dict(hidden_size=40, num_attention_heads=4, num_hidden_layers=2, intermediate_size=56,
                     normalization_type="LayerNorm", rotary_percent=1.0, mlm=True, seed=21),
    "tiny_rms": dict(hidden_size=30, num_attention_heads=3, num_hidden_layers=3, intermediate_size=46,
                     normalization_type="RMSNorm", rotary_percent=0.6, mlm=False, seed=22),
}


def main():
    import modelgenerator.huggingface_models.rnabert as rb
    vocab = os.path.join(os.path.dirname(rb.__file__), "vocab.txt")
    tok = RNABertTokenizer(vocab, version="v2")
    root = FIXTURES / "aido_rna"
    for name, c in CONFIGS.items():
        out = root / name
        if out.exists():
            shutil.rmtree(out)
        (out / "model").mkdir(parents=True)
        torch.manual_seed(c["seed"])
        cfg = RNABertConfig(vocab_size=16, hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                            num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
                            normalization_type=c["normalization_type"], rotary_percent=c["rotary_percent"],
                            max_position_embeddings=1024, layer_norm_eps=1e-5, add_linear_bias=True,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = RNABertForMaskedLM(cfg) if c["mlm"] else RNABertModel(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                is_norm_w = n.endswith("ln.weight") or n.endswith("LayerNorm.weight")
                p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.2) + (1.0 if is_norm_w else 0.0))
        model.eval()
        model.save_pretrained(out / "model")
        enc = tok(SEQUENCES, padding=True, return_special_tokens_mask=True, return_tensors="pt")
        base = model.bert if c["mlm"] else model
        with torch.no_grad():
            h = base(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        tensors = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                   "special_tokens_mask": enc["special_tokens_mask"], "last_hidden_state": h}
        gen = torch.Generator().manual_seed(100 + c["seed"])
        lora, n = lora_fixture(base, ["query", "value"], 4, 8.0, enc["input_ids"], enc["attention_mask"], gen)
        assert n == 2 * c["num_hidden_layers"]
        tensors.update(lora)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        save_file(tensors, str(out / "expected.safetensors"),
                  metadata={"sequences": json.dumps(SEQUENCES), "lora_r": "4", "lora_alpha": "8",
                            "reference": "ModelGenerator RNABertModel, transformers " + transformers.__version__})
        files = sorted(p.name for p in (out / "model").iterdir())
        print(f"{name}: {files}, hidden {tuple(h.shape)}, ids {enc['input_ids'].tolist()}")


if __name__ == "__main__":
    main()

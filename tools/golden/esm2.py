#!/usr/bin/env python3
"""ESM-2 golden fixtures from Hugging Face transformers' EsmModel / EsmForMaskedLM (the installed
version, 4.56.2 when these were made). Needs torch, transformers, safetensors.

For each tiny random config, writes tests/fixtures/esm2/<name>/:
  model/         a real save_pretrained() folder (config.json, weights, vocab.txt), loaded by the
                 C++ tests through the same --model-dir path users use
  expected.safetensors
                 input_ids / attention_mask / special_tokens_mask from EsmTokenizer on the
                 sequences in metadata["sequences"], last_hidden_state (eval, fp32; see forward()),
                 last_hidden_state_unmasked_embeddings (the plain transformers 4.56 call), and LoRA
                 r=4 alpha=8 on query/value: A/B values, the loss weight, the loss
                 sum(masked_mean(last_hidden_state) * w) and every A/B gradient.

tiny_mlm  EsmForMaskedLM (keys carry "esm.", plus lm_head and contact_head), hidden 36, 3 heads,
          2 layers, FFN 52; inv_freq rounded to fp16 values as in the published ESM-2 files.
tiny_base EsmModel (no prefix, with the unused pooler), hidden 30, 3 heads, 3 layers, FFN 40,
          sharded into several model-0000x-of-0000y.safetensors files with an index.
"""
import json
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import EsmConfig, EsmForMaskedLM, EsmModel, EsmTokenizer

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import FIXTURES, lora_fixture  # noqa: E402

VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
         "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>"]

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQ", "ACD<mask>EFGHIK", "LLVVGG", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"]

CONFIGS = {
    "tiny_mlm": dict(hidden_size=36, num_attention_heads=3, num_hidden_layers=2, intermediate_size=52,
                     mlm=True, fp16_inv_freq=True, shard=None, seed=11),
    "tiny_base": dict(hidden_size=30, num_attention_heads=3, num_hidden_layers=3, intermediate_size=40,
                      mlm=False, fp16_inv_freq=False, shard="40KB", seed=12),
}


def build(name, c):
    torch.manual_seed(c["seed"])
    cfg = EsmConfig(vocab_size=33, hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"],
                    num_attention_heads=c["num_attention_heads"], intermediate_size=c["intermediate_size"],
                    hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    max_position_embeddings=1026, layer_norm_eps=1e-5, position_embedding_type="rotary",
                    token_dropout=True, emb_layer_norm_before=False, pad_token_id=1, mask_token_id=32,
                    architectures=["EsmForMaskedLM" if c["mlm"] else "EsmModel"])
    model = EsmForMaskedLM(cfg) if c["mlm"] else EsmModel(cfg)
    # Random weights well away from the init (LayerNorms not 1/0, biases non-zero) so every
    # parameter matters.
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.2) + (1.0 if n.endswith("LayerNorm.weight") or "layer_norm" in n and n.endswith("weight") else 0.0))
        for n, b in model.named_buffers():
            if n.endswith("inv_freq") and c["fp16_inv_freq"]:
                b.copy_(b.half().float())
    model.eval()
    return model


def forward(model, input_ids, attention_mask):
    """EsmModel with its embeddings computed WITH the attention mask, as transformers 4.38 (the
    version ModelGenerator pins) and fair-esm do: token-dropout ratio over the real tokens, pad
    embeddings zeroed. transformers 4.56 calls the embeddings without the mask (ratio over the
    padded length, pads not zeroed), so a sequence's output depends on the batch's padding; that
    behaviour is kept as last_hidden_state_unmasked_embeddings."""
    emb = model.embeddings(input_ids=input_ids, attention_mask=attention_mask)
    return model(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state


def main():
    root = FIXTURES / "esm2"
    for name, c in CONFIGS.items():
        out = root / name
        if out.exists():
            shutil.rmtree(out)
        (out / "model").mkdir(parents=True)
        model = build(name, c)
        kw = {"max_shard_size": c["shard"]} if c["shard"] else {}
        model.save_pretrained(out / "model", **kw)
        (out / "model" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        tok = EsmTokenizer(str(out / "model" / "vocab.txt"))
        enc = tok(SEQUENCES, padding=True, return_special_tokens_mask=True, return_tensors="pt")
        base = model.esm if c["mlm"] else model
        with torch.no_grad():
            h = forward(base, enc["input_ids"], enc["attention_mask"])
            h_unmasked = base(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        tensors = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                   "special_tokens_mask": enc["special_tokens_mask"], "last_hidden_state": h,
                   "last_hidden_state_unmasked_embeddings": h_unmasked}
        gen = torch.Generator().manual_seed(100 + c["seed"])
        lora, n = lora_fixture(base, ["query", "value"], 4, 8.0, enc["input_ids"], enc["attention_mask"], gen,
                               forward=forward)
        assert n == 2 * c["num_hidden_layers"]
        tensors.update(lora)
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        save_file(tensors, str(out / "expected.safetensors"),
                  metadata={"sequences": json.dumps(SEQUENCES), "lora_r": "4", "lora_alpha": "8",
                            "reference": "transformers EsmModel " + __import__("transformers").__version__})
        files = sorted(p.name for p in (out / "model").iterdir())
        print(f"{name}: {files}, hidden {tuple(h.shape)}")


if __name__ == "__main__":
    main()

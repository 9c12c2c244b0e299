#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/torchmetrics.json: regression metrics computed by torchmetrics on
predictions and labels with many ties (labels floored at log2(1e-4) like zero-TPM transcripts, and
repeated prediction values), per output and averaged, as ModelGenerator computes them.

Run with an environment that has torch and torchmetrics (outside the repository):
    refenv/bin/pip install torch torchmetrics
    refenv/bin/python tools/make_metrics_fixtures.py
"""
import json
import math
from pathlib import Path

import torch
import torchmetrics as tm
from torchmetrics.regression import (MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef, R2Score,
                                     SpearmanCorrCoef)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metrics" / "torchmetrics.json"


def case(name, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    floor = math.log2(1e-4)
    labels[torch.rand(n, k, generator=g) < 0.3] = floor  # many exact ties at the zero-TPM floor
    preds = labels * 0.6 + torch.randn(n, k, generator=g, dtype=torch.float64)
    preds = torch.round(preds * 2) / 2  # ties among predictions too
    per = {}
    for key, metric in [("spearman", SpearmanCorrCoef(num_outputs=k)), ("pearson", PearsonCorrCoef(num_outputs=k)),
                        ("mse", MeanSquaredError(num_outputs=k)), ("mae", MeanAbsoluteError(num_outputs=k))]:
        metric = metric.to(torch.float64)
        metric.update(preds if k > 1 else preds[:, 0], labels if k > 1 else labels[:, 0])
        per[key] = torch.atleast_1d(metric.compute()).tolist()
    r2 = R2Score(multioutput="raw_values").to(torch.float64)
    r2.update(preds, labels)
    per["r2"] = torch.atleast_1d(r2.compute()).tolist()
    r2avg = R2Score(multioutput="uniform_average").to(torch.float64)
    r2avg.update(preds, labels)
    return {
        "name": name, "n": n, "k": k,
        "preds": preds.flatten().tolist(), "labels": labels.flatten().tolist(),
        "per_output": per,
        "r2_uniform_average": float(r2avg.compute()),
    }


def main():
    torch.set_default_dtype(torch.float64)  # metric states are created in the default dtype
    cases = [case("small", 9, 3, 0), case("ties", 64, 5, 1), case("wide", 40, 30, 2)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"torchmetrics": tm.__version__, "torch": torch.__version__, "cases": cases}, indent=0))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

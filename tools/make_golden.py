#!/usr/bin/env python3
"""Regenerates every model golden fixture under tests/fixtures/ from the reference implementations.

Runs each script in tools/golden/ (one per model). Each script documents the Python environment it
needs; in short (environments outside the repository):

    python3 -m venv refenv && refenv/bin/pip install torch transformers enformer-pytorch safetensors
    refenv/bin/pip install --no-deps modelgenerator
    refenv/bin/pip install --target tf438 --no-deps transformers==4.38.0 tokenizers==0.15.2 huggingface-hub==0.20.3

    refenv/bin/python tools/make_golden.py [--tf438 PATH] [model ...]

The AIDO.RNA (RNABert) script runs with PYTHONPATH=<tf438> because ModelGenerator's RNABert needs
transformers 4.38; this dispatcher sets that for scripts named rnabert*.py.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="script names in tools/golden (default: all)")
    ap.add_argument("--tf438", default=os.environ.get("STRAND_TF438", ""),
                    help="folder holding transformers==4.38.0 (for rnabert)")
    args = ap.parse_args()
    scripts = sorted((HERE / "golden").glob("*.py"))
    if args.models:
        scripts = [s for s in scripts if s.stem in args.models]
        missing = set(args.models) - {s.stem for s in scripts}
        if missing:
            print(f"make_golden: no script for {sorted(missing)} in {HERE / 'golden'}", file=sys.stderr)
            return 2
    for script in scripts:
        env = dict(os.environ)
        if script.stem.startswith("rnabert"):
            if not args.tf438:
                print("make_golden: rnabert needs --tf438 PATH (transformers 4.38)", file=sys.stderr)
                return 2
            env["PYTHONPATH"] = args.tf438 + os.pathsep + env.get("PYTHONPATH", "")
        print(f"== {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script)], env=env)
        if rc != 0:
            print(f"make_golden: {script.name} failed with exit code {rc}", file=sys.stderr)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())

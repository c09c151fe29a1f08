"""Write tests/golden/shipped_models.npz: what the shipped default separator and transcriber output
on the first seconds of the demo song, and how well they do there (tests/test_golden.py checks
both). Rerun after shipping a model, and say in the commit why the outputs moved:

    .venv/bin/python scripts/make_goldens.py
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "tests", "golden", "shipped_models.npz")


def main() -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_golden import SECONDS, measure

    res = measure()
    meta = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
    arrays = {k: v for k, v in res.items() if isinstance(v, np.ndarray)}
    np.savez_compressed(OUT, meta=json.dumps(meta), **arrays)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB, {SECONDS} s of the demo song): {json.dumps(meta)}")


if __name__ == "__main__":
    main()

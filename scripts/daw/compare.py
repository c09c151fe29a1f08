"""make daw-test, last step: a DAW's bounce against `dawsep separate`'s stem of the same audio,
and two bounces against each other. Exit status 1 past the tolerance.

    python scripts/daw/compare.py OFFLINE.wav BOUNCE.wav [BOUNCE2.wav ...] [--atol 1e-4]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import soundfile as sf


def read(path: str) -> np.ndarray:
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    return x.T


def sdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    err = float(((ref.astype(np.float64) - est) ** 2).sum())
    return float("inf") if err == 0 else 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / err)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("offline")
    ap.add_argument("bounces", nargs="+")
    ap.add_argument("--atol", type=float, default=1e-4)
    a = ap.parse_args()
    ref = read(a.offline)
    bounces = [read(b) for b in a.bounces]
    report = {"offline": a.offline, "samples": ref.shape[1], "atol": a.atol, "bounces": []}
    ok = True
    for path, y in zip(a.bounces, bounces):
        same_shape = y.shape == ref.shape
        diff = float(np.abs(y - ref).max()) if same_shape else float("inf")
        ok &= same_shape and diff <= a.atol
        report["bounces"].append({"file": path, "shape": list(y.shape), "max_abs_diff": diff,
                                  "sdr_vs_offline_db": sdr_db(ref, y) if same_shape else None,
                                  "peak": float(np.abs(y).max())})
    for y in bounces[1:]:
        d = float(np.abs(y - bounces[0]).max()) if y.shape == bounces[0].shape else float("inf")
        report.setdefault("bounce_vs_first_max_abs_diff", []).append(d)
        ok &= d <= a.atol
    report["ok"] = bool(ok)
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

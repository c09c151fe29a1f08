"""Score the demo's separated stems against the demo song's true stems (SDR per stem, dB).

Usage: python scripts/demo_score.py demo-out/stems/demo_song demo/demo_song.reference
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from dawsep.metrics import STEMS, sdr_song


def main(est_dir: str, ref_dir: str) -> int:
    rows = []
    for stem in STEMS:
        ref_path, est_path = Path(ref_dir) / f"{stem}.flac", Path(est_dir) / f"{stem}.flac"
        if not (ref_path.exists() and est_path.exists()):
            continue
        ref, sr = sf.read(ref_path, dtype="float32", always_2d=True)
        est, _ = sf.read(est_path, dtype="float32", always_2d=True)
        n = min(len(ref), len(est))
        rows.append((stem, sdr_song(ref[:n].T, est[:n].T, sr)))
    mix, sr = sf.read(Path(ref_dir).parent / "demo_song.flac", dtype="float32", always_2d=True)
    print("demo: SDR of each separated stem against the true stem (dB; the mixture itself would score):")
    for stem, sdr in rows:
        ref, _ = sf.read(Path(ref_dir) / f"{stem}.flac", dtype="float32", always_2d=True)
        n = min(len(ref), len(mix))
        mix_sdr = sdr_song(ref[:n].T, mix[:n].T, sr)
        print(f"  {stem:7s} {sdr:+6.2f}   (mixture {mix_sdr:+6.2f})")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

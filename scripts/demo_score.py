"""Score the demo's separated stems against the demo song's true stems (SDR per stem, dB) and,
given the piano preset's MIDI, its notes against the true piano part (onset within 50 ms).

Usage: python scripts/demo_score.py demo-out/stems/demo_song demo/demo_song.reference [piano.mid]
"""
from __future__ import annotations

import sys
from pathlib import Path

import soundfile as sf

from dawsep.metrics import STEMS, match_times, sdr_song


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


def onsets(path: str) -> list[tuple[float, int]]:
    import mido

    t, out = 0.0, []
    for msg in mido.MidiFile(path):  # delta times in seconds, tempo applied
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            out.append((t, msg.note))
    return out


def note_f1(ref_mid: str, est_mid: str, tol: float = 0.05) -> tuple[float, int, int]:
    """Onset-only note F1 (same pitch, onsets within ``tol``; greedy in time, per pitch)."""
    ref, est = onsets(ref_mid), onsets(est_mid)
    matched = sum(match_times(sorted(t for t, p in ref if p == pitch), sorted(t for t, p in est if p == pitch), tol)
                  for pitch in {p for _, p in ref})
    p = matched / len(est) if est else 0.0
    r = matched / len(ref) if ref else 0.0
    return (2 * p * r / (p + r) if p + r else 0.0), len(ref), len(est)


if __name__ == "__main__":
    code = main(*sys.argv[1:3])
    if len(sys.argv) > 3:
        f1, n_ref, n_est = note_f1(str(Path(sys.argv[2]) / "piano.mid"), sys.argv[3])
        print(f"demo: piano MIDI from the piano preset: note F1 {f1:.3f} (onsets within 50 ms; "
              f"{n_est} notes written, {n_ref} played)")
    sys.exit(code)

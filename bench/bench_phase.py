"""Phase options of the default separator (`dawsep separate --phase`): SDR per stem on held-out
test songs beside the mixture and the IRM oracle, and what each option costs on 2 cores.

Quality: the packaged default model through `Separator("default", phase=...)` (the runtime path:
chunking, cross-fades and the per-chunk post-processing of `dawsep/phase.py`), scored with
`dawsep.metrics` like the separation section. Speed: wall time of `Separator.separate_array` on a
60 s excerpt of the same test songs, ONNX Runtime on 2 threads (the post-processing is numpy on
one), best of two runs.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from bench.bench_separation import STEMS, _data_root, _row

# (phase, iterations) rows; None: the method's default
OPTIONS = [("mixture", None), ("griffin-lim", 0), ("griffin-lim", 8), ("griffin-lim", 16), ("griffin-lim", 32),
           ("wiener", 1), ("wiener", 2)]
QUICK_OPTIONS = [("mixture", None), ("griffin-lim", None), ("wiener", None)]


def _wall(sep, x: np.ndarray, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sep.separate_array(x)
        best = min(best, time.perf_counter() - t)
    return best


def run(quick: bool = False, songs: int | None = None, seconds: float | None = None,
        excerpt_seconds: float | None = None) -> str:
    """``songs`` test songs (12; quick 3) of ``seconds`` each (30; quick 10), evenly spaced over
    the split; the speed on an ``excerpt_seconds`` excerpt (60; quick 20)."""
    from dawsep.phase import DEFAULT_ITERATIONS, HOP, N_FFT
    from dawsep.separate import Separator
    from dawsep.train.evaluate import baselines, evaluate_model, test_songs

    n_songs = songs or (3 if quick else 12)
    seconds = seconds or (10.0 if quick else 30.0)
    excerpt_s = excerpt_seconds or (20.0 if quick else 60.0)
    repeats = 1 if quick else 2
    data = test_songs(_data_root(), limit=n_songs, seconds=seconds)
    total_min = sum(s.shape[-1] for _, s in data) / 44100 / 60
    excerpt = np.concatenate([s.sum(0) for _, s in data], axis=1)
    while excerpt.shape[1] < excerpt_s * 44100:  # fewer or shorter songs than the excerpt: loop them
        excerpt = np.concatenate([excerpt, excerpt], axis=1)
    excerpt = excerpt[:, :int(excerpt_s * 44100)]

    info = Separator("default", threads=1).info
    arch = info.architecture
    base = baselines(data, arch.get("n_fft", 2048), arch.get("hop", 1024), arch.get("n_bins", 768))
    lines = ["## Phase options", "",
             f"`dawsep separate --phase` on the packaged default model (`{info.name}`, {arch.get('arch')}). "
             f"Quality on {len(data)} held-out test songs, the first {seconds:.0f} s of each ({total_min:.1f} min; "
             "evenly spaced over the test split: MuseScore General timbres and reserved composers), SDR in dB as "
             "in the separation section (`dawsep.metrics`, median over 1 s chunks, then over songs). Speed: "
             f"`Separator.separate_array` on a {excerpt_s:.0f} s excerpt of the same songs, 2 ONNX Runtime threads, "
             f"best of {repeats}; the CPU was shared with model training, so read the speeds as relative. "
             f"Post-processing STFT: n_fft {N_FFT}, hop {HOP}, per model chunk "
             f"({info.segment_samples / 44100:.1f} s). Defaults: Griffin-Lim "
             f"{DEFAULT_ITERATIONS['griffin-lim']} iterations, Wiener {DEFAULT_ITERATIONS['wiener']} EM iteration.",
             "", "| estimate | " + " | ".join(STEMS) + " | mean | speed on 2 cores |",
             "|---|" + "---|" * (len(STEMS) + 2),
             _row("mixture (floor)", base["mixture"])]
    walls = {}
    for phase, iterations in (QUICK_OPTIONS if quick else OPTIONS):
        res = evaluate_model("default", data, threads=2, phase=phase, phase_iterations=iterations)
        sep = Separator("default", threads=2, phase=phase, phase_iterations=iterations)
        wall = _wall(sep, excerpt, repeats)
        walls[(phase, sep.phase_iterations)] = wall
        label = f"`--phase {phase}`" + ("" if phase == "mixture" else f" ({sep.phase_iterations} it.)")
        note = f"{excerpt_s / wall:.1f}x real time"
        if phase != "mixture":
            extra = wall - walls[("mixture", 0)]
            note += f"; +{extra / excerpt_s * 60:.1f} s per minute of audio ({wall / walls[('mixture', 0)]:.1f}x the time)"
        lines.append(_row(label, res, note))
    lines.append(_row(f"IRM oracle (n_fft {arch.get('n_fft')}, {arch.get('n_bins')} bins)", base["irm"],
                      "masking upper bound"))
    lines += ["", "Command: `python -m bench.run --only phase` (corpus from `make data`, `DAWSEP_DATA` to point "
              "elsewhere); `bench.bench_phase.run(songs=..., seconds=...)` for another sample."]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv))

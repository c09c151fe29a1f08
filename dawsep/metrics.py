"""Separation metrics in numpy (runtime-safe: no torch), shared by training, bench and demo.

SDR as museval chunks it: per stem and song, 10·log10(|s|²/|s − ŝ|²) on 1 s chunks, median
over the chunks whose reference is not silent; then median over songs. This is the MDX
challenges' energy-ratio SDR with museval's chunking, without BSSEval's distortion filter.
"""
from __future__ import annotations

import numpy as np

STEMS = ("piano", "bass", "drums", "guitar", "other")


def sdr_song(ref: np.ndarray, est: np.ndarray, sr: int = 44100, eps: float = 1e-10) -> float:
    """SDR (dB) of one stem of one song, ``ref, est (channels, samples)``; NaN if the reference
    is silent throughout (no chunk above -100 dB)."""
    n = ref.shape[-1] // sr
    r = ref[..., : n * sr].reshape(ref.shape[0], n, sr).astype(np.float64)
    e = est[..., : n * sr].reshape(est.shape[0], n, sr).astype(np.float64)
    num = (r ** 2).sum(axis=(0, 2))
    den = ((r - e) ** 2).sum(axis=(0, 2))
    ok = num > eps * r.shape[0] * sr
    if not ok.any():
        return float("nan")
    return float(np.median(10 * np.log10((num[ok] + eps) / (den[ok] + eps))))


def sdr_stems(ref: np.ndarray, est: np.ndarray, sr: int = 44100) -> list[float]:
    """``ref, est (stems, channels, samples)`` -> SDR per stem."""
    return [sdr_song(ref[i], est[i], sr) for i in range(len(ref))]


def summarize(per_song: list[list[float]], stems=STEMS) -> dict:
    """Median over songs per stem, and their mean (the model-selection score)."""
    arr = np.array(per_song, dtype=np.float64).reshape(-1, len(stems))
    med = {s: (float(np.nanmedian(arr[:, i])) if np.isfinite(arr[:, i]).any() else float("nan"))
           for i, s in enumerate(stems)}
    return {"sdr": med, "mean": float(np.nanmean(list(med.values())))}


def match_times(ref, est, tol: float) -> int:
    """Size of a maximum matching of two sorted 1-D time lists within ``tol`` (greedy is optimal
    for intervals on a line): the onset matching of note F1, one pitch at a time."""
    i = j = m = 0
    while i < len(ref) and j < len(est):
        if abs(ref[i] - est[j]) <= tol:
            m, i, j = m + 1, i + 1, j + 1
        elif est[j] < ref[i]:
            j += 1
        else:
            i += 1
    return m

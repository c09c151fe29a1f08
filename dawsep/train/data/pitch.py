"""First-partial pitch measurement of recorded piano-like tones (:func:`measure_pitch`, numpy only).

What a recording really sounds at, whatever its label says: the Iowa Steinway files (``iowa``) and
the Freepats piano patches (``timidity``) are mislabelled or tens of cents off their stated pitch.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["measure_pitch"]


def _spectrum(x: np.ndarray, sr: int, start_s: float, length_s: float) -> tuple[np.ndarray, int]:
    a = min(int(start_s * sr), max(0, len(x) - int(length_s * sr)))
    seg = x[a:a + int(length_s * sr)]
    seg = seg * np.hanning(len(seg))
    nfft = 1 << int(np.ceil(np.log2(max(len(seg), 16) * 4)))
    return np.abs(np.fft.rfft(seg, nfft)), nfft


def _peak_hz(spec: np.ndarray, nfft: int, sr: int, lo_hz: float, hi_hz: float) -> tuple[float, float]:
    """Parabolic-interpolated (log magnitude) peak in [lo_hz, hi_hz]: (frequency, magnitude)."""
    i0 = max(1, int(lo_hz * nfft / sr))
    i1 = min(len(spec) - 2, int(math.ceil(hi_hz * nfft / sr)))
    if i1 < i0:
        return float("nan"), 0.0
    k = i0 + int(np.argmax(spec[i0:i1 + 1]))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-30)
    den = a - 2 * b + c
    d = 0.5 * (a - c) / den if den < 0 else 0.0
    return (k + d) * sr / nfft, float(spec[k])


def measure_pitch(x: np.ndarray, sr: int, nominal: float, start_s: float = 0.2) -> float:
    """MIDI pitch (float) of the first partial of a piano-like tone labelled ``nominal``.

    A harmonic sum over candidates within +-3 semitones of the label (partials max-pooled +-25
    cents, tolerating string stiffness) finds the note; a stiff-string fit of its partials
    (f_n = n f0 sqrt(1 + B n^2)) locates the first partial even when it is 40 dB down (bass
    strings); the parabolic peak of the spectrum there is the answer. Segment: ``start_s`` on,
    60 periods long (0.4-2.5 s).
    """
    f_nom = 440.0 * 2 ** ((nominal - 69) / 12)
    spec, nfft = _spectrum(np.asarray(x, np.float64), sr, start_s, min(2.5, max(0.4, 60 / f_nom)))
    smax = float(spec.max())
    if smax <= 0:
        return float(nominal)
    c_nom = int(round(1200 * np.log2(f_nom / 20.0)))
    cand = np.arange(c_nom - 300, c_nom + 301)
    n_part = max(1, min(8, int(16000 / (f_nom * 2 ** 0.25))))
    # spectrum in dB on a 1-cent grid from 20 Hz (max of the bins in each cell), max-pooled +-25 cents
    top = min(len(spec) - 1, int(20.0 * 2 ** ((cand[-1] + 1200 * math.log2(n_part) + 60) / 1200) * nfft / sr) + 2)
    db = 20 * np.log10(spec[1:top] / smax + 1e-12)
    cents = 1200 * np.log2(np.arange(1, top) * sr / nfft / 20.0)
    first = np.searchsorted(cents, np.arange(0, int(cents[-1])))
    cell = np.maximum.reduceat(db, np.minimum(first, len(db) - 1))
    pool = cell.copy()
    for s in range(1, 26):
        pool[s:] = np.maximum(pool[s:], cell[:-s])
        pool[:-s] = np.maximum(pool[:-s], cell[s:])
    score = np.zeros(len(cand))
    for n in range(1, n_part + 1):
        j = cand + int(round(1200 * np.log2(n)))
        ok = (j >= 0) & (j < len(pool))
        score[ok] += np.maximum(pool[j[ok]] + 60.0, 0.0)
    f_c = 20.0 * 2 ** (cand[int(np.argmax(score))] / 1200)
    ns, fs, ws, stiff, f1 = [], [], [], 0.0, f_c
    for n in range(1, n_part + 1):
        guess = n * f_c * math.sqrt(1 + stiff * n * n)
        f, amp = _peak_hz(spec, nfft, sr, guess * 2 ** (-30 / 1200), guess * 2 ** (30 / 1200))
        if not amp >= smax * 10 ** (-50 / 20):
            continue
        ns.append(n)
        fs.append(f)
        ws.append(amp)
        if len(ns) >= 2:
            nn, w = np.array(ns, float), np.array(ws)
            coef = np.linalg.lstsq(np.stack([np.ones_like(nn), nn ** 2], 1) * w[:, None],
                                   (np.array(fs) / nn) ** 2 * w, rcond=None)[0]
            stiff = max(0.0, coef[1] / coef[0]) if coef[0] > 0 else 0.0
            f1 = math.sqrt(max(coef[0] * (1 + stiff), 1e-9))
        else:
            f1 = f / n
    f, amp = _peak_hz(spec, nfft, sr, f1 * 2 ** (-35 / 1200), f1 * 2 ** (35 / 1200))
    if amp >= smax * 10 ** (-65 / 20) and np.isfinite(f):
        f1 = f
    return 69 + 12 * math.log2(f1 / 440.0)

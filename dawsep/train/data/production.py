"""Random per-stem production (pedalboard) and the mix.

The mixture is built in the integer domain: every stem is quantised to the 24-bit grid first and
the mixture is the integer sum of the quantised stems, so what is written to disk satisfies
``mixture == sum(stems)`` exactly (the tests allow 1e-4), with no stem or mixture clipping.
"""
from __future__ import annotations

import numpy as np
import pedalboard as pb

from dawsep.train.data.score import SAMPLE_RATE, STEMS

FULL_SCALE_24 = 1 << 23


def _u(rng, a, b):
    return float(rng.uniform(a, b))


def random_chain(rng: np.random.Generator, stem: str, program: int) -> list[tuple[str, dict]]:
    """A random plugin chain for one stem as (pedalboard class name, parameters): data, not code."""
    chain: list[tuple[str, dict]] = []
    mild = stem == "piano"
    if stem != "bass" and rng.random() < 0.5:
        chain.append(("HighpassFilter", {"cutoff_frequency_hz": _u(rng, 20, 120 if not mild else 60)}))
    if rng.random() < 0.6:
        g = 4.0 if mild else 7.0
        chain.append(("LowShelfFilter", {"cutoff_frequency_hz": _u(rng, 80, 300), "gain_db": _u(rng, -g, g), "q": 0.707}))
    if rng.random() < 0.6:
        g = 4.0 if mild else 7.0
        chain.append(("HighShelfFilter", {"cutoff_frequency_hz": _u(rng, 2500, 9000), "gain_db": _u(rng, -g, g), "q": 0.707}))
    for _ in range(int(rng.integers(0, 3))):
        chain.append(("PeakFilter", {"cutoff_frequency_hz": float(np.exp(rng.uniform(np.log(150), np.log(8000)))),
                                     "gain_db": _u(rng, -6, 6), "q": _u(rng, 0.5, 3.0)}))
    if rng.random() < (0.15 if mild else 0.25):
        chain.append(("LowpassFilter", {"cutoff_frequency_hz": _u(rng, 5000 if mild else 3500, 16000)}))
    if stem == "guitar" and program not in (29, 30) and rng.random() < 0.4:
        chain.append(("Distortion", {"drive_db": _u(rng, 6, 30)}))
    if stem == "bass" and rng.random() < 0.1:
        chain.append(("Distortion", {"drive_db": _u(rng, 3, 15)}))
    if rng.random() < {"drums": 0.65, "bass": 0.6, "piano": 0.3}.get(stem, 0.45):
        chain.append(("Compressor", {"threshold_db": _u(rng, -30, -8), "ratio": _u(rng, 1.5, 6.0),
                                     "attack_ms": _u(rng, 1, 30), "release_ms": _u(rng, 40, 300)}))
    if stem in ("guitar", "other") or (stem == "piano" and program in (4, 5)):
        if rng.random() < 0.3:
            chain.append(("Chorus", {"rate_hz": _u(rng, 0.3, 2.5), "depth": _u(rng, 0.1, 0.5), "mix": _u(rng, 0.2, 0.6),
                                     "centre_delay_ms": _u(rng, 5, 12), "feedback": 0.0}))
        if rng.random() < 0.15:
            chain.append(("Phaser", {"rate_hz": _u(rng, 0.2, 1.5), "depth": _u(rng, 0.3, 0.8), "mix": _u(rng, 0.2, 0.5)}))
        if rng.random() < 0.2:
            chain.append(("Delay", {"delay_seconds": _u(rng, 0.12, 0.45), "feedback": _u(rng, 0.1, 0.4), "mix": _u(rng, 0.1, 0.3)}))
    if rng.random() < 0.65:
        chain.append(("Reverb", {"room_size": _u(rng, 0.1, 0.9), "damping": _u(rng, 0.2, 0.8),
                                 "wet_level": _u(rng, 0.04, 0.35), "dry_level": _u(rng, 0.7, 1.0), "width": _u(rng, 0.5, 1.0)}))
    return chain


def apply_chain(audio: np.ndarray, chain: list[tuple[str, dict]]) -> np.ndarray:
    if not chain or not audio.any():
        return audio
    board = pb.Pedalboard([getattr(pb, name)(**params) for name, params in chain])
    out = board(audio, SAMPLE_RATE)
    return np.nan_to_num(out.astype(np.float32, copy=False))


def rms_db(x: np.ndarray) -> float:
    """Loudness of the active part of a stem (silence does not count)."""
    mono = np.abs(x).max(axis=0)
    n = len(mono) // 2048 * 2048
    if n == 0:
        return -120.0
    frames = (x[:, :n].reshape(x.shape[0], -1, 2048) ** 2).mean(axis=(0, 2))
    active = frames[frames > 1e-8]
    if active.size == 0:
        return -120.0
    return float(10 * np.log10(active.mean()))


GAIN_DB = {"piano": (-10.0, 4.0), "bass": (-6.0, 3.0), "drums": (-6.0, 3.0), "guitar": (-9.0, 3.0), "other": (-9.0, 3.0)}


def mix(stems: dict[str, np.ndarray], rng: np.random.Generator, peak: float | None = None,
        bits: int = 24, gains: dict[str, float] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Level the stems (-20 dB active RMS, then a random gain), scale so nothing clips, quantise.

    Returns integer stems, the integer mixture (their exact sum) and the gains used (dB).
    """
    full = 1 << (bits - 1)
    gains_db, raw = {}, {}
    scaled = {}
    for name in STEMS:
        x = stems[name].astype(np.float64)
        level = rms_db(x)
        if level <= -119:
            gains_db[name] = 0.0
            scaled[name] = np.zeros_like(x)
            continue
        g = raw[name] = gains[name] if gains and name in gains else _u(rng, *GAIN_DB[name])
        gains_db[name] = round(-20.0 - level + g, 3)
        scaled[name] = x * 10 ** (gains_db[name] / 20)
    total = sum(scaled.values())
    peaks = [np.abs(total).max()] + [np.abs(v).max() for v in scaled.values()]
    target = peak if peak is not None else _u(rng, 0.35, 0.95)
    k = target / max(max(peaks), 1e-9)
    q = {}
    for name in STEMS:
        q[name] = np.clip(np.round(scaled[name] * k * full), -full, full - 1).astype(np.int32)
    mixture = sum(q[name].astype(np.int64) for name in STEMS)
    if np.abs(mixture).max() >= full:  # only possible by rounding at a 0.99+ peak: scale down and redo
        return mix(stems, rng, peak=target * 0.98, bits=bits, gains=raw)
    gains_db = {n: round(gains_db[n] + 20 * np.log10(k), 3) if scaled[n].any() else None for n in STEMS}
    return q, mixture.astype(np.int32), {"stem_gain_db": gains_db, "peak": round(float(target), 4)}

"""Procedurally synthesised voices: an extra, endlessly varied "soundfont" for bass/guitar/other.

Each voice draws a random harmonic spectrum (tilt, odd/even balance, formant bumps), a second,
darker spectrum it fades to, an envelope (plucked or sustained), vibrato and unison detune. Notes
play a one-cycle wavetable through a phase accumulator, so a part costs about one interpolation
per output sample. Piano parts never use these: a "piano" stem must sound like a piano.
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data.score import SAMPLE_RATE, Note

TABLE = 2048


def random_voice(rng: np.random.Generator, stem: str) -> dict:
    """Voice parameters (plain data, recorded in meta.json)."""
    plucked = stem in ("bass", "guitar") or rng.random() < 0.25
    return {
        "tilt_db_per_octave": float(rng.uniform(-14, -3)),
        "odd_even": float(rng.uniform(-1, 1)),  # >0 favours odd harmonics (hollow), <0 even
        "formant_hz": float(np.exp(rng.uniform(np.log(300), np.log(3500)))),
        "formant_db": float(rng.uniform(0, 12)),
        "dark_tilt_db": float(rng.uniform(2, 10)),  # how much darker the sustain gets
        "plucked": bool(plucked),
        "attack_s": float(rng.uniform(0.002, 0.01) if plucked else rng.uniform(0.01, 0.25)),
        "decay_s": float(rng.uniform(0.15, 1.5)),
        "sustain": float(rng.uniform(0.0, 0.3) if plucked else rng.uniform(0.5, 1.0)),
        "release_s": float(rng.uniform(0.03, 0.4)),
        "vibrato_hz": float(rng.uniform(4, 6.5)),
        "vibrato_cents": float(0 if plucked else rng.uniform(0, 18)),
        "unison_cents": float(rng.uniform(0, 12)),
        "noise": float(rng.uniform(0, 0.04) if plucked else 0.0),
    }


def _tables(v: dict, f0: float) -> tuple[np.ndarray, np.ndarray]:
    n_harm = max(1, min(64, int(SAMPLE_RATE / 2 / f0) - 1))
    k = np.arange(1, n_harm + 1)
    octs = np.log2(k)
    db = v["tilt_db_per_octave"] * octs
    db += np.where(k % 2 == 1, 1, -1) * v["odd_even"] * 6 * (k > 1)
    db += v["formant_db"] * np.exp(-0.5 * (np.log2(k * f0 / v["formant_hz"]) / 0.5) ** 2)
    amp_b = 10 ** (db / 20)
    amp_d = 10 ** ((db - v["dark_tilt_db"] * octs) / 20)
    ph = np.arange(TABLE) / TABLE
    basis = np.sin(2 * np.pi * np.outer(k, ph))
    tb, td = amp_b @ basis, amp_d @ basis
    tb, td = tb / (np.abs(tb).max() + 1e-9), td / (np.abs(td).max() + 1e-9)
    return np.append(tb, tb[0]).astype(np.float32), np.append(td, td[0]).astype(np.float32)


def render_notes(notes: list[Note], n_samples: int, v: dict, seed: int) -> np.ndarray:
    """(2, n_samples) float32: the notes played by voice ``v``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((2, n_samples), np.float32)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for n in notes:
        i0 = int(round(n.start * SAMPLE_RATE))
        hold = max(1, int(round((n.end - n.start) * SAMPLE_RATE)))
        rel = int(v["release_s"] * SAMPLE_RATE)
        length = min(hold + rel, n_samples - i0)
        if length <= 0:
            continue
        f0 = 440.0 * 2 ** ((n.pitch - 69) / 12)
        if n.pitch not in cache:
            cache[n.pitch] = _tables(v, f0)
        tb, td = cache[n.pitch]
        t = (np.arange(length) / SAMPLE_RATE).astype(np.float32)
        att, dec = v["attack_s"], v["decay_s"]
        env = np.where(t < att, t / att, v["sustain"] + (1 - v["sustain"]) * np.exp(-(t - att) / dec))
        if hold < length:
            env[hold:] *= np.exp(-np.arange(length - hold) / max(1.0, rel / 5))
        env = (env * (n.velocity / 127) ** 1.5).astype(np.float32)
        bright = np.exp(-t / (dec * 0.7)).astype(np.float32)  # fades bright -> dark
        vib = v["vibrato_cents"] * np.sin(2 * np.pi * v["vibrato_hz"] * t) * np.clip(t / 0.3, 0, 1)
        for ch, det in enumerate((-v["unison_cents"] / 2, v["unison_cents"] / 2)):
            freq = f0 * 2 ** ((vib + det) / 1200)
            phase = ((np.cumsum(freq / SAMPLE_RATE) + rng.random()) % 1.0 * TABLE).astype(np.float32)
            idx = phase.astype(np.int32)
            frac = phase - idx
            a = tb[idx] + frac * (tb[idx + 1] - tb[idx])  # linear interpolation, tables padded by one
            b = td[idx] + frac * (td[idx + 1] - td[idx])
            sig = b + bright * (a - b)
            if v["noise"]:
                sig[: int(0.02 * SAMPLE_RATE)] += v["noise"] * rng.standard_normal(min(length, int(0.02 * SAMPLE_RATE))).astype(np.float32) * 10
            out[ch, i0: i0 + length] += 0.2 * env * sig
    return out

"""Rendering a part with a sample set (:func:`render_part`): voices, dampers, chokes, numpy only.

One vectorised gather per note: onset exactly at ``round(start * SAMPLE_RATE)`` (files are trimmed
to their onset when decoded, in ``samples``), pitch by linear interpolation, velocity by layer choice
and gain, an exponential damper fade after key-up (or pedal-up), re-struck keys and hi-hat choke
groups cut with a short fade. The sample sets come from ``iowa``, ``hydrogen`` and ``oneshot``. No
torch here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dawsep.train.data.samples import SampleSet, Zone, decoded_pcm
from dawsep.train.data.score import SAMPLE_RATE, Note

__all__ = ["PlayParams", "render_part"]

CUT_S = 0.02               # re-struck key / choke: 60 dB fade over this
LAYERED_RANGE_FRACTION = 1 / 3   # multi-layer zones: this share of velocity_range_db (layers carry the rest)
FC_MIN_HZ, FC_MAX_HZ, FC_BYPASS_HZ = 500.0, 20000.0, 18000.0  # single-layer brightness low-pass
DRUM_VOICES_PER_KEY = 4    # a 5th overlapping hit of one drum key steals the oldest voice ...
DRUM_STEAL_S = 0.1         # ... with this 60-dB fade (keeps 12-s cymbal tails from piling up)


@dataclass(frozen=True)
class PlayParams:
    shift_semitones: int = 0          # melodic: play key k from the sample of key k+shift, resampled (|shift| <= 2)
    velocity_gamma: float = 1.0       # velocity response curve: x = ((v - 1) / 126) ** gamma
    velocity_range_db: float = 30.0   # single-layer instruments: dB between velocity 1 and 127
    brightness: float = 1.0           # single-layer: one-pole low-pass, cutoff 500 Hz..20 kHz log-rising with x*brightness
    release_s: float = 0.25           # damper: 60-dB fade time after key-up (or pedal-up)
    detune_cents_sd: float = 0.0      # per-note random detune (the label keeps the nominal pitch)
    seed: int = 0


@dataclass
class _Voice:
    zone: Zone
    s0: int
    end: int
    ratio: float
    gain: float
    cutoff_hz: float
    fades: list[tuple[int, float]]  # (start sample, 60-dB fade length in samples)

    def fade(self, at: int, t60_samples: float) -> None:
        at = max(at, self.s0)
        if at < self.end:
            self.fades.append((at, t60_samples))
            self.end = min(self.end, at + int(math.ceil(t60_samples * 4 / 3)))  # -80 dB


def _pedal_up_after(events: list[tuple[float, int]], t: float) -> float | None:
    """If the sustain pedal is down at ``t``: when it next goes up (inf if never); else None."""
    down, i = False, 0
    while i < len(events) and events[i][0] <= t:
        down = events[i][1] >= 64
        i += 1
    if not down:
        return None
    for time, value in events[i:]:
        if value < 64:
            return time
    return math.inf


_RAMP = np.zeros(0)


def _interpolate(pcm: np.ndarray, ratio: float, n: int, gain: float) -> np.ndarray:
    """``(n, 2)`` float32: int16 ``pcm`` read at positions ``k * ratio`` (linear interpolation),
    times ``gain``. Frames are gathered as one int32 each (both channels at once): 3x faster than
    2-D fancy indexing; the int16 -> float32 cast and the gain are one pass."""
    global _RAMP
    g = np.float32(gain)
    if ratio == 1.0:
        return np.multiply(pcm[:n], g, dtype=np.float32)
    if len(_RAMP) < n:
        _RAMP = np.arange(max(n, 2 * len(_RAMP)), dtype=np.float64)
    pos = _RAMP[:n] * ratio
    i = pos.astype(np.intp)
    frac = (pos - i).astype(np.float32)[:, None]
    frames = pcm.view(np.int32)[:, 0]
    a = np.multiply(np.take(frames, i).view(np.int16).reshape(n, 2), g, dtype=np.float32)
    b = np.multiply(np.take(frames[1:], i).view(np.int16).reshape(n, 2), g, dtype=np.float32)
    b -= a
    b *= frac
    b += a
    return b


def render_part(notes: list[Note], n_samples: int, sset: SampleSet, params: PlayParams,
                pedal: list[tuple[float, int]] = ()) -> tuple[np.ndarray, list[str]]:
    """Render ``notes`` with ``sset``: ``(2, n_samples)`` float32 audio and the sorted unique
    sample hashes actually played.

    ``pedal``: (time s, CC64 value) events; a melodic note released while the value is >= 64
    rings until the pedal goes up. Drums are one-shots (key-up ignored) except choke groups.
    """
    n_samples = int(n_samples)
    out = np.zeros((max(n_samples, 0), 2), np.float32)
    if n_samples <= 0 or not notes:
        return np.ascontiguousarray(out.T), []
    rng_detune = np.random.default_rng([int(params.seed), 1])
    rng_pick = np.random.default_rng([int(params.seed), 2])
    events = sorted((float(t), int(v)) for t, v in pedal)
    shift = 0 if sset.drums else int(params.shift_semitones)
    rel_t60 = max(float(params.release_s), 1e-3) * SAMPLE_RATE
    voices: list[_Voice] = []
    by_key: dict[int, list[_Voice]] = {}
    by_group: dict[int, list[_Voice]] = {}
    for note in sorted(notes, key=lambda n: (n.start, n.pitch, n.end, n.velocity)):
        detune = float(rng_detune.normal(0.0, params.detune_cents_sd)) if params.detune_cents_sd > 0 else 0.0
        zones = sset.zones_for(note.pitch, note.velocity, shift)
        if not zones:
            continue
        zone = zones[int(rng_pick.integers(len(zones)))] if len(zones) > 1 else zones[0]
        s0 = int(round(note.start * SAMPLE_RATE))
        if s0 >= n_samples or s0 < 0:
            continue
        vel = min(127, max(1, int(round(note.velocity))))
        x = ((vel - 1) / 126) ** params.velocity_gamma
        span = params.velocity_range_db * (1.0 if zone.single_layer else LAYERED_RANGE_FRACTION)
        gain = 10 ** ((zone.gain_db + span * (x - 1.0)) / 20)
        cutoff = FC_MIN_HZ * (FC_MAX_HZ / FC_MIN_HZ) ** min(1.0, max(0.0, x * params.brightness))
        cutoff = cutoff if zone.single_layer and cutoff < FC_BYPASS_HZ else 0.0
        ratio = 2 ** ((note.pitch - zone.root_pitch) / 12 + detune / 1200)
        ratio = 1.0 if abs(ratio - 1.0) < 1e-9 else ratio
        _, length, scale = decoded_pcm(zone.path)
        if length == 0:
            continue
        v = _Voice(zone, s0, min(n_samples, s0 + int((length - 1) / ratio) + 1), ratio, gain * scale, cutoff, [])
        key = int(note.pitch)
        by_key[key] = [o for o in by_key.get(key, ()) if o.end > s0]  # voices of this key still ringing
        earlier = [o for o in by_key[key] if o.s0 < s0]
        if not sset.drums:
            for old in earlier:
                old.fade(s0, CUT_S * SAMPLE_RATE)  # a re-struck key
            up = _pedal_up_after(events, note.end)
            release = note.end if up is None else up  # key-up, or pedal-up if the pedal was down
            if math.isfinite(release):
                v.fade(int(round(release * SAMPLE_RATE)), rel_t60)
        else:  # one-shots: key-up is ignored
            for old in earlier[:max(0, len(by_key[key]) - DRUM_VOICES_PER_KEY + 1)]:
                old.fade(s0, DRUM_STEAL_S * SAMPLE_RATE)
            if zone.choke_group >= 0:
                group = by_group[zone.choke_group] = [o for o in by_group.get(zone.choke_group, ()) if o.end > s0]
                for old in group:
                    if old.s0 < s0:
                        old.fade(s0, CUT_S * SAMPLE_RATE)
                group.append(v)
        by_key[key].append(v)
        voices.append(v)

    played: set[str] = set()
    lowpass = None
    for v in voices:
        n = v.end - v.s0
        if n <= 0:
            continue
        seg = _interpolate(decoded_pcm(v.zone.path)[0], v.ratio, n, v.gain)
        if v.cutoff_hz > 0 and n >= 16:
            if lowpass is None:
                import pedalboard

                lowpass = pedalboard.LowpassFilter
            seg = np.ascontiguousarray(lowpass(cutoff_frequency_hz=v.cutoff_hz)(seg, SAMPLE_RATE), np.float32)
        f0 = min((a for a, _ in v.fades), default=v.end) - v.s0
        if f0 < n:
            t = np.arange(v.s0 + f0, v.end, dtype=np.float64)
            db = np.zeros(len(t))
            for a, t60 in v.fades:
                db -= 60.0 * np.maximum(t - a, 0.0) / t60
            seg[f0:] *= (10 ** (db / 20)).astype(np.float32)[:, None]
        out[v.s0:v.end] += seg
        played.add(sset.sample_hash(v.zone))
    return np.ascontiguousarray(out.T), sorted(played)

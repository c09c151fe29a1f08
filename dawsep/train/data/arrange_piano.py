"""The piano part of a generated arrangement: two hands in one texture per section, with pedalling.

Textures per style (:data:`PIANO_TEXTURES`: block chords, arpeggios, Alberti bass, stride, comping,
...), dynamics and accents, registers that vary per song so that the corpus covers all 88 keys,
optionally the melody on top, scale runs at section ends, and legato pedalling (:func:`pedal_changes`).
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data.arrange_frame import Frame, Writer, melody, pick
from dawsep.train.data.score import PIANO_MAX, PIANO_MIN, Part
from dawsep.train.data.theory import nearest, scale_pitches, voicing

__all__ = ["PIANO_PROGRAMS", "PIANO_WEIGHTS", "PIANO_TEXTURES", "piano", "pedal_changes"]

# GM piano programs (0-based) and how often each is drawn.
PIANO_PROGRAMS = (0, 1, 2, 3, 4, 5, 6, 7)
PIANO_WEIGHTS = (0.38, 0.14, 0.1, 0.06, 0.12, 0.1, 0.05, 0.05)

PIANO_TEXTURES = {
    "pop": ("block", "melody_acc", "arpeggio", "pump"),
    "rock": ("pump", "block", "power_octaves"),
    "ballad": ("ballad", "arpeggio", "melody_acc", "block"),
    "swing": ("stride", "comp", "comp"),
    "classical": ("alberti", "arpeggio", "melody_acc", "chorale"),
    "waltz": ("waltz", "waltz", "melody_acc"),
    "sixeight": ("arpeggio", "ballad", "block"),
}


def _segments(frame: Frame):
    for s, d, c in frame.chords:
        yield s, d, c


def piano(frame: Frame, rng: np.random.Generator, style: str, melody_lead: bool) -> Part:
    """Two-handed piano: one texture per section, dynamics, accents, pedal, wide register choice."""
    w = Writer(frame, rng, jitter_ms=float(rng.uniform(2, 9)))
    # Registers vary per song so that the corpus covers all 88 keys.
    lh_c = float(rng.uniform(33, 52))
    rh_c = float(rng.uniform(58, 86))
    pedal_style = rng.random() < {"ballad": 0.95, "classical": 0.75, "sixeight": 0.85, "waltz": 0.6,
                                 "pop": 0.55, "swing": 0.25, "rock": 0.3}[style]
    legato = float(rng.uniform(0.55, 0.98))
    vel_off = float(rng.uniform(-12, 12))
    mel = None
    if melody_lead:
        mel = melody(frame, rng, int(rh_c) - 2, min(PIANO_MAX, int(rh_c) + 17), dense=float(rng.uniform(0.3, 0.8)))
    sec_bounds = frame.section_starts + [frame.n_bars]
    textures = [pick(rng, PIANO_TEXTURES[style]) for _ in frame.section_starts]
    shifts = [int(pick(rng, [0, 0, 0, -12, 12])) for _ in frame.section_starts]

    def section_of(beat):
        bar = int(beat // frame.bar_beats)
        for i in range(len(sec_bounds) - 1):
            if sec_bounds[i] <= bar < sec_bounds[i + 1]:
                return i
        return len(sec_bounds) - 2

    bu = frame.beat_unit
    for s, d, c in _segments(frame):
        si = section_of(s)
        tex, sh = textures[si], shifts[si]
        lc, rc = lh_c + min(sh, 0), rh_c + sh
        base = frame.bar_dyn(s) + vel_off
        bass = nearest(c.bass, lc - 5)
        low = bass - 12 if bass - 12 >= PIANO_MIN and rng.random() < 0.35 else None
        n_rh = int(pick(rng, [3, 3, 4, 4, 5]))
        rh = voicing(c, rc, n_rh, rng)
        steps = int(round(d / bu))
        if tex in ("block", "chorale"):
            hits = [0.0] if d <= 2 else [0.0, d / 2] if rng.random() < 0.6 else [i * bu for i in range(steps)]
            for k, h in enumerate(hits):
                acc = 8 if k == 0 else 0
                for p in ([bass] + ([low] if low else []) + ([nearest(c.root, lc + 4)] if tex == "chorale" else [])):
                    w.note(p, s + h, d - h if k == len(hits) - 1 else hits[k + 1] - h, base + acc, legato)
                rv = voicing(c, rc, 4 if tex == "chorale" else n_rh + int(rng.integers(0, 2)), rng)
                roll = rng.random() < 0.15
                for i, p in enumerate(rv):
                    w.note(p, s + h, (d - h if k == len(hits) - 1 else hits[k + 1] - h), base + acc - 4 + rng.normal(0, 4),
                           legato, delay=0.012 * i if roll else 0.0)
        elif tex == "pump":
            w.note(bass, s, d, base + 6, legato)
            if low:
                w.note(low, s, d, base + 2, legato)
            sub = 0.5
            for i in range(int(d / sub)):
                acc = 8 if i % 2 == 0 else -4
                for p in rh:
                    w.note(p, s + i * sub, sub, base + acc + rng.normal(0, 3), 0.7)
        elif tex == "power_octaves":
            for i in range(int(d / 0.5)):
                w.note(bass, s + i * 0.5, 0.5, base + (6 if i % 2 == 0 else 0), 0.8)
                w.note(bass + 12, s + i * 0.5, 0.5, base, 0.8)
            for p in rh:
                w.note(p, s, d, base + 4, legato)
        elif tex in ("arpeggio", "ballad"):
            sub = pick(rng, [0.5, 0.5, 0.25]) if tex == "arpeggio" else (0.5 if not frame.compound else 0.5)
            span = voicing(c, lc + 10, 3, rng, spread=2.0)
            pattern = [bass] + span + ([low] if low and rng.random() < 0.3 else [])
            if tex == "arpeggio" and rng.random() < 0.5:  # both hands: up and down through 2-3 octaves
                pattern = [bass] + span + [p + 12 for p in span] + ([p + 24 for p in span[:2]] if rng.random() < 0.5 else [])
                pattern = pattern + pattern[-2:0:-1]
            for i in range(int(round(d / sub))):
                p = pattern[i % len(pattern)]
                w.note(p, s + i * sub, sub * (4 if pedal_style else 1.5), base - 6 + (8 if i == 0 else 0) + rng.normal(0, 4), 0.95)
            if tex == "ballad" or (mel is None and rng.random() < 0.5):
                for p in rh[-3:]:
                    w.note(p, s, d, base, legato)
        elif tex == "alberti":
            lo_v = voicing(c, lc + 7, 3, rng)
            order = [lo_v[0], lo_v[-1], lo_v[1 if len(lo_v) > 2 else 0], lo_v[-1]]
            sub = 0.5 if rng.random() < 0.6 else 0.25
            for i in range(int(round(d / sub))):
                w.note(order[i % 4], s + i * sub, sub, base - 10 + (6 if i == 0 else 0) + rng.normal(0, 3), 0.9)
            if mel is None:
                for p in rh[-2:]:
                    w.note(p, s, d, base, legato)
        elif tex == "waltz":
            w.note(bass, s, bu, base + 6, legato)
            for b in range(1, steps):
                for p in voicing(c, lc + 12, 3, rng):
                    w.note(p, s + b * bu, bu, base - 6, 0.6)
            if mel is None:
                for p in rh:
                    w.note(p, s, d, base - 2, legato)
        elif tex == "stride":
            for b in range(steps):
                if b % 2 == 0:
                    p = bass if b == 0 else nearest((c.root + 7) % 12, lc - 5)
                    w.note(p, s + b, 1, base + 6, 0.8)
                    if low and rng.random() < 0.6:
                        w.note(p - 12, s + b, 1, base + 2, 0.8)
                else:
                    for p in voicing(c, lc + 14, 3, rng):
                        w.note(p, s + b, 1, base - 4, 0.6)
        elif tex == "comp":
            w.note(bass, s, d, base, legato)
            shell = voicing(c, rc - 6, 4, rng)
            for h in sorted(set(float(pick(rng, [0.0, 1.5, 2.5, 1.0, 3.5])) for _ in range(int(rng.integers(1, 4))))):
                if h < d:
                    for p in shell:
                        w.note(p, s + h, float(pick(rng, [0.5, 1.0, 1.5])), base + rng.normal(0, 5), 0.9)
        else:  # melody_acc: a simple broken-chord LH under the melody
            lo_v = voicing(c, lc + 7, 3, rng)
            for b in range(steps):
                w.note(bass if b == 0 else lo_v[b % len(lo_v)], s + b * bu, bu, base - 8 + (6 if b == 0 else 0), legato)
            if mel is None:
                for p in rh:
                    w.note(p, s, d, base - 3, legato)
    if mel:
        for beat, d, p, acc in mel:
            sh = shifts[section_of(beat)]
            p2 = p + sh
            w.note(p2, beat, d, frame.bar_dyn(beat) + vel_off + 10 + acc + rng.normal(0, 5), legato)
            if rng.random() < 0.2:  # doubled in octaves or thirds/sixths below
                w.note(p2 - int(pick(rng, [12, 3, 4, 8, 9])), beat, d, frame.bar_dyn(beat) + vel_off + acc, legato)
    # Scale runs at some section ends: they reach the extremes of the keyboard.
    for i, sb in enumerate(frame.section_starts[1:]):
        if rng.random() < 0.3:
            start_beat = sb * frame.bar_beats - 1.0
            up = rng.random() < 0.6
            sc = scale_pitches(frame.key, PIANO_MIN, PIANO_MAX)
            n = int(rng.integers(8, 25))
            a = int(rng.integers(len(sc) - n)) if up else int(rng.integers(n, len(sc)))
            run = sc[a:a + n] if up else sc[a - n:a][::-1]
            for k, p in enumerate(run):
                w.note(p, start_beat + k * (1.0 / n), 1.0 / n, frame.bar_dyn(start_beat) + vel_off - 6 + k * 0.6, 0.9)
    part = Part("piano", "piano", 0, w.notes)
    if pedal_style:
        part.cc.extend(pedal_changes(frame, rng, [s for s, _, _ in frame.chords]))
    return part


def pedal_changes(frame: Frame, rng: np.random.Generator, change_beats: list[float]) -> list[tuple[float, int, int]]:
    """Legato pedalling: lift just after each harmony change and press again a moment later."""
    cc = []
    for k, b in enumerate(change_beats):
        t = frame.t(b)
        if k:
            cc.append((t + float(rng.uniform(0.0, 0.03)), 64, 0))
        cc.append((t + float(rng.uniform(0.05, 0.16)), 64, 127))
    cc.append((frame.seconds - float(rng.uniform(0.0, 0.4)), 64, 0))
    return cc

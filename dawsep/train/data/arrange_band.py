"""The band parts of a generated arrangement: bass, drums, guitar, "other" (pads, strings, lead, brass).

Each writes over an ``arrange_frame.Frame`` in a pattern drawn per style: bass lines (root,
root-fifth, octaves, walking), drum grooves on a 16th or triplet grid with fills, guitar strums,
power chords, comping and arpeggios, and sustained chords, lead lines or brass stabs.
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data.arrange_frame import Frame, Writer, melody, pick
from dawsep.train.data.score import Part
from dawsep.train.data.theory import nearest, voicing

__all__ = ["BASS_PROGRAMS", "DRUM_KITS", "OTHER_ROLES", "bass", "drums", "guitar", "other"]

# GM programs by family (0-based).
BASS_PROGRAMS = (32, 33, 34, 35, 36, 37, 38, 39)
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)
OTHER_ROLES = {
    "pad": (48, 49, 50, 51, 52, 53, 54, 88, 89, 90, 91, 92, 93, 94, 95, 16, 17, 18, 19, 20),
    "lead": (80, 81, 82, 83, 84, 85, 86, 87, 56, 57, 58, 64, 65, 66, 68, 71, 73, 40, 41, 42, 22, 11, 12),
    "brass": (61, 62, 63, 56, 57, 60, 59),
    "strings": (48, 49, 44, 45, 40, 42, 46),
}


def bass(frame: Frame, rng: np.random.Generator, style: str) -> Part:
    w = Writer(frame, rng, jitter_ms=6)
    pat = pick(rng, {
        "pop": ("root", "root_fifth", "octave", "pump"), "rock": ("pump", "pump", "root_fifth"),
        "ballad": ("root", "root_fifth"), "swing": ("walking",), "classical": ("root", "root_fifth"),
        "waltz": ("waltz",), "sixeight": ("root", "root_fifth"),
    }[style])
    center = float(rng.uniform(33, 43))
    vel0 = float(rng.uniform(-10, 10))
    bu = frame.beat_unit
    chords = frame.chords
    for k, (s, d, c) in enumerate(chords):
        r = nearest(c.bass, center)
        base = frame.bar_dyn(s) + vel0
        steps = int(round(d / bu))
        if pat == "root":
            w.note(r, s, d, base + 5, 0.95)
        elif pat == "root_fifth":
            for b in range(steps):
                p = r if b % 2 == 0 else nearest((c.root + 7) % 12, r + 5)
                w.note(p, s + b * bu, bu, base + (6 if b == 0 else 0), 0.85)
        elif pat == "octave":
            for i in range(int(d / 0.5)):
                w.note(r + (12 if i % 2 else 0), s + i * 0.5, 0.5, base + (6 if i % 2 == 0 else 0), 0.6)
        elif pat == "pump":
            for i in range(int(d / 0.5)):
                w.note(r, s + i * 0.5, 0.5, base + (8 if i % 2 == 0 else 0) + rng.normal(0, 3), 0.75)
        elif pat == "waltz":
            w.note(r, s, bu, base + 6, 0.9)
            if steps > 2 and rng.random() < 0.4:
                w.note(nearest((c.root + 7) % 12, r), s + 2 * bu, bu, base, 0.9)
        else:  # walking: chord tones then a chromatic or scale approach to the next root
            nxt = chords[k + 1][2] if k + 1 < len(chords) else c
            target = nearest(nxt.bass, r)
            line = [r]
            for b in range(1, steps):
                if b == steps - 1:
                    line.append(target + int(pick(rng, [-1, 1, 2, -2])))
                else:
                    line.append(nearest(int(pick(rng, list(c.tones))), line[-1] + rng.normal(0, 3)))
            for b, p in enumerate(line):
                w.note(p, s + b, 1, base + (6 if b == 0 else 0) + rng.normal(0, 4), 0.9)
    return Part("bass", pat, int(pick(rng, BASS_PROGRAMS)), w.notes)


# GM percussion keys
KICK, SNARE, STICK, CLAP, HH_C, HH_P, HH_O, CRASH, RIDE, BELL, TAMB, COWBELL = 36, 38, 37, 39, 42, 44, 46, 49, 51, 53, 54, 56
TOMS = (50, 48, 47, 45, 43, 41)


def drums(frame: Frame, rng: np.random.Generator, style: str) -> Part:
    """Grooves on a 16th (or triplet) grid with fills at phrase ends; timing humanised within ±10 ms."""
    w = Writer(frame, rng, jitter_ms=10)
    vel0 = float(rng.uniform(-10, 10))
    bb = frame.bar_beats
    sub = 1 / 3 if (style == "swing" or frame.compound) else 0.25
    if frame.compound:
        sub = 0.5
    n = int(round(bb / sub))
    grid = {}  # instrument -> probability per step
    hat = pick(rng, [HH_C, HH_C, RIDE]) if style != "swing" else RIDE
    def steps(*beats):
        return [int(round(b / sub)) for b in beats]
    if style == "swing":
        grid[RIDE] = {i: 0.95 for i in steps(*range(int(bb)))}
        grid[RIDE].update({i: 0.8 for i in steps(*[b + 2 / 3 for b in range(1, int(bb), 2)])})
        grid[HH_P] = {i: 0.9 for i in steps(*range(1, int(bb), 2))}
        grid[KICK] = {i: 0.35 for i in steps(*range(int(bb)))}
        grid[SNARE] = {i: 0.15 for i in range(n)}
    elif frame.compound:
        grid[hat] = {i: 0.95 for i in range(n)}
        grid[KICK] = {0: 1.0, int(n / 2) if n >= 6 else 0: 0.3}
        grid[SNARE if style != "ballad" else STICK] = {int(n / 2): 0.95}
    elif bb == 3:
        grid[KICK] = {0: 1.0}
        grid[SNARE] = {i: 0.8 for i in steps(1, 2)}
        grid[hat] = {i: 0.9 for i in steps(0, 0.5, 1, 1.5, 2, 2.5)}
    else:
        half = style == "ballad"
        grid[hat] = {i: (0.97 if i % 2 == 0 else (0.9 if rng.random() < 0.5 else 0.0)) for i in range(n)}
        if style == "rock" and rng.random() < 0.4:
            grid[hat] = {i: 0.97 for i in range(0, n, 2)}
        grid[KICK] = {0: 1.0, **({int(2 / sub): 0.9} if not half else {}), **{int(rng.integers(n)): 0.5 for _ in range(2)}}
        sn = STICK if (half and rng.random() < 0.5) else (CLAP if rng.random() < 0.12 else SNARE)
        grid[sn] = {i: 0.97 for i in (steps(2) if half else steps(1, 3)) if i < n}
        if rng.random() < 0.3:
            grid[TAMB] = {i: 0.7 for i in range(0, n, 2)}
    phrase = int(pick(rng, [4, 8]))
    for bar in range(frame.n_bars):
        start = bar * bb
        base = frame.bar_dyn(start) + vel0
        fill = (bar % phrase == phrase - 1 or bar + 1 in frame.section_starts) and rng.random() < 0.7
        fill_from = n // 2 if fill else n
        if bar in frame.section_starts and (bar or rng.random() < 0.5):
            w.note(CRASH, start, 2, base + 15, 1.0)
        for inst, probs in grid.items():
            for i, p in probs.items():
                if i >= fill_from and inst not in (HH_P, RIDE):
                    continue
                if rng.random() < p:
                    acc = 12 if i == 0 else 6 if i % max(1, int(1 / sub)) == 0 else -8
                    w.note(inst, start + i * sub, sub, base + acc + rng.normal(0, 7), 1.0)
        if fill:
            kind = rng.random()
            for i in range(fill_from, n):
                if rng.random() < 0.85:
                    inst = SNARE if kind < 0.4 else TOMS[min(len(TOMS) - 1, (i - fill_from) * len(TOMS) // max(1, n - fill_from))]
                    w.note(inst, start + i * sub, sub, base + 4 + (i - fill_from) * 2 + rng.normal(0, 6), 1.0)
    part = Part("drums", "groove", int(pick(rng, DRUM_KITS)), w.notes, drums=True)
    return part


def guitar(frame: Frame, rng: np.random.Generator, style: str) -> Part:
    w = Writer(frame, rng, jitter_ms=6)
    pat = pick(rng, {
        "pop": ("strum", "arpeggio", "strum"), "rock": ("power", "power", "strum"), "ballad": ("arpeggio", "strum"),
        "swing": ("comp",), "classical": ("arpeggio",), "waltz": ("arpeggio", "strum"), "sixeight": ("arpeggio", "strum"),
    }[style])
    prog = {"power": pick(rng, [29, 30, 29, 27]), "comp": pick(rng, [26, 26, 24, 27]),
            "arpeggio": pick(rng, [24, 25, 26, 27]), "strum": pick(rng, [24, 25, 25, 27, 28, 29])}[pat]
    vel0 = float(rng.uniform(-10, 8))
    strum_pattern = pick(rng, [[0, 1, 1.5, 2.5, 3, 3.5], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5], [0, 1, 2, 3], [0, 1.5, 2, 3]])
    for s, d, c in frame.chords:
        base = frame.bar_dyn(s) + vel0
        # Guitar-like voicing: bass string root then stacked chord tones, 4-6 strings, E2..E5.
        root = nearest(c.root, 46)
        shape = [root]
        for _ in range(int(rng.integers(3, 6))):
            nxt = shape[-1] + 1
            while nxt % 12 not in c.tones:
                nxt += 1
            shape.append(nxt)
        shape = [p for p in shape if p <= 79]
        if pat == "power":
            r0 = root - 12 if root - 12 >= 40 else root
            pc = [r0, r0 + 7, r0 + 12]
            for i in range(int(d / 0.5)):
                for p in pc:
                    w.note(p, s + i * 0.5, 0.5, base + (6 if i % 2 == 0 else 0) + rng.normal(0, 3), 0.55)
        elif pat == "strum":
            for h in strum_pattern:
                if h >= d:
                    continue
                down = (h % 1) < 1e-6
                strings = shape if down else shape[::-1][: max(3, len(shape) - 2)]
                gap = float(rng.uniform(0.006, 0.02))
                nxt = [x for x in strum_pattern if x > h]
                dur = (min(nxt[0], d) if nxt else d) - h
                for i, p in enumerate(strings):
                    w.note(p, s + h, dur, base + (6 if down else -6) - i + rng.normal(0, 4), 0.95, delay=i * gap)
        elif pat == "comp":
            shell = voicing(c, 60, 4, rng)
            for h in (1.0, 3.0) if d >= 4 else (1.0,) if d >= 2 else (0.0,):
                for p in shell:
                    w.note(p, s + h, 0.5, base - 2 + rng.normal(0, 4), 0.8)
        else:
            sub = 0.5
            order = shape + shape[-2:0:-1]
            for i in range(int(round(d / sub))):
                w.note(order[i % len(order)], s + i * sub, sub * 2, base - 4 + rng.normal(0, 4), 0.95)
    return Part("guitar", pat, int(prog), w.notes)


def other(frame: Frame, rng: np.random.Generator, style: str, role: str, mel=None) -> Part:
    """Strings/pads (sustained chords), a lead line, or brass stabs."""
    w = Writer(frame, rng, jitter_ms=5)
    vel0 = float(rng.uniform(-10, 8))
    if role == "lead":
        prog = int(pick(rng, OTHER_ROLES["lead"]))
        line = mel or melody(frame, rng, 60, 84, dense=float(rng.uniform(0.2, 0.7)), rest_p=0.15)
        for beat, d, p, acc in line:
            w.note(p, beat, d, frame.bar_dyn(beat) + vel0 + acc + rng.normal(0, 5), float(rng.uniform(0.7, 1.0)))
    elif role == "brass":
        prog = int(pick(rng, OTHER_ROLES["brass"]))
        for s, d, c in frame.chords:
            for h in (0.0, 1.5) if d >= 2 else (0.0,):
                for p in voicing(c, 66, 3, rng):
                    w.note(p, s + h, 0.5, frame.bar_dyn(s) + vel0 + 5, 0.8)
    else:
        prog = int(pick(rng, OTHER_ROLES["strings" if role == "strings" else "pad"]))
        center = float(rng.uniform(55, 75))
        for s, d, c in frame.chords:
            for p in voicing(c, center, int(rng.integers(3, 5)), rng, spread=float(rng.uniform(1, 1.8))):
                w.note(p, s, d, frame.bar_dyn(s) + vel0 - 5, 1.0)
    part = Part("other", role, prog, w.notes)
    if role in ("pad", "strings"):
        # Expression swells per section: pads that breathe are harder to tell from sustained piano.
        for sb in frame.section_starts:
            t0 = frame.t(sb * frame.bar_beats)
            for k in range(5):
                part.cc.append((t0 + k * 0.4, 11, int(np.clip(60 + k * 15 + rng.normal(0, 8), 30, 127))))
    return part

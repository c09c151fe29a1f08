"""Solo piano performances for the transcription model (seed 002's plan, made systematic).

A performance is a chain of segments: single notes and chords anywhere on the 88 keys, scales,
arpeggios, fast repeated notes and trills, pedalled washes, and stretches of generated music.
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data import arrange_frame, arrange_piano
from dawsep.train.data.score import PIANO_MAX, PIANO_MIN, Note, Part, Song
from dawsep.train.data.theory import Key, scale_pitches, voicing

SOLO_PROGRAMS = (0, 1, 2, 3, 4, 5)
SOLO_WEIGHTS = (0.55, 0.2, 0.07, 0.04, 0.08, 0.06)
SEGMENTS = ("single", "chords", "scales", "arpeggios", "repeated", "pedalled", "music")
SEGMENT_WEIGHTS = (0.12, 0.14, 0.12, 0.12, 0.1, 0.1, 0.3)


def _vel(rng, lo=12, hi=124):
    return int(rng.integers(lo, hi + 1))


def _single(rng, t0, dur, notes, cc):
    t = t0
    while t < t0 + dur:
        p = int(rng.integers(PIANO_MIN, PIANO_MAX + 1))
        length = float(rng.uniform(0.08, 1.2))
        notes.append(Note(p, t, t + length, _vel(rng, 5, 127)))
        t += float(rng.uniform(0.06, 0.8)) if rng.random() < 0.7 else length + float(rng.uniform(0.02, 0.3))
    return t


def _chords(rng, t0, dur, notes, cc, key):
    t = t0
    while t < t0 + dur:
        size = int(rng.integers(2, 11))
        kind = rng.random()
        if kind < 0.5:  # voiced chord, one or two hands
            c = key.degree_chord(int(rng.integers(7)), rng, "pop" if rng.random() < 0.5 else "swing")
            center = float(rng.uniform(36, 96))
            ps = voicing(c, center, min(size, 6), rng, spread=float(rng.uniform(1, 2)))
            if size > 6:
                ps += [p - 24 for p in voicing(c, center - 12, size - 6, rng)]
        elif kind < 0.75:  # random cluster / random set anywhere
            base = int(rng.integers(PIANO_MIN, PIANO_MAX - 12))
            ps = sorted(set(int(x) for x in base + rng.choice(24, size=size, replace=False)))
        else:  # octaves, fifths, tenths
            base = int(rng.integers(PIANO_MIN, PIANO_MAX - 24))
            ps = [base, base + int(rng.choice([7, 12, 16, 19, 24]))]
        length = float(rng.uniform(0.15, 2.0))
        v = _vel(rng, 10, 127)
        roll = float(rng.uniform(0.005, 0.03)) if rng.random() < 0.15 else 0.0
        for i, p in enumerate(ps):
            if PIANO_MIN <= p <= PIANO_MAX:
                notes.append(Note(p, t + i * roll, t + length, int(np.clip(v + rng.normal(0, 6), 1, 127))))
        t += length + float(rng.uniform(0.0, 0.5))
    return t


def _scales(rng, t0, dur, notes, cc, key):
    t = t0
    while t < t0 + dur:
        rate = float(rng.uniform(4, 16))
        chromatic = rng.random() < 0.2
        lo = int(rng.integers(PIANO_MIN, PIANO_MAX - 14))
        octaves = int(rng.integers(1, 5))
        hi = min(PIANO_MAX, lo + 12 * octaves)
        pitches = list(range(lo, hi + 1)) if chromatic else scale_pitches(key, lo, hi)
        if rng.random() < 0.5:
            pitches = pitches + pitches[-2::-1]
        elif rng.random() < 0.5:
            pitches = pitches[::-1]
        hands = [0] + ([int(rng.choice([-12, 12, -24, 16 if not chromatic else 12]))] if rng.random() < 0.4 else [])
        v = float(rng.uniform(30, 110))
        for k, p in enumerate(pitches):
            for h in hands:
                notes.append(Note(p + h, t + k / rate, t + (k + 0.9) / rate, int(np.clip(v + rng.normal(0, 8), 1, 127))))
        t += len(pitches) / rate + float(rng.uniform(0.1, 0.6))
    return t


def _arpeggios(rng, t0, dur, notes, cc, key, pedal=True):
    t = t0
    while t < t0 + dur:
        c = key.degree_chord(int(rng.integers(7)), rng, "ballad")
        base = float(rng.uniform(30, 70))
        span = voicing(c, base, 3, rng)
        seq = [p + 12 * o for o in range(int(rng.integers(2, 5))) for p in span]
        seq = [p for p in seq if PIANO_MIN <= p <= PIANO_MAX]
        if rng.random() < 0.5:
            seq = seq + seq[-2:0:-1]
        rate = float(rng.uniform(5, 14))
        v = float(rng.uniform(30, 105))
        if pedal:
            cc.append((t + 0.05, 64, 127))
        for k, p in enumerate(seq):
            notes.append(Note(p, t + k / rate, t + (k + 1.5) / rate, int(np.clip(v + rng.normal(0, 8), 1, 127))))
        t += len(seq) / rate
        if pedal:
            cc.append((t, 64, 0))
        t += float(rng.uniform(0.05, 0.3))
    return t


def _repeated(rng, t0, dur, notes, cc):
    t = t0
    while t < t0 + dur:
        kind = rng.random()
        p = int(rng.integers(PIANO_MIN + 12, PIANO_MAX - 12))
        rate = float(rng.uniform(5, 14))
        n = int(rng.integers(6, 24))
        v = float(rng.uniform(25, 115))
        trill = int(rng.choice([1, 2]))
        for k in range(n):
            if kind < 0.4:
                q = p  # repeated key: needs a real gap, as a piano's repetition does
            elif kind < 0.8:
                q = p + (k % 2) * trill
            else:
                q = p + (k % 2) * 12  # octave tremolo
            notes.append(Note(int(q), t + k / rate, t + (k + 0.7) / rate, int(np.clip(v + rng.normal(0, 6), 1, 127))))
        t += n / rate + float(rng.uniform(0.1, 0.5))
    return t


def _pedalled(rng, t0, dur, notes, cc, key):
    """Short notes under a held pedal: the labels' key-up times differ from the sound's end."""
    t = t0
    while t < t0 + dur:
        cc.append((t, 64, 127))
        end = t + float(rng.uniform(1.5, 4.0))
        while t < end:
            c = key.degree_chord(int(rng.integers(7)), rng, "ballad")
            for p in voicing(c, float(rng.uniform(40, 84)), int(rng.integers(2, 6)), rng, spread=1.5):
                notes.append(Note(p, t, t + float(rng.uniform(0.08, 0.4)), _vel(rng, 20, 110)))
            t += float(rng.uniform(0.25, 0.9))
        cc.append((t, 64, 0))
        t += float(rng.uniform(0.05, 0.3))
    return t


def _music(rng, t0, dur, notes, cc):
    style = str(rng.choice(["pop", "ballad", "swing", "classical", "waltz", "sixeight"]))
    frame = arrange_frame.make_frame(rng, style, dur + 1.0)
    part = arrange_piano.piano(frame, rng, style, melody_lead=rng.random() < 0.7)
    for n in part.notes:
        notes.append(Note(n.pitch, n.start + t0, n.end + t0, n.velocity))
    cc.extend((t + t0, c, v) for t, c, v in part.cc)
    return t0 + frame.seconds


def solo_piano(rng: np.random.Generator, seconds: float) -> Song:
    key = Key(int(rng.integers(12)), bool(rng.random() < 0.35))
    notes: list[Note] = []
    cc: list[tuple[float, int, int]] = []
    t, used = 0.25, []
    while t < seconds - 1.5:
        seg = str(rng.choice(SEGMENTS, p=np.array(SEGMENT_WEIGHTS) / sum(SEGMENT_WEIGHTS)))
        dur = min(float(rng.uniform(3, 10)), seconds - 1.0 - t)
        used.append(seg)
        if seg == "single":
            t = _single(rng, t, dur, notes, cc)
        elif seg == "chords":
            t = _chords(rng, t, dur, notes, cc, key)
        elif seg == "scales":
            t = _scales(rng, t, dur, notes, cc, key)
        elif seg == "arpeggios":
            t = _arpeggios(rng, t, dur, notes, cc, key, pedal=rng.random() < 0.7)
        elif seg == "repeated":
            t = _repeated(rng, t, dur, notes, cc)
        elif seg == "pedalled":
            t = _pedalled(rng, t, dur, notes, cc, key)
        else:
            t = _music(rng, t, dur, notes, cc)
        # Pedal must be up between segments (a segment may end mid-pedal when cut by the song end).
        cc.append((t, 64, 0))
        t += float(rng.uniform(0.05, 0.4))
        if rng.random() < 0.3:  # modulate now and then
            key = Key(int(rng.integers(12)), bool(rng.random() < 0.35))
    part = Part("piano", "solo", int(rng.choice(SOLO_PROGRAMS, p=SOLO_WEIGHTS)), notes, cc)
    return Song([part], seconds, {"style": "solo_piano", "segments": used})

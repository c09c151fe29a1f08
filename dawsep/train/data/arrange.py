"""Generated arrangements: a harmonic frame (tempo, metre, chords, dynamics) and five parts on it.

Each generator writes in beats (quarter notes) through :class:`Frame`, which owns the conversion to
seconds (tempo, rubato, swing). The same part generators also accompany music21 pieces (see
``m21.py``), given a frame built from the piece's own bars and a harmonisation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dawsep.train.data.score import PIANO_MAX, PIANO_MIN, Note, Part, Song
from dawsep.train.data.theory import Chord, Key, nearest, progression, scale_pitches, voicing

STYLES = ("pop", "rock", "ballad", "swing", "classical", "waltz", "sixeight")
STYLE_WEIGHTS = (0.18, 0.14, 0.16, 0.14, 0.16, 0.11, 0.11)
_TEMPO = {  # quarter-note bpm ranges (6/8: the dotted quarter is 2/3 of this)
    "pop": (80, 132), "rock": (100, 180), "ballad": (60, 84), "swing": (96, 180),
    "classical": (66, 150), "waltz": (120, 180), "sixeight": (96, 150),
}

# GM programs by family (0-based).
PIANO_PROGRAMS = (0, 1, 2, 3, 4, 5, 6, 7)
PIANO_WEIGHTS = (0.38, 0.14, 0.1, 0.06, 0.12, 0.1, 0.05, 0.05)
BASS_PROGRAMS = (32, 33, 34, 35, 36, 37, 38, 39)
GUITAR_PROGRAMS = (24, 25, 26, 27, 28, 29, 30)
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)
OTHER_ROLES = {
    "pad": (48, 49, 50, 51, 52, 53, 54, 88, 89, 90, 91, 92, 93, 94, 95, 16, 17, 18, 19, 20),
    "lead": (80, 81, 82, 83, 84, 85, 86, 87, 56, 57, 58, 64, 65, 66, 68, 71, 73, 40, 41, 42, 22, 11, 12),
    "brass": (61, 62, 63, 56, 57, 60, 59),
    "strings": (48, 49, 44, 45, 40, 42, 46),
}


def pick(rng: np.random.Generator, items, p=None):
    return items[int(rng.choice(len(items), p=p))]


@dataclass
class Frame:
    key: Key
    bpm: float
    bar_beats: float  # quarters per bar
    compound: bool
    swing: float  # fraction of the beat given to the first 8th (0.5 = straight)
    n_bars: int
    chords: list[tuple[float, float, Chord]]  # (start beat, length in beats, chord)
    section_starts: list[int]
    dyn: np.ndarray  # base velocity per bar
    bar_time: np.ndarray = field(default_factory=lambda: np.zeros(1))  # seconds at each bar start (n_bars+1)

    @property
    def beat_unit(self) -> float:
        return 1.5 if self.compound else 1.0

    def finish_timing(self, rng: np.random.Generator, rubato: float, ritardando: bool) -> None:
        spb = 60.0 / self.bpm
        walk = np.cumsum(rng.normal(0, rubato, self.n_bars))
        factor = np.exp(walk - walk.mean()) if rubato > 0 else np.ones(self.n_bars)
        if ritardando and self.n_bars >= 4:
            factor[-2:] *= (1.12, 1.3)
        self.bar_time = np.concatenate([[0.0], np.cumsum(factor * self.bar_beats * spb)])

    def t(self, beat: float) -> float:
        """Seconds at a beat position (with swing on off-beat 8ths)."""
        if self.swing != 0.5 and not self.compound:
            whole, f = divmod(beat, 1.0)
            f = f * self.swing / 0.5 if f < 0.5 else self.swing + (f - 0.5) * (1 - self.swing) / 0.5
            beat = whole + f
        bar = int(np.clip(beat // self.bar_beats, 0, self.n_bars - 1))
        frac = (beat - bar * self.bar_beats) / self.bar_beats
        return float(self.bar_time[bar] + frac * (self.bar_time[bar + 1] - self.bar_time[bar]))

    @property
    def seconds(self) -> float:
        return float(self.bar_time[-1])

    def chord_at(self, beat: float) -> Chord:
        for s, d, c in self.chords:
            if s <= beat < s + d:
                return c
        return self.chords[-1][2]

    def bar_dyn(self, beat: float) -> float:
        return float(self.dyn[int(np.clip(beat // self.bar_beats, 0, self.n_bars - 1))])


class Writer:
    """Collects notes in beats, converts to seconds with humanisation."""

    def __init__(self, frame: Frame, rng: np.random.Generator, jitter_ms: float = 5.0):
        self.f, self.rng, self.jitter = frame, rng, jitter_ms / 1000.0
        self.notes: list[Note] = []

    def note(self, pitch: int, beat: float, dur: float, vel: float, legato: float = 0.92, delay: float = 0.0) -> None:
        j = float(np.clip(self.rng.normal(0, self.jitter / 2), -self.jitter, self.jitter)) if self.jitter else 0.0
        t0 = self.f.t(beat) + j + delay
        t1 = self.f.t(beat + dur * legato) + j + delay
        self.notes.append(Note(int(pitch), max(0.0, t0), max(t0 + 0.03, t1), int(np.clip(vel, 1, 127))))


# ---------------------------------------------------------------- frame ---------------------------


def make_frame(rng: np.random.Generator, style: str, seconds: float, key: Key | None = None) -> Frame:
    lo, hi = _TEMPO[style]
    bpm = float(rng.uniform(lo, hi))
    compound = style == "sixeight" or (style == "ballad" and rng.random() < 0.2)
    bar_beats = 3.0 if style in ("waltz", "sixeight") or compound else float(pick(rng, [4.0, 4.0, 4.0, 2.0, 3.0]) if style == "classical" else 4.0)
    if style == "ballad" and compound:
        bar_beats = 6.0  # 12/8
    swing = float(rng.uniform(0.6, 0.69)) if style == "swing" else 0.5
    if style in ("pop", "ballad") and not compound and rng.random() < 0.12:
        swing = float(rng.uniform(0.55, 0.62))  # shuffle feel
    key = key or Key(int(rng.integers(12)), bool(rng.random() < 0.35))
    bar_s = bar_beats * 60 / bpm
    n_bars = max(2, int((seconds - 1.0) // bar_s))
    # Harmonic rhythm: one or two chords per bar, or one per two bars in slow styles.
    per_bar = pick(rng, [1, 1, 2]) if style in ("pop", "rock", "swing", "classical") and bar_beats == 4 else 1
    if style == "ballad" and rng.random() < 0.3 and bar_beats == 4:
        per_bar = 2
    chord_len = bar_beats / per_bar
    sections, starts, b = [], [], 0
    loops = [progression(key, style, rng) for _ in range(int(rng.integers(1, 4)))]
    while b < n_bars:
        sec_len = min(n_bars - b, int(pick(rng, [4, 8, 8, 16])))
        starts.append(b)
        sections.append((b, sec_len, loops[int(rng.integers(len(loops)))]))
        b += sec_len
    chords = []
    for start_bar, sec_len, loop in sections:
        n = int(round(sec_len * per_bar))
        for i in range(n):
            chords.append((start_bar * bar_beats + i * chord_len, chord_len, loop[i % len(loop)]))
    # Final cadence on the tonic (classical/ballad/waltz) so endings sound like endings.
    if style in ("classical", "ballad", "waltz") and len(chords) > 1:
        s, d, _ = chords[-1]
        chords[-1] = (s, d, key.degree_chord(0, rng, "classical"))
    dyn = np.zeros(n_bars)
    level = float(rng.uniform(55, 95))
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n_bars
        target = float(np.clip(level + rng.normal(0, 14), 35, 112))
        dyn[s:end] = np.linspace(level, target, end - s) if rng.random() < 0.5 else target
        level = target
    frame = Frame(key, bpm, bar_beats, compound, swing, n_bars, chords, starts, dyn)
    rubato = {"classical": 0.025, "ballad": 0.02, "waltz": 0.015}.get(style, 0.0)
    frame.finish_timing(rng, rubato, style in ("classical", "ballad"))
    return frame


def _segments(frame: Frame):
    for s, d, c in frame.chords:
        yield s, d, c


def _rhythm(rng: np.random.Generator, frame: Frame, dense: float) -> list[tuple[float, float]]:
    """A bar's worth of (offset, length) cells for melodies."""
    if frame.compound:
        cells = [[1.5, 1.5], [1.0, 0.5, 1.0, 0.5], [0.5] * 6, [3.0], [1.5, 1.0, 0.5], [0.5, 0.5, 0.5, 1.5]]
    elif frame.bar_beats == 3:
        cells = [[1, 1, 1], [2, 1], [3], [1, 0.5, 0.5, 1], [0.5] * 6, [1.5, 0.5, 1]]
    else:
        cells = [[1, 1, 1, 1], [2, 1, 1], [1, 0.5, 0.5, 1, 1], [0.5] * 8, [1.5, 0.5, 2], [3, 1], [4],
                 [0.5, 0.5, 1, 2], [1, 1, 2], [0.25] * 4 + [1, 1, 1], [0.75, 0.25, 1, 1, 1]]
    lens = np.array([len(c) for c in cells], float)
    p = lens ** (2 * dense - 1)
    cell = cells[int(rng.choice(len(cells), p=p / p.sum()))]
    scale = frame.bar_beats / sum(cell)
    out, t = [], 0.0
    for d in cell:
        out.append((t, d * scale))
        t += d * scale
    return out


def melody(frame: Frame, rng: np.random.Generator, lo: int, hi: int, dense: float = 0.5,
           rest_p: float = 0.08) -> list[tuple[float, float, int, float]]:
    """(beat, length, pitch, accent) for a singable line over the frame's chords."""
    pitches = scale_pitches(frame.key, lo, hi)
    if len(pitches) < 3:
        return []
    idx = len(pitches) // 2
    out = []
    for bar in range(frame.n_bars):
        phrase_end = bar % 4 == 3
        cells = _rhythm(rng, frame, dense if not phrase_end else dense * 0.5)
        for j, (off, d) in enumerate(cells):
            beat = bar * frame.bar_beats + off
            if rng.random() < rest_p and j:
                continue
            idx = int(np.clip(idx + pick(rng, [-3, -2, -1, 0, 1, 2, 3], p=[.12, .1, .24, .08, .24, .1, .12]), 0, len(pitches) - 1))
            p = pitches[idx]
            strong = abs(off - round(off / frame.beat_unit) * frame.beat_unit) < 1e-6
            if strong:
                tones = frame.chord_at(beat).tones
                cands = [q for q in pitches if q % 12 in tones]
                if cands:
                    p = min(cands, key=lambda q: abs(q - p))
                    idx = pitches.index(p)
            out.append((beat, d, p, 10.0 if off == 0 else 4.0 if strong else 0.0))
    return out


# ---------------------------------------------------------------- parts ---------------------------

PIANO_TEXTURES = {
    "pop": ("block", "melody_acc", "arpeggio", "pump"),
    "rock": ("pump", "block", "power_octaves"),
    "ballad": ("ballad", "arpeggio", "melody_acc", "block"),
    "swing": ("stride", "comp", "comp"),
    "classical": ("alberti", "arpeggio", "melody_acc", "chorale"),
    "waltz": ("waltz", "waltz", "melody_acc"),
    "sixeight": ("arpeggio", "ballad", "block"),
}


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


# ---------------------------------------------------------------- song ----------------------------


def generate_song(rng: np.random.Generator, seconds: float, style: str | None = None) -> Song:
    style = style or str(rng.choice(STYLES, p=np.array(STYLE_WEIGHTS) / sum(STYLE_WEIGHTS)))
    frame = make_frame(rng, style, seconds)
    lead_on_piano = rng.random() < 0.55
    parts = []
    pp = piano(frame, rng, style, melody_lead=lead_on_piano)
    pp.program = int(pick(rng, PIANO_PROGRAMS, p=PIANO_WEIGHTS))
    parts.append(pp)
    parts.append(bass(frame, rng, style))
    if rng.random() < (0.35 if style == "classical" else 0.92):
        parts.append(drums(frame, rng, style))
    if rng.random() < (0.4 if style in ("classical", "waltz") else 0.85):
        parts.append(guitar(frame, rng, style))
    roles = ["pad", "strings", "lead", "brass"]
    n_other = int(rng.choice([1, 1, 2, 2, 3]))
    for r in rng.choice(roles, size=n_other, replace=False, p=[0.3, 0.25, 0.3, 0.15]):
        if r == "lead" and lead_on_piano and rng.random() < 0.6:
            r = "pad"
        parts.append(other(frame, rng, style, str(r)))
    # Drop parts from some sections (breakdowns, intros): stems are silent for stretches.
    for p in parts:
        for i, sb in enumerate(frame.section_starts):
            if rng.random() < (0.08 if p.stem == "piano" else 0.15) and len(frame.section_starts) > 1:
                end = frame.section_starts[i + 1] if i + 1 < len(frame.section_starts) else frame.n_bars
                t0, t1 = frame.bar_time[sb], frame.bar_time[end]
                p.notes = [n for n in p.notes if not t0 <= n.start < t1]
    info = {
        "style": style, "bpm": round(frame.bpm, 2), "meter": f"{frame.bar_beats:g}/4" + (" compound" if frame.compound else ""),
        "swing": round(frame.swing, 3), "key": f"{frame.key.tonic}{'m' if frame.key.minor else ''}", "bars": frame.n_bars,
    }
    return Song(parts, seconds, info)

"""The harmonic frame of a generated arrangement (tempo, metre, chords, dynamics) and notes on it.

Each part generator (``arrange_piano``, ``arrange_band``) writes in beats (quarter notes) through a
:class:`Writer` on a :class:`Frame`, which owns the conversion to seconds (tempo, rubato, swing).
:func:`make_frame` draws a frame for a style; ``m21`` builds one from a piece's own bars and a
harmonisation. :func:`melody` writes a singable line over a frame's chords.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dawsep.train.data.score import Note
from dawsep.train.data.theory import Chord, Key, progression, scale_pitches

__all__ = ["Frame", "Writer", "make_frame", "melody", "pick"]

_TEMPO = {  # quarter-note bpm ranges (6/8: the dotted quarter is 2/3 of this)
    "pop": (80, 132), "rock": (100, 180), "ballad": (60, 84), "swing": (96, 180),
    "classical": (66, 150), "waltz": (120, 180), "sixeight": (96, 150),
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

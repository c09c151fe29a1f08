"""The piano roll a musician reads: notes over time, as a PNG (Pillow, no plotting library).

Layout, left to right and top to bottom:

- a title (the file's name) and a one-line summary (notes, pedal presses, length, tempo);
- bar numbers above the roll when a tempo is known (4/4 from the start of the file);
- a keyboard down the left, each C labelled with its octave (scientific pitch: C4 is middle C,
  MIDI 60), rows for the black keys shaded as in a DAW's piano roll, only the octaves the notes use;
- each note a bar from its start to its end, coloured by velocity (legend at the top right);
- vertical lines every bar and beat (tempo known) or at round seconds, the time axis below in
  seconds (m:ss past a minute);
- a labelled lane under the roll for the sustain pedal.

:class:`PianoRoll` computes the geometry (so tests can look at the pixel a note should cover);
:func:`piano_roll_png` draws it.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
BLACK = frozenset({1, 3, 6, 8, 10})
#: velocity 1 -> 127: deep blue, purple, pink, orange (the "plasma" scale without its pale end,
#: so a soft note still stands out on the white rows)
_VELOCITY_STOPS = np.array([(13, 8, 135), (106, 0, 168), (177, 42, 144), (225, 100, 98), (246, 146, 46)], float)
_PEDAL = (70, 150, 90)
_MAX_WIDTH = 8000


def note_name(pitch: int) -> str:
    """MIDI pitch -> scientific pitch name, e.g. 60 -> ``C4``, 21 -> ``A0``."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def velocity_colour(velocity: float) -> tuple[int, int, int]:
    v = (min(max(float(velocity), 1.0), 127.0) - 1.0) / 126.0 * (len(_VELOCITY_STOPS) - 1)
    i = min(int(v), len(_VELOCITY_STOPS) - 2)
    c = _VELOCITY_STOPS[i] + (v - i) * (_VELOCITY_STOPS[i + 1] - _VELOCITY_STOPS[i])
    return tuple(int(round(x)) for x in c)


def _time_label(t: float, minutes: bool) -> str:
    if minutes:
        return f"{int(t) // 60}:{int(t) % 60:02d}"
    return f"{t:g} s"


@dataclass
class PianoRoll:
    """Where everything goes. ``notes``/``pedal``: :class:`~dawsep.transcribe.NoteEvent` /
    :class:`~dawsep.transcribe.PedalEvent` lists; ``bpm``: draw bars and beats (None: seconds only)."""

    notes: list
    pedal: list
    duration_s: float
    title: str = ""
    bpm: float | None = None

    def __post_init__(self):
        ends = [n.end_s for n in self.notes] + [p.end_s for p in self.pedal]
        self.end_s = max([self.duration_s, *ends, 1.0])
        pitches = [n.pitch for n in self.notes]
        lo, hi = (min(pitches), max(pitches)) if pitches else (48, 83)
        # whole octaves, C to B, within the piano's A0-C8
        self.lo, self.hi = max(21, 12 * (lo // 12)), min(108, 12 * (hi // 12) + 11)
        rows = self.hi - self.lo + 1
        self.row_h = int(min(14, max(6, 560 // rows)))
        self.px_per_s = min(100.0, max(16.0, 3000.0 / self.end_s), (_MAX_WIDTH - 200) / self.end_s)
        self.left, self.right = 78, 44
        self.top = 58 + (18 if self.bpm else 0)
        self.roll_h = rows * self.row_h
        self.pedal_y = self.top + self.roll_h + 10
        self.pedal_h = 16
        self.width = self.left + int(math.ceil(self.end_s * self.px_per_s)) + self.right
        self.height = self.pedal_y + self.pedal_h + 44

    def x(self, t: float) -> int:
        return self.left + int(round(t * self.px_per_s))

    def y(self, pitch: int) -> int:
        """Top of ``pitch``'s row."""
        return self.top + (self.hi - pitch) * self.row_h

    def png(self) -> bytes:
        from PIL import Image, ImageDraw

        img = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        d = ImageDraw.Draw(img)
        font, small, big = _font(12), _font(11), _font(16)
        x0, x1 = self.left, self.x(self.end_s)
        # rows: black keys shaded, a line under every C
        for p in range(self.lo, self.hi + 1):
            y = self.y(p)
            d.rectangle([x0, y, x1, y + self.row_h - 1], fill=(226, 228, 234) if p % 12 in BLACK else (250, 250, 250))
            if p % 12 == 0:
                d.line([x0, y + self.row_h - 1, x1, y + self.row_h - 1], fill=(150, 150, 160))
        # vertical grid: bars and beats with a tempo, else round seconds
        minutes = self.end_s >= 60
        step = next(s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if s * self.px_per_s >= 64)
        if self.bpm:
            beat = 60.0 / self.bpm
            bar = 4 * beat
            every = next(k for k in (1, 2, 4, 8, 16, 32, 64, 1 << 30) if k * bar * self.px_per_s >= 26)
            for i in range(int(self.end_s / beat) + 1):
                t = i * beat
                if i % 4 == 0:
                    d.line([self.x(t), self.top, self.x(t), self.top + self.roll_h], fill=(165, 165, 175))
                    n = i // 4 + 1
                    if (n - 1) % every == 0:
                        d.text((self.x(t) + 2, self.top - 16), str(n), fill=(60, 60, 70), font=small)
                elif beat * self.px_per_s >= 10:
                    d.line([self.x(t), self.top, self.x(t), self.top + self.roll_h], fill=(214, 214, 222))
            d.text((4, self.top - 16), "bar", fill=(60, 60, 70), font=small)
        else:
            for i in range(1, int(self.end_s / step) + 1):
                t = i * step
                d.line([self.x(t), self.top, self.x(t), self.top + self.roll_h], fill=(208, 208, 216))
        # notes: velocity as colour, a darker edge, the strike marked
        for n in sorted(self.notes, key=lambda e: e.velocity):
            if not self.lo <= n.pitch <= self.hi:
                continue
            y = self.y(n.pitch)
            a, b = self.x(n.start_s), max(self.x(n.start_s) + 2, self.x(n.end_s))
            c = velocity_colour(n.velocity)
            edge = tuple(int(v * 0.55) for v in c)
            d.rectangle([a, y + 1, b, y + self.row_h - 2], fill=c, outline=edge)
            d.line([a, y + 1, a, y + self.row_h - 2], fill=(0, 0, 0))
        d.rectangle([x0, self.top, x1, self.top + self.roll_h], outline=(120, 120, 130))
        # keyboard and octave labels
        kx0, kx1 = self.left - 36, self.left - 1
        for p in range(self.lo, self.hi + 1):
            y = self.y(p)
            black = p % 12 in BLACK
            d.rectangle([kx0, y, kx1 if not black else kx0 + 22, y + self.row_h - 1],
                        fill=(30, 30, 34) if black else (255, 255, 255), outline=(170, 170, 178))
            if p % 12 == 0:  # on both sides: a wide roll is read scrolled
                label = note_name(p)
                d.text((kx0 - 4, y + self.row_h / 2), label, fill=(30, 30, 40), font=font, anchor="rm")
                d.text((x1 + 6, y + self.row_h / 2), label, fill=(30, 30, 40), font=font, anchor="lm")
        # pedal lane
        d.rectangle([x0, self.pedal_y, x1, self.pedal_y + self.pedal_h], fill=(246, 246, 248), outline=(170, 170, 178))
        for p in self.pedal:
            d.rectangle([self.x(p.start_s), self.pedal_y + 3, max(self.x(p.start_s) + 1, self.x(p.end_s)),
                         self.pedal_y + self.pedal_h - 3], fill=_PEDAL)
        d.text((self.left - 6, self.pedal_y + self.pedal_h / 2), "pedal", fill=(30, 30, 40), font=font, anchor="rm")
        # time axis
        ty = self.pedal_y + self.pedal_h + 4
        for i in range(0, int(self.end_s / step) + 1):
            t = i * step
            d.line([self.x(t), ty - 3, self.x(t), ty + 2], fill=(90, 90, 100))
            d.text((self.x(t), ty + 4), _time_label(t, minutes), fill=(30, 30, 40), font=small, anchor="mt")
        d.text((x1, ty + 22), "time (m:ss)" if minutes else "time", fill=(90, 90, 100), font=small, anchor="rt")
        # title, summary, legend
        d.text((8, 8), self.title or "piano transcription", fill=(0, 0, 0), font=big)
        tempo = f"{self.bpm:g} BPM, bars in 4/4" if self.bpm else "tempo not given (seconds)"
        summary = (f"{len(self.notes)} notes, {len(self.pedal)} pedal presses, {_time_label(self.duration_s, True)} "
                   f"long, {tempo}")
        d.text((8, 30), summary, fill=(80, 80, 90), font=font)
        lw = 128
        lx = max(self.width - self.right - lw, int(8 + d.textlength(summary, font=font) + 120))
        ly = 12
        for i in range(lw):
            d.line([lx + i, ly, lx + i, ly + 10], fill=velocity_colour(1 + 126 * i / (lw - 1)))
        d.rectangle([lx, ly, lx + lw - 1, ly + 10], outline=(120, 120, 130))
        d.text((lx - 6, ly + 5), "velocity", fill=(30, 30, 40), font=small, anchor="rm")
        for v, anchor in ((1, "lt"), (64, "mt"), (127, "rt")):
            d.text((lx + (v - 1) / 126 * (lw - 1), ly + 13), str(v), fill=(60, 60, 70), font=small, anchor=anchor)
        if not self.notes:
            d.text(((x0 + x1) / 2, self.top + self.roll_h / 2), "no notes", fill=(120, 120, 130), font=big, anchor="mm")
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (FreeType)
    except TypeError:  # an old Pillow: its fixed bitmap font
        return ImageFont.load_default()


def piano_roll_png(notes: list, pedal: list, duration_s: float, *, title: str = "", bpm: float | None = None) -> bytes:
    """The piano roll of ``notes`` and ``pedal`` as PNG bytes (see the module docstring)."""
    return PianoRoll(notes, pedal, duration_s, title, bpm).png()

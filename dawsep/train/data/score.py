"""Timed note lists (seconds) for each part of a song, and the piano label file.

Everything the generators produce ends up here, in seconds, after tempo and transposition. The
renderer quantises event times to its 64-sample block grid and the label MIDI is written from the
quantised times, so ``piano.mid`` holds exactly what was rendered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mido
import numpy as np

SAMPLE_RATE = 44100
STEMS = ("piano", "bass", "drums", "guitar", "other")
PIANO_MIN, PIANO_MAX = 21, 108
#: Label MIDI time base: 120 bpm and 22050 ticks per beat make one tick one sample at 44.1 kHz.
LABEL_TPB = 22050
LABEL_TEMPO = 500_000


@dataclass
class Note:
    pitch: int
    start: float
    end: float
    velocity: int


@dataclass
class Part:
    stem: str  # one of STEMS
    role: str  # what the part does (comp, pad, lead, groove, ...): for meta.json only
    program: int
    notes: list[Note] = field(default_factory=list)
    cc: list[tuple[float, int, int]] = field(default_factory=list)  # (time, controller, value)
    drums: bool = False

    def clean(self, lo: int = 0, hi: int = 127, min_dur: float = 0.01) -> None:
        """Clamp pitch/velocity, drop empty notes, and cut overlapping notes of the same pitch.

        A synth re-triggers a key that is still held; without this cut the first note's later
        note-off would silence the second one, and the labels would lie.
        """
        by_pitch: dict[int, list[Note]] = {}
        for n in self.notes:
            p = int(n.pitch)
            while p < lo:
                p += 12
            while p > hi:
                p -= 12
            if not lo <= p <= hi:
                continue
            n.pitch = p
            n.velocity = int(min(127, max(1, round(n.velocity))))
            n.start = max(0.0, float(n.start))
            n.end = float(n.end)
            by_pitch.setdefault(p, []).append(n)
        out: list[Note] = []
        for notes in by_pitch.values():
            notes.sort(key=lambda n: (n.start, -n.end))
            for i, n in enumerate(notes):
                if i + 1 < len(notes) and notes[i + 1].start < n.end:
                    n.end = notes[i + 1].start
                if n.end - n.start >= min_dur:
                    out.append(n)
        out.sort(key=lambda n: (n.start, n.pitch))
        self.notes = out
        self.cc.sort(key=lambda c: c[0])


@dataclass
class Song:
    parts: list[Part]
    duration: float  # seconds rendered (notes beyond it are dropped)
    info: dict = field(default_factory=dict)  # style, tempo, key, source, ...

    def piano_part(self) -> Part | None:
        for p in self.parts:
            if p.stem == "piano":
                return p
        return None


def write_label_midi(path, notes: list[Note], pedal: list[tuple[float, int]], program: int = 0) -> None:
    """Write the piano labels: notes and sustain pedal (CC64), one tick per sample at 44.1 kHz."""
    mid = mido.MidiFile(ticks_per_beat=LABEL_TPB)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=LABEL_TEMPO, time=0))
    track.append(mido.MetaMessage("track_name", name="piano", time=0))
    track.append(mido.Message("program_change", program=program, channel=0, time=0))
    events = []  # (tick, order, message); note-offs before pedal before note-ons at one tick
    for n in notes:
        t0, t1 = round(n.start * SAMPLE_RATE), round(n.end * SAMPLE_RATE)
        events.append((t0, 2, mido.Message("note_on", note=n.pitch, velocity=n.velocity, channel=0)))
        events.append((t1, 0, mido.Message("note_off", note=n.pitch, velocity=0, channel=0)))
    for t, v in pedal:
        events.append((round(t * SAMPLE_RATE), 1, mido.Message("control_change", control=64, value=v, channel=0)))
    events.sort(key=lambda e: (e[0], e[1], getattr(e[2], "note", 0)))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid.save(path)


def read_label_midi(path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``piano.mid``: notes as an (N, 4) array [onset_s, offset_s, pitch, velocity] and the
    pedal as a (M, 2) array [time_s, value], both sorted by time."""
    mid = mido.MidiFile(path)
    t = 0.0
    active: dict[int, tuple[float, int]] = {}
    notes, pedal = [], []
    for msg in mid:  # iterating a MidiFile yields delta times in seconds (tempo applied)
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            if msg.note in active:  # defensive: close a dangling note
                s, v = active.pop(msg.note)
                notes.append((s, t, msg.note, v))
            active[msg.note] = (t, msg.velocity)
        elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
            if msg.note in active:
                s, v = active.pop(msg.note)
                notes.append((s, t, msg.note, v))
        elif msg.type == "control_change" and msg.control == 64:
            pedal.append((t, msg.value))
    for p, (s, v) in active.items():
        notes.append((s, t, p, v))
    n_arr = np.array(sorted(notes), dtype=np.float64).reshape(-1, 4)
    p_arr = np.array(pedal, dtype=np.float64).reshape(-1, 2)
    return n_arr, p_arr

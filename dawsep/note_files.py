"""A transcription and its files: :class:`Transcription` (notes, pedal, where they came from) written
as MIDI (:func:`midi_from_events`, :func:`write_midi`), JSON, CSV or a piano-roll PNG, atomically.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dawsep import atomic
from dawsep.decoder import NoteEvent, PedalEvent
from dawsep.defaults import DEFAULT_BPM, DecodeOptions
from dawsep.errors import DawsepError
from dawsep.pianoroll import piano_roll_png

TICKS_PER_BEAT = 480


def midi_from_events(events, bpm: float | None = None, name: str = "Piano"):
    """``[(seconds, order, mido.Message), ...]`` -> ``mido.MidiFile``: type 0 (one track, so a DAW
    imports one piano track and no empty tempo track), 480 ticks per beat, ``bpm`` (None:
    :data:`DEFAULT_BPM`; dawsep does not estimate tempo) in 4/4, the track named ``name`` on
    program 0, channel 0, with the messages in time order (``order`` breaks ties). A message's
    time in seconds is the same at any tempo; the tempo only sets the beat grid. Used for files
    (:meth:`Transcription.to_midi`) and live recordings."""
    import mido

    bpm = float(bpm or DEFAULT_BPM)
    ticks_per_s = TICKS_PER_BEAT * bpm / 60.0
    mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.Message("program_change", program=0, channel=0, time=0))
    now = 0
    for tick, _, msg in sorted(((max(0, int(round(t * ticks_per_s))), o, m) for t, o, m in events),
                               key=lambda ev: (ev[0], ev[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid.tracks.append(track)
    return mid


def write_midi(mid, path: str | os.PathLike) -> Path:
    """Save a ``mido.MidiFile`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    buf = io.BytesIO()
    mid.save(file=buf)
    atomic.write_bytes(path, buf.getvalue())
    return path


@dataclass
class Transcription:
    """Notes, pedal and where they came from; writes MIDI, JSON, CSV and a piano-roll PNG."""

    notes: list[NoteEvent]
    pedal: list[PedalEvent] = field(default_factory=list)
    duration_s: float = 0.0
    options: DecodeOptions = field(default_factory=DecodeOptions)
    model: dict = field(default_factory=dict)
    bpm: float | None = None  # the tempo given for the MIDI file and the plot's bars (None: not known)
    source: str = ""  # the transcribed file's name: the plot's title

    def to_midi(self, bpm: float | None = None):
        """``mido.MidiFile`` (:func:`midi_from_events`: one "Piano" track, program 0, channel 0)
        with the notes and, when the pedal is on, CC64, at ``bpm`` (None: :attr:`bpm`, else
        :data:`DEFAULT_BPM`)."""
        import mido

        bpm = float(bpm or self.bpm or DEFAULT_BPM)
        # (seconds, order, message): at one time, pedal-up and note-offs go before note-ons, so a
        # re-struck key is released first; a note lasts at least one tick
        tick_s = 60.0 / (TICKS_PER_BEAT * bpm)
        events = []
        for e in self.notes:
            end = max(e.end_s, round(e.start_s / tick_s) * tick_s + tick_s)
            events.append((e.start_s, 2, mido.Message("note_on", note=e.pitch, velocity=e.velocity, channel=0)))
            events.append((end, 1, mido.Message("note_off", note=e.pitch, velocity=0, channel=0)))
        for p in self.pedal:
            end = max(p.end_s, round(p.start_s / tick_s) * tick_s + tick_s)
            events.append((p.start_s, 3, mido.Message("control_change", control=64, value=127, channel=0)))
            events.append((end, 0, mido.Message("control_change", control=64, value=0, channel=0)))
        return midi_from_events(events, bpm)

    def to_dict(self) -> dict:
        return {"notes": [asdict(n) for n in self.notes], "pedal": [asdict(p) for p in self.pedal],
                "duration_s": self.duration_s, "options": asdict(self.options), "model": self.model}

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["start_s", "end_s", "pitch", "velocity", "confidence"])
        for n in self.notes:
            w.writerow([f"{n.start_s:.4f}", f"{n.end_s:.4f}", n.pitch, n.velocity, f"{n.confidence:.3f}"])
        return buf.getvalue()

    def save(self, path: str | os.PathLike, bpm: float | None = None) -> Path:
        """Write by extension: ``.mid``/``.midi``, ``.json``, ``.csv`` or ``.png`` (atomically).
        ``bpm``: the MIDI file's tempo and the plot's bars (None: :attr:`bpm`)."""
        path = Path(path)
        ext = path.suffix.lower()
        bpm = bpm or self.bpm
        if ext in (".mid", ".midi"):
            return write_midi(self.to_midi(bpm), path)
        if ext == ".json":
            data = json.dumps(self.to_dict(), indent=1).encode()
        elif ext == ".csv":
            data = self.to_csv().encode()
        elif ext == ".png":
            title = f"{self.source}: piano transcription" if self.source else f"{path.stem}: piano transcription"
            data = piano_roll_png(self.notes, self.pedal, self.duration_s, title=title, bpm=bpm)
        else:
            raise DawsepError(f"{path}: unknown transcription format {ext!r}; use .mid, .json, .csv or .png")
        atomic.write_bytes(path, data)
        return path

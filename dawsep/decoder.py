"""The note decoder: frame posteriors -> :class:`NoteEvent`\\ s and :class:`PedalEvent`\\ s, in numpy
alone (no model, no files), offline (:func:`decode`) or frame by frame (:class:`OnlineDecoder`).

The posteriors cover the 88 keys (onset, frame, offset, velocity) and the sustain pedal,
``frame f`` covering samples ``[f·hop, (f+1)·hop)`` at the model's rate. The rules:

- an onset is a local maximum of the onset posterior over time above ``onset_threshold``,
  confirmed by the frame posterior (``>= frame_threshold``) at that frame or the next;
- the note lasts while the frame posterior stays above ``frame_threshold``, and ends early at an
  offset peak (``>= offset_threshold``) or at the next onset of the same key (a re-struck key);
- notes shorter than ``min_note_ms`` are dropped; velocity is the velocity posterior at the
  onset frame scaled to 1-127;
- the pedal posterior gives CC64 down/up intervals, kept when at least ``PEDAL_MIN_S`` long and
  when a note sounds under the press within its first ``PEDAL_MIN_S`` (a pedal holding no note
  changes nothing a listener hears; on noise the model presses it anyway). The model's frames follow the *sounding*
  note (pedal-extended, as it was trained), so ``note_ends="pedal"`` keeps those ends, and
  ``note_ends="key"`` estimates key releases: a note whose end coincides with a pedal release
  is shortened to when that pedal went down (or a short note, if struck under the pedal), and
  the CC64 events make a DAW sustain it exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dawsep.defaults import DecodeOptions

PEDAL_MIN_S = 0.05  # shorter sustain-pedal presses are dropped (sensor flicker, not playing)


@dataclass(frozen=True)
class NoteEvent:
    """One note: MIDI ``pitch`` (21-108), ``start_s``/``end_s`` in seconds, ``velocity`` 1-127,
    and the onset posterior at the strike (``confidence`` 0-1)."""

    pitch: int
    start_s: float
    end_s: float
    velocity: int
    confidence: float = 1.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class PedalEvent:
    """Sustain pedal held from ``start_s`` to ``end_s`` (CC64 127 then 0)."""

    start_s: float
    end_s: float


class OnlineDecoder:
    """The note decoder, frame by frame (:func:`decode` is this fed all frames, then flushed).

    It decides frame ``d`` when frame ``d + 1`` arrives (a peak needs its right neighbour), so
    notes come out once their end is certain, and :attr:`confirmed` lists notes as soon as they
    are certain to be kept (``min_note_ms`` reached): what live MIDI out needs for note-ons.
    A pedal press is decided ``PEDAL_MIN_S`` after it went down: kept if a note sounded under it
    by then (so live CC64 is no later than before, and a press on noise or drums, with no note
    under it, never reaches the MIDI).
    """

    #: a pedal press counts only with a note sounding under it within its first PEDAL_MIN_S
    PEDAL_NEEDS_NOTE = True

    def __init__(self, options: DecodeOptions | None = None, hop_s: float = 0.02, min_pitch: int = 21):
        self.o = options or DecodeOptions()
        self.hop_s, self.min_pitch = float(hop_s), int(min_pitch)
        self.min_frames = self.o.min_note_ms / 1000.0 / self.hop_s
        self.reset()

    def reset(self) -> None:
        self._prev = self._cur = None  # frames d-1 and d: (onset, frame, offset, velocity, pedal)
        self._d = 0  # index of the frame to decide next
        self._active: dict[int, tuple[int, float, float, bool]] = {}  # key -> (start, velocity, conf, confirmed)
        self._pedal_from: int | None = None
        self._pedal_heard = False  # a note sounded since the pedal went down
        self.notes: list[NoteEvent] = []  # finished notes, drained by the caller
        self.pedal: list[PedalEvent] = []
        self.confirmed: list[tuple[int, float, int]] = []  # (pitch, start_s, velocity) of kept notes
        self.pedal_confirmed: list[float] = []  # start_s of pedal presses long enough to keep
        self._pedal_ok = False

    def push(self, post: dict[str, np.ndarray]) -> None:
        """Feed ``{"onset", "frame", "offset", "velocity": (m, 88), "pedal": (m, 1)}`` frames."""
        onset = np.asarray(post["onset"], np.float32)
        m = onset.shape[0]
        if m == 0:  # e.g. a one-sample input: no frame, no note
            return
        frame = np.asarray(post["frame"], np.float32)
        offset = np.asarray(post["offset"], np.float32) if "offset" in post else np.zeros_like(onset)
        velocity = np.asarray(post["velocity"], np.float32) if "velocity" in post else np.full_like(onset, 0.5)
        pedal = np.asarray(post["pedal"], np.float32).reshape(m, -1)[:, 0] if "pedal" in post else np.zeros(m, np.float32)
        for i in range(m):
            self._step((onset[i], frame[i], offset[i], velocity[i], pedal[i]))

    def flush(self) -> None:
        """End of input: decide the last frame, close what is open (the note lists stay readable)."""
        if self._cur is not None:
            self._step(None)
        n = self._d
        for k, (t, vel, conf, _) in sorted(self._active.items()):
            self._finish(k, t, vel, conf, n, n * self.hop_s)
        self._active.clear()
        if self._pedal_from is not None:
            self._close_pedal(n)
        self._prev = self._cur = None

    def _step(self, nxt) -> None:
        if self._cur is None:
            self._cur = nxt
            return
        o, d = self.o, self._d
        onset, frame, offset, velocity, pedal = self._cur
        none = np.full_like(onset, -1.0)
        p_on, p_off = (self._prev[0], self._prev[2]) if self._prev is not None else (none, none)
        n_on, n_off = (nxt[0], nxt[2]) if nxt is not None else (none, none)
        on = frame >= o.frame_threshold
        on_next = nxt[1] >= o.frame_threshold if nxt is not None else np.zeros_like(on)
        start = (onset >= o.onset_threshold) & (onset > p_on) & (onset >= n_on) & (on | on_next)
        stop = (offset >= o.offset_threshold) & (offset > p_off) & (offset >= n_off)
        for k in list(self._active):
            if start[k] or not on[k] or stop[k]:
                t, vel, conf, _ = self._active.pop(k)
                # a note whose frames stop ends at the frame boundary; an offset peak inside that frame
                end_s = (d + 0.5) * self.hop_s if stop[k] and on[k] else d * self.hop_s
                self._finish(k, t, vel, conf, d, end_s)
        for k in np.flatnonzero(start):
            self._active[int(k)] = (d, float(velocity[k]), float(onset[k]), False)
        for k, (t, vel, conf, done) in list(self._active.items()):
            if not done and d + 1 - t >= self.min_frames:  # it lasts past d: long enough to keep
                self._active[k] = (t, vel, conf, True)
                self.confirmed.append((k + self.min_pitch, round((t + 0.5) * self.hop_s, 6), _midi_velocity(vel)))
        if o.pedal:
            down = pedal >= o.pedal_threshold
            if down and self._pedal_from is None:
                self._pedal_from, self._pedal_ok, self._pedal_heard = d, False, False
            elif not down and self._pedal_from is not None:
                self._close_pedal(d)
            if self._pedal_from is not None:
                self._pedal_heard = self._pedal_heard or bool(self._active) or not self.PEDAL_NEEDS_NOTE
                if not self._pedal_ok and self._pedal_heard \
                        and (d + 1 - self._pedal_from) * self.hop_s >= PEDAL_MIN_S - 1e-9:
                    self._pedal_ok = True
                    self.pedal_confirmed.append(round(self._pedal_from * self.hop_s, 6))
        self._prev, self._cur, self._d = self._cur, nxt, d + 1

    def _finish(self, k: int, t: int, vel: float, conf: float, end: int, end_s: float) -> None:
        if end - t < self.min_frames:
            return
        self.notes.append(NoteEvent(k + self.min_pitch, round((t + 0.5) * self.hop_s, 6), round(end_s, 6),
                                    _midi_velocity(vel), round(conf, 4)))

    def _close_pedal(self, end: int) -> None:
        a, self._pedal_from = self._pedal_from, None
        if self._pedal_ok:  # long enough, with a note under it: see _step
            self.pedal.append(PedalEvent(round(a * self.hop_s, 6), round(end * self.hop_s, 6)))


def _midi_velocity(v: float) -> int:
    return int(np.clip(round(float(v) * 127), 1, 127))


def decode(post: dict[str, np.ndarray], hop_s: float, options: DecodeOptions | None = None,
           min_pitch: int = 21) -> tuple[list[NoteEvent], list[PedalEvent]]:
    """Posteriors ``{"onset", "frame", "offset", "velocity": (F, 88), "pedal": (F, 1)}`` -> notes
    (sorted by start, then pitch) and pedal intervals. See the module docstring for the rules."""
    o = options or DecodeOptions()
    dec = OnlineDecoder(o, hop_s, min_pitch)
    dec.push(post)
    dec.flush()
    notes, pedal = dec.notes, dec.pedal
    if o.note_ends == "key" and pedal:
        notes = [_key_release(nt, pedal, hop_s, o.min_note_ms / 1000.0) for nt in notes]
    notes.sort(key=lambda e: (e.start_s, e.pitch))
    return notes, pedal


def _key_release(note: NoteEvent, pedal: list[PedalEvent], hop_s: float, min_s: float) -> NoteEvent:
    for p in pedal:
        if abs(note.end_s - p.end_s) <= 1.5 * hop_s and note.start_s < p.end_s:
            end = max(note.start_s + max(min_s, hop_s), p.start_s)
            return NoteEvent(note.pitch, note.start_s, round(min(end, note.end_s), 6), note.velocity,
                             note.confidence)
    return note

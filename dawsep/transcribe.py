"""Piano transcription at run time: ONNX posteriors -> notes -> MIDI (numpy + mido, no torch).

>>> t = Transcriber()                                  # the packaged default model
>>> result = t.transcribe(audio, sample_rate)          # Transcription(notes, pedal, ...)
>>> result.to_midi().save("piano.mid")

The model gives per-frame posteriors over the 88 keys (onset, frame, offset, velocity) and the
sustain pedal, ``frame f`` covering samples ``[f·hop, (f+1)·hop)`` at the model's rate. Frames
are chunked by overlap-discard (:class:`dawsep.chunking.OverlapDiscard`), then
:func:`decode` turns them into :class:`NoteEvent`\\ s:

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

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dawsep import atomic, runtime
from dawsep.chunking import OverlapDiscard
from dawsep.defaults import DEFAULT_BPM, NOTE_ENDS, DecodeOptions  # noqa: F401  (the one definition)
from dawsep.errors import AudioFormatError, DawsepError, ModelError
from dawsep.pianoroll import piano_roll_png  # noqa: F401  (re-exported: the PNG writer)

OUTPUTS = ("onset", "frame", "offset", "velocity", "pedal")
N_KEYS = 88
PEDAL_MIN_S = 0.05  # shorter sustain-pedal presses are dropped (sensor flicker, not playing)
TICKS_PER_BEAT = 480


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


# ------------------------------------------------------------------------------ outputs
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


# ------------------------------------------------------------------------------ runtime
class Transcriber:
    """Waveform -> posteriors -> notes with a transcriber ONNX model (docs/plugin-contract.md:
    ``audio [batch, samples]`` mono at ``dawsep.sample_rate`` -> ``onset``, ``frame``, ``offset``,
    ``velocity`` ``[batch, frames, 88]`` and ``pedal`` ``[batch, frames, 1]``)."""

    def __init__(self, model: str | os.PathLike = "default", *, threads: int | None = None,
                 segment_seconds: float | None = None, context_seconds: float = 1.0):
        self.model = runtime.load(model, "transcriber", threads)
        info = self.model.info
        try:
            self.hop = int(info.extra["hop_samples"])
            self.min_pitch = int(info.extra.get("min_pitch", 21))
        except (KeyError, ValueError):
            raise ModelError(f"{info.path}: transcriber metadata needs dawsep.hop_samples") from None
        self.info, self.sample_rate = info, info.sample_rate
        seg = int(round(segment_seconds * self.sample_rate)) if segment_seconds else info.segment_samples
        self.segment = max(self.hop, seg // self.hop * self.hop)
        self.context = int(round(context_seconds * self.sample_rate / self.hop))
        if self.segment // self.hop - 2 * self.context < 1:
            self.context = max(0, (self.segment // self.hop - 1) // 4)
        names = [o.name for o in self.model.session.get_outputs()]
        missing = [k for k in OUTPUTS[:4] if k not in names]
        if missing:
            raise ModelError(f"{info.path}: transcriber outputs {missing} are missing (has {names})")
        self.outputs = [k for k in OUTPUTS if k in names]
        self.hop_s = self.hop / self.sample_rate

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """``(1, segment)`` -> ``(1, frames, 4·88 [+1])`` posteriors concatenated in ``self.outputs`` order."""
        outs = self.model.run(self.outputs, {"audio": batch})
        return np.concatenate(outs, axis=-1)

    def stream(self) -> OverlapDiscard:
        dims = N_KEYS * 4 + (1 if "pedal" in self.outputs else 0)
        return OverlapDiscard(self._run, self.segment, self.hop, self.context, dims)

    def split(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """``(F, dims)`` engine output -> ``{name: (F, 88 | 1)}``."""
        out, i = {}, 0
        for name in self.outputs:
            w = 1 if name == "pedal" else N_KEYS
            out[name] = frames[:, i:i + w]
            i += w
        return out

    def posteriors(self, audio: np.ndarray, sample_rate: int | None = None) -> dict[str, np.ndarray]:
        """Mono or ``(channels, samples)`` audio at any rate -> frame posteriors."""
        from dawsep import audio as audio_io

        x = audio_io.as_block(audio, dtype=np.float32).mean(axis=0)
        if not np.isfinite(x).all():
            raise AudioFormatError("<array>", "audio contains NaN or infinite samples")
        sr = int(sample_rate or self.sample_rate)
        if sr != self.sample_rate:
            x = audio_io.resample(x[None], sr, self.sample_rate)[0]
        eng = self.stream()
        return self.split(np.concatenate([eng.push(x), eng.flush()]))

    def transcribe(self, audio: np.ndarray, sample_rate: int | None = None,
                   options: DecodeOptions | None = None) -> Transcription:
        sr = int(sample_rate or self.sample_rate)
        post = self.posteriors(audio, sr)
        options = options or DecodeOptions()
        notes, pedal = decode(post, self.hop_s, options, self.min_pitch)
        return Transcription(notes, pedal, round(np.shape(audio)[-1] / sr, 6), options, self.info.describe())


class TranscriptionSink:
    """Streams audio blocks ``(channels, n)`` at ``in_rate`` into a transcriber (mono mix,
    resampled on the fly) and decodes at :meth:`finish`. Posteriors are kept as float16:
    about 125 MB for an hour of audio at 50 frames/s, against 2.5 GB for the audio itself."""

    def __init__(self, transcriber: Transcriber, in_rate: int, options: DecodeOptions | None = None):
        from dawsep import audio as audio_io

        self.t, self.in_rate, self.options = transcriber, int(in_rate), options or DecodeOptions()
        self.engine = transcriber.stream()
        self.resampler = (audio_io.Resampler(self.in_rate, transcriber.sample_rate, channels=1)
                          if self.in_rate != transcriber.sample_rate else None)
        self.frames: list[np.ndarray] = []
        self.samples = 0

    def push(self, block: np.ndarray) -> None:
        from dawsep.audio import as_block

        x = as_block(block, dtype=np.float32).mean(axis=0, keepdims=True)
        self.samples += x.shape[1]
        if self.resampler is not None:
            x = self.resampler.process(x)
        self.frames.append(self.engine.push(x[0]).astype(np.float16))

    def finish(self) -> Transcription:
        if self.resampler is not None:
            self.frames.append(self.engine.push(self.resampler.flush()[0]).astype(np.float16))
        self.frames.append(self.engine.flush().astype(np.float16))
        post = self.t.split(np.concatenate(self.frames).astype(np.float32))
        self.frames = []
        notes, pedal = decode(post, self.t.hop_s, self.options, self.t.min_pitch)
        return Transcription(notes, pedal, round(self.samples / self.in_rate, 6), self.options, self.t.info.describe())


def options_from_preset(cfg) -> DecodeOptions:
    """A preset's ``[transcribe]`` section -> :class:`DecodeOptions`."""
    return DecodeOptions(onset_threshold=cfg.onset_threshold, frame_threshold=cfg.frame_threshold,
                         offset_threshold=cfg.offset_threshold, min_note_ms=cfg.min_note_ms, pedal=cfg.pedal,
                         note_ends=cfg.note_ends)

"""Live MIDI from audio: the streaming transcriber, a block processor whose output is timed
MIDI events (the offline overlap-discard engine and the online note decoder, driven block by
block; the fixed-delay reasoning of :mod:`dawsep.stream` applies)."""
from __future__ import annotations

import math

from dawsep.errors import PluginError
from dawsep.stream_pipeline import resampler_lag, stereo


class StreamingTranscriber:
    """Live MIDI out: ``process((channels, n))`` -> ``[(sample_offset, mido.Message), ...]`` for
    this block, each event at its place in the audio delayed by ``latency_samples``.

    The audio goes through the same overlap-discard engine and frame-by-frame note decoder as
    offline transcription; a note-on goes out once the note is certain to be kept (it reached
    ``min_note_ms``), a note-off once its end is known, CC64 when the pedal goes down and up.
    ``latency_samples`` bounds how late those decisions come, so every event lands in a block at
    its exact offset; notes end where their frames stop (pedal-extended, as the model hears them).
    """

    def __init__(self, model="default", max_block_size: int = 8192, *, sample_rate: int | None = None,
                 options=None, segment_seconds: float | None = 2.0, threads: int = 1, transcriber=None,
                 channel: int = 0):
        from dawsep.audio import Resampler
        from dawsep.transcribe import DecodeOptions, OnlineDecoder, Transcriber

        self.transcriber = transcriber or Transcriber(model, threads=threads, segment_seconds=segment_seconds)
        t = self.transcriber
        self.options = options or DecodeOptions()
        self.sample_rate = int(sample_rate or t.sample_rate)
        self.max_block_size, self.channel = int(max_block_size), int(channel)
        self._engine = t.stream()
        self._decoder = OnlineDecoder(self.options, t.hop_s, t.min_pitch)
        self._rs = Resampler(self.sample_rate, t.sample_rate, 1) if self.sample_rate != t.sample_rate else None
        # worst-case decision delay: the engine's hold-back, one frame to see a peak's right
        # neighbour, the minimum note length, one frame of rounding, and the resampler's lag
        from dawsep.transcribe import PEDAL_MIN_S

        look = max(self._decoder.min_frames, PEDAL_MIN_S / t.hop_s)
        decide = self._engine.max_delay + t.hop * (2 + int(math.ceil(look)))
        lag = resampler_lag(self.sample_rate, t.sample_rate)
        self.latency_samples = int(math.ceil((decide + lag) * self.sample_rate / t.sample_rate)) + 2
        self.tail_samples = self.latency_samples
        self.reset()

    def reset(self) -> None:
        self._engine.reset()
        self._decoder.reset()
        if self._rs is not None:
            self._rs.reset()
        self._pos = 0  # host samples processed so far
        self._queue: list[tuple[int, int, int, object]] = []  # (position, order, sequence, message)
        self._seq = 0
        self.late_events = 0  # events decided after their slot: should stay 0

    def _schedule(self, seconds: float, order: int, msg) -> None:
        # order at one position: pedal up, note-offs, note-ons, pedal down (a re-struck key is
        # released before it sounds again)
        self._seq += 1
        self._queue.append((int(round(seconds * self.sample_rate)) + self.latency_samples, order, self._seq, msg))

    def process(self, block) -> list:
        import mido

        x, _ = stereo(block)
        n = x.shape[1]
        if n > self.max_block_size:
            raise PluginError(f"block of {n} samples exceeds max_block_size {self.max_block_size}")
        mono = x.mean(axis=0, keepdims=True)
        if self._rs is not None:
            mono = self._rs.process(mono)
        frames = self._engine.push(mono[0])
        if frames.shape[0]:
            self._decoder.push(self.transcriber.split(frames))
        d, ch = self._decoder, self.channel
        for pitch, start_s, vel in d.confirmed:
            self._schedule(start_s, 2, mido.Message("note_on", note=pitch, velocity=vel, channel=ch))
        for note in d.notes:
            self._schedule(note.end_s, 1, mido.Message("note_off", note=note.pitch, velocity=0, channel=ch))
        for p in d.pedal:
            self._schedule(p.end_s, 0, mido.Message("control_change", control=64, value=0, channel=ch))
        for start_s in d.pedal_confirmed:
            self._schedule(start_s, 3, mido.Message("control_change", control=64, value=127, channel=ch))
        d.confirmed.clear()
        d.notes.clear()
        d.pedal.clear()
        d.pedal_confirmed.clear()
        start, end = self._pos, self._pos + n
        self._pos = end
        due = sorted(e for e in self._queue if e[0] < end)
        self._queue = [e for e in self._queue if e[0] >= end]
        out = []
        for pos, _, _, msg in due:
            if pos < start:
                self.late_events += 1
            out.append((max(0, pos - start), msg))
        return out

"""Piano transcription at run time: :class:`Transcriber` runs the ONNX model over a waveform
(chunked by overlap-discard, :class:`dawsep.chunking.OverlapDiscard`) into frame posteriors, and
decodes them into notes (numpy + mido, no torch).

>>> t = Transcriber()                                  # the packaged default model
>>> result = t.transcribe(audio, sample_rate)          # Transcription(notes, pedal, ...)
>>> result.to_midi().save("piano.mid")

The decoding rules live in :mod:`dawsep.decoder` (posteriors -> notes, numpy alone), the result
and its files in :mod:`dawsep.note_files` (MIDI, JSON, CSV, PNG); both are importable from here.
"""
from __future__ import annotations

import os

import numpy as np

from dawsep import runtime
from dawsep.chunking import OverlapDiscard
from dawsep.decoder import PEDAL_MIN_S, NoteEvent, OnlineDecoder, PedalEvent, decode
from dawsep.defaults import DEFAULT_BPM, NOTE_ENDS, TRANSCRIBE_SEGMENT_S, DecodeOptions  # the one definition
from dawsep.errors import AudioFormatError, ModelError
from dawsep.note_files import TICKS_PER_BEAT, Transcription, midi_from_events, write_midi
from dawsep.pianoroll import piano_roll_png  # the PNG writer

__all__ = [
    "DEFAULT_BPM", "DecodeOptions", "N_KEYS", "NOTE_ENDS", "NoteEvent", "OUTPUTS", "OnlineDecoder", "PEDAL_MIN_S",
    "PedalEvent", "TICKS_PER_BEAT", "Transcriber", "Transcription", "TranscriptionSink", "decode",
    "midi_from_events", "options_from_preset", "piano_roll_png", "write_midi",
]

OUTPUTS = ("onset", "frame", "offset", "velocity", "pedal")
N_KEYS = 88


class Transcriber:
    """Waveform -> posteriors -> notes with a transcriber ONNX model (docs/plugin-contract.md:
    ``audio [batch, samples]`` mono at ``dawsep.sample_rate`` -> ``onset``, ``frame``, ``offset``,
    ``velocity`` ``[batch, frames, 88]`` and ``pedal`` ``[batch, frames, 1]``)."""

    def __init__(self, model: str | os.PathLike = "default", *, threads: int | None = None,
                 segment_seconds: float | None = None, context_seconds: float = 1.0):
        """``segment_seconds``: the chunk the model runs on (default: :data:`TRANSCRIBE_SEGMENT_S`
        when the graph takes any length, else the model's ``dawsep.segment_samples``); a stream
        that must answer soon passes a short one. ``context_seconds`` of each chunk's edges are
        computed and discarded."""
        self.model = runtime.load(model, "transcriber", threads)
        info = self.model.info
        try:
            self.hop = int(info.extra["hop_samples"])
            self.min_pitch = int(info.extra.get("min_pitch", 21))
        except (KeyError, ValueError):
            raise ModelError(f"{info.path}: transcriber metadata needs dawsep.hop_samples") from None
        self.info, self.sample_rate = info, info.sample_rate
        # a graph whose length axis is symbolic takes any length: longer offline chunks discard
        # less context, and the last chunk is cut to what is left (OverlapDiscard.short_tail)
        self.any_length = not isinstance(self.model.session.get_inputs()[0].shape[-1], int)
        if segment_seconds:
            seg = int(round(segment_seconds * self.sample_rate))
        elif self.any_length:
            seg = max(info.segment_samples, int(round(TRANSCRIBE_SEGMENT_S * self.sample_rate)))
        else:
            seg = info.segment_samples
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
        return OverlapDiscard(self._run, self.segment, self.hop, self.context, dims, short_tail=self.any_length)

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

"""Block processors for DAW hosts: any block size, a fixed declared latency, ``reset()``, and a
chunk grid anchored to the host's timeline.

A host calls ``process(block)`` with ``(channels, n)`` audio at its own rate and gets ``n``
samples back, equal to dawsep's offline result delayed by exactly ``latency_samples``.

How: every stage dawsep streams through is *aligned but withholding*: the resampler
(:class:`dawsep.audio.Resampler`), the chunking engine (:class:`dawsep.chunking.OverlapAdd`) and a
chain with its own delay trimmed all emit, concatenated, exactly the offline output, only some of
it later than the input arrives. Their hold-back is bounded, so a FIFO primed with that bound's
worth of silence turns the pipeline into a fixed delay (:mod:`dawsep.stream_pipeline`). No second
implementation of the separation exists for streaming: it is the offline engine, driven block by
block.

Where the model's chunks fall: a host that knows where its blocks are on its timeline (a DAW's
transport) passes ``position_samples`` with each block. The separator's chunks are then cut
where ``dawsep separate`` cuts the same audio, from timeline sample 0, and a block that does not
follow the previous one (a locate, a loop, a bounce's pre-roll) restarts the stream there, so a
bounce from the session start equals the offline separation of the track, and two bounces of the
same range are equal. Without positions, chunks count from the last ``reset()``.

Memory does not grow with the length of a stream: every buffer is bounded by one model chunk
plus one block.

:class:`~dawsep.stream_transcriber.StreamingTranscriber` (live MIDI) and
:class:`~dawsep.realtime.RealtimeRunner` (a worker thread for real-time hosts) live in their own
modules and are importable from here.
"""
from __future__ import annotations

import numpy as np

from dawsep.errors import PluginError
from dawsep.realtime import RealtimeRunner
from dawsep.stream_pipeline import Pipeline, stereo, take
from dawsep.stream_transcriber import StreamingTranscriber

__all__ = ["StreamingSeparator", "StreamingChain", "StreamingTranscriber", "RealtimeRunner"]


class StreamingSeparator:
    """A separator as a block processor: ``process((channels, n)) -> (n_stems, channels, n)``.

    ``sample_rate`` is the host's (default: the model's); other rates are resampled in and out.
    ``segment_seconds`` sets the model chunk and with it the latency (about one chunk): short
    chunks for live use, the model's default for the best quality. ``phase`` and
    ``phase_iterations`` as :class:`~dawsep.separate.Separator` (applied per chunk, so the
    latency does not change; the cost lands on the block that completes a chunk); ``stems``
    too (the stems to return, in that order; default all).

    ``process(block, position_samples)``: where the block starts on the host's timeline (host
    samples); the chunk grid follows it, and a jump restarts the stream there (see the module).
    Exact at the model's rate; at another host rate the grid lands within a sample of the
    timeline's (the position is converted to the model's rate and the resamplers restart).
    """

    def __init__(self, model="default", max_block_size: int = 8192, *, sample_rate: int | None = None,
                 segment_seconds: float | None = None, overlap: float | None = None, threads: int = 1, separator=None,
                 phase: str = "mixture", phase_iterations: int | None = None, stems=None):
        from dawsep.separate import DEFAULT_OVERLAP, Separator

        self.separator = separator or Separator(model, segment_seconds=segment_seconds, threads=threads,
                                                overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                                                phase=phase, phase_iterations=phase_iterations, stems=stems)
        self.stems = self.separator.stems
        self.sample_rate = int(sample_rate or self.separator.sample_rate)
        self._engine = self.separator.stream()
        s = len(self.stems)
        model_rate = self.separator.sample_rate
        # At a host rate other than the model's, what the model cannot see (the input minus its
        # round trip through the model's rate) goes into "other", as offline
        # (Separator.separate): the stems add up to the input. Both queues stay under a chunk.
        from dawsep.separate import RESIDUAL_STEM

        self._residual_row = (self.stems.index(RESIDUAL_STEM)
                              if self.sample_rate != model_rate and RESIDUAL_STEM in self.stems else None)
        if self._residual_row is not None:
            from dawsep.audio import Resampler

            self._mix_back = Resampler(model_rate, self.sample_rate, 2)
        self._mix_model: list[np.ndarray] = []  # model-rate input not yet matched by engine output
        self._mix_host: list[np.ndarray] = []  # host-rate input not yet matched by output

        def inner(x: np.ndarray) -> np.ndarray:
            y = self._engine.push(x)  # (stems, 2, m)
            if self._residual_row is not None:
                self._mix_model.append(x)
                self._last_mix = take(self._mix_model, y.shape[2])
            return y.reshape(s * 2, -1)

        def post(host: np.ndarray, y: np.ndarray) -> np.ndarray:
            if self._residual_row is None:
                return y
            self._mix_host.append(host)
            low = self._mix_back.process(self._last_mix)
            r = 2 * self._residual_row
            y = y.copy()
            y[r:r + 2] += take(self._mix_host, low.shape[1]) - low
            return y

        self._pipe = Pipeline(inner, 2 * s, self.sample_rate, model_rate,
                               self._engine.max_delay, max_block_size, post=post)
        self.latency_samples = self._pipe.latency
        self.tail_samples = self.latency_samples  # silence to feed after the end to get all of it out
        self.max_block_size = self._pipe.max_block_size
        self.jumps = 0  # streams restarted because a block's position did not follow the last one
        self.reset()

    def reset(self, position_samples: int = 0) -> None:
        """Forget everything: the next block starts a new stream (as offline, from silence), at
        ``position_samples`` on the timeline (host samples; chunks are cut on the grid from 0)."""
        position = int(position_samples)
        model_rate = self.separator.sample_rate
        self._engine.reset(position if self.sample_rate == model_rate
                           else int(round(position * model_rate / self.sample_rate)))
        self._pipe.reset()
        self._mix_model, self._mix_host = [], []
        if self._residual_row is not None:
            self._mix_back.reset()
        self._expected: int | None = position  # where the next block continues this stream

    def process(self, block, position_samples: int | None = None) -> np.ndarray:
        """``(channels, n)`` -> ``(n_stems, channels, n)``, delayed by ``latency_samples``.
        ``position_samples``: the block's first sample on the host's timeline, or None (no
        transport: the stream goes on, its chunks counted from the last reset)."""
        x, channels = stereo(block)
        if position_samples is not None and int(position_samples) != self._expected:
            self.jumps += 1  # a locate, a loop or a (re)start: the grid restarts there
            self.reset(int(position_samples))
        y = self._pipe.process(x).reshape(len(self.stems), 2, -1)
        self._expected = None if position_samples is None else int(position_samples) + x.shape[1]
        return y.mean(axis=1, keepdims=True) if channels == 1 else y


class StreamingChain:
    """A preset's chain (its ``[separate]`` step included) as a block processor:
    ``process((channels, n)) -> (channels, n)``, the offline render delayed by ``latency_samples``.

    Effect tails (reverb, delay) keep ringing for as long as the host keeps calling after the
    input ends; ``tail_samples`` is what it takes to get the input's own last sample out.
    """

    def __init__(self, preset, max_block_size: int = 8192, *, sample_rate: int | None = None,
                 segment_seconds: float | None = None):
        from dawsep.chain import Chain

        if isinstance(preset, Chain):
            chain = preset
        else:  # a shorter separator chunk for live use trades quality for latency
            chain = preset.build_chain(**({"segment_seconds": segment_seconds} if segment_seconds else {}))
        rates = chain.model_sample_rates
        if len(rates) > 1:
            raise PluginError(f"chain mixes model steps at {sorted(rates)} Hz")
        host = int(sample_rate or next(iter(rates), 44100))
        model_rate = next(iter(rates), host)
        chain.check_sample_rate(model_rate)
        self.chain, self.sample_rate = chain, host
        self._skip = 0

        def inner(x: np.ndarray) -> np.ndarray:
            y = self.chain(x, model_rate, reset=False)
            if self._skip:  # the chain's own delay: trimmed, so the stage only withholds
                cut = min(self._skip, y.shape[1])
                y, self._skip = y[:, cut:], self._skip - cut
            return y

        self._pipe = Pipeline(inner, 2, host, model_rate, chain.latency_samples, max_block_size)
        self.latency_samples = self._pipe.latency
        self.tail_samples = self.latency_samples
        self.max_block_size = self._pipe.max_block_size
        self.reset()

    def reset(self) -> None:
        self.chain.reset()
        self._skip = self.chain.latency_samples
        self._pipe.reset()

    def process(self, block) -> np.ndarray:
        x, channels = stereo(block)
        y = self._pipe.process(x)
        return y.mean(axis=0, keepdims=True) if channels == 1 else y

"""Block processors for DAW hosts: any block size, a fixed declared latency, ``reset()``.

A host calls ``process(block)`` with ``(channels, n)`` audio at its own rate and gets ``n``
samples back, equal to dawsep's offline result delayed by exactly ``latency_samples``.

How: every stage dawsep streams through is *aligned but withholding*: the resampler
(:class:`dawsep.audio.Resampler`), the chunking engine (:class:`dawsep.chunking.OverlapAdd`) and a
chain with its own delay trimmed all emit, concatenated, exactly the offline output, only some of
it later than the input arrives. Their hold-back is bounded, so a FIFO primed with that bound's
worth of silence turns the pipeline into a fixed delay. No second implementation of the
separation exists for streaming: it is the offline engine, driven block by block.

Memory does not grow with the length of a stream: every buffer is bounded by one model chunk
plus one block.
"""
from __future__ import annotations

import math

import numpy as np

from dawsep.errors import PluginError


class _Fifo:
    """Fixed-delay output queue: starts with ``delay`` zeros, then whatever is pushed."""

    def __init__(self, rows: int, delay: int):
        self.rows, self.delay = rows, delay
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros((self.rows, self.delay), np.float32)

    def push_pop(self, y: np.ndarray, n: int) -> np.ndarray:
        if y.shape[1]:
            self._buf = np.concatenate([self._buf, y], axis=1)
        if self._buf.shape[1] < n:  # cannot happen if the declared latency bound holds
            raise PluginError(f"stream underrun: {self._buf.shape[1]} samples ready, {n} requested")
        out, self._buf = self._buf[:, :n], self._buf[:, n:]
        return out


def _resampler_lag(from_rate: int, to_rate: int) -> int:
    """Most output samples a :class:`~dawsep.audio.Resampler` holds back (filter half-length)."""
    if from_rate == to_rate:
        return 0
    from dawsep.audio import Resampler

    return Resampler(from_rate, to_rate, 1).max_hold_samples


def _take(queue: list[np.ndarray], n: int) -> np.ndarray:
    """Pop the first ``n`` samples of a queue of ``(channels, m)`` blocks (zeros if short)."""
    if not queue:
        return np.zeros((2, n), np.float32)
    x = np.concatenate(queue, axis=1) if len(queue) != 1 else queue[0]
    queue[:] = [x[:, n:]] if x.shape[1] > n else []
    out = x[:, :n]
    return out if out.shape[1] == n else np.pad(out, ((0, 0), (0, n - out.shape[1])))


def _stereo(block) -> tuple[np.ndarray, int]:
    from dawsep.audio import as_block

    x = as_block(block, max_channels=2, dtype=np.float32)
    return (np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x), x.shape[0]


class _Pipeline:
    """host rate -> [resample] -> ``inner`` (aligned, withholding) -> [resample] -> host rate -> FIFO."""

    def __init__(self, inner, rows: int, host_rate: int, model_rate: int, inner_hold: int, max_block_size: int,
                 post=None):
        from dawsep.audio import Resampler

        self.inner, self.rows, self.max_block_size = inner, rows, int(max_block_size)
        self.post = post  # (host-rate input block, host-rate output) -> output, before the FIFO
        self.host_rate, self.model_rate = int(host_rate), int(model_rate)
        same = self.host_rate == self.model_rate
        self.rs_in = None if same else Resampler(self.host_rate, self.model_rate, 2)
        self.rs_out = None if same else Resampler(self.model_rate, self.host_rate, rows)
        lag_in = 0 if same else _resampler_lag(self.host_rate, self.model_rate)
        lag_out = 0 if same else _resampler_lag(self.model_rate, self.host_rate)
        # worst-case hold-back, converted to host samples (rounded up, plus resampling rounding)
        self.latency = (int(math.ceil((lag_in + inner_hold) * self.host_rate / self.model_rate)) + lag_out
                        + (0 if same else 2))
        self.fifo = _Fifo(rows, self.latency)

    def reset(self) -> None:
        for r in (self.rs_in, self.rs_out):
            if r is not None:
                r.reset()
        self.fifo.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[1]
        if n > self.max_block_size:
            raise PluginError(f"block of {n} samples exceeds max_block_size {self.max_block_size}")
        host = x
        if self.rs_in is not None:
            x = self.rs_in.process(x)
        y = self.inner(x)  # (rows, m)
        if self.rs_out is not None:
            y = self.rs_out.process(y)
        if self.post is not None:
            y = self.post(host, y)
        return self.fifo.push_pop(y, n)


class StreamingSeparator:
    """A separator as a block processor: ``process((channels, n)) -> (n_stems, channels, n)``.

    ``sample_rate`` is the host's (default: the model's); other rates are resampled in and out.
    ``segment_seconds`` sets the model chunk and with it the latency (about one chunk): short
    chunks for live use, the model's default for the best quality. ``phase`` and
    ``phase_iterations`` as :class:`~dawsep.separate.Separator` (applied per chunk, so the
    latency does not change; the cost lands on the block that completes a chunk).
    """

    def __init__(self, model="default", max_block_size: int = 8192, *, sample_rate: int | None = None,
                 segment_seconds: float | None = None, overlap: float | None = None, threads: int = 1, separator=None,
                 phase: str = "mixture", phase_iterations: int | None = None):
        from dawsep.separate import DEFAULT_OVERLAP, Separator

        self.separator = separator or Separator(model, segment_seconds=segment_seconds, threads=threads,
                                                overlap=DEFAULT_OVERLAP if overlap is None else overlap,
                                                phase=phase, phase_iterations=phase_iterations)
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
                self._last_mix = _take(self._mix_model, y.shape[2])
            return y.reshape(s * 2, -1)

        def post(host: np.ndarray, y: np.ndarray) -> np.ndarray:
            if self._residual_row is None:
                return y
            self._mix_host.append(host)
            low = self._mix_back.process(self._last_mix)
            r = 2 * self._residual_row
            y = y.copy()
            y[r:r + 2] += _take(self._mix_host, low.shape[1]) - low
            return y

        self._pipe = _Pipeline(inner, 2 * s, self.sample_rate, model_rate,
                               self._engine.max_delay, max_block_size, post=post)
        self.latency_samples = self._pipe.latency
        self.tail_samples = self.latency_samples  # silence to feed after the end to get all of it out
        self.max_block_size = self._pipe.max_block_size

    def reset(self) -> None:
        """Forget everything: the next block starts a new stream (as offline, from silence)."""
        self._engine.reset()
        self._pipe.reset()
        self._mix_model, self._mix_host = [], []
        if self._residual_row is not None:
            self._mix_back.reset()

    def process(self, block) -> np.ndarray:
        x, channels = _stereo(block)
        y = self._pipe.process(x).reshape(len(self.stems), 2, -1)
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

        self._pipe = _Pipeline(inner, 2, host, model_rate, chain.latency_samples, max_block_size)
        self.latency_samples = self._pipe.latency
        self.tail_samples = self.latency_samples
        self.max_block_size = self._pipe.max_block_size
        self.reset()

    def reset(self) -> None:
        self.chain.reset()
        self._skip = self.chain.latency_samples
        self._pipe.reset()

    def process(self, block) -> np.ndarray:
        x, channels = _stereo(block)
        y = self._pipe.process(x)
        return y.mean(axis=0, keepdims=True) if channels == 1 else y


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
        lag = _resampler_lag(self.sample_rate, t.sample_rate)
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

        x, _ = _stereo(block)
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


class RealtimeRunner:
    """Runs a block processor on a worker thread, so the audio thread only copies.

    ``RealtimeRunner(StreamingSeparator(...))`` (or a :class:`StreamingChain`) keeps the wrapped
    processor's contract, ``process(block) -> block`` delayed by ``latency_samples``, which is
    now the processor's latency plus ``buffer_samples``. A model call takes one block's time only
    on average: the block that completes a chunk pays for the whole chunk. Run inline, that block
    is late even at a low load; here the worker absorbs it while the host plays the
    ``buffer_samples`` already queued.

    ``realtime=True`` (a live host): ``process`` never waits. When the worker is behind, the
    missing samples are silence, counted in ``dropouts`` (blocks) and ``dropped_samples``, and the
    late samples are discarded when they arrive, so the latency never moves. ``realtime=False``
    (an offline bounce): ``process`` waits for the worker, and the output is exactly the wrapped
    processor's, delayed by ``buffer_samples``.

    The lock is held only to move arrays in and out of two queues, never while the model runs
    (ONNX Runtime and numpy release the GIL while they compute). ``worker_ms`` keeps the last
    4096 worker times (bounded memory), ``worst_worker_ms`` the worst since ``reset``.
    """

    def __init__(self, processor, buffer_samples: int | None = None, *, realtime: bool = True):
        import collections
        import threading

        self.processor = processor
        self.max_block_size = int(processor.max_block_size)
        self.buffer_samples = int(2 * self.max_block_size if buffer_samples is None else buffer_samples)
        if self.buffer_samples < 0:
            raise PluginError(f"buffer_samples must be >= 0, got {self.buffer_samples}")
        self.latency_samples = processor.latency_samples + self.buffer_samples
        self.tail_samples = self.latency_samples
        self.realtime = bool(realtime)
        self._cv = threading.Condition()
        self._todo: collections.deque = collections.deque()
        self._done: collections.deque = collections.deque()
        self.worker_ms = collections.deque(maxlen=4096)
        self._closed = False
        self._busy = False
        self._state()
        self._thread = threading.Thread(target=self._work, name="dawsep-stream-worker", daemon=True)
        self._thread.start()

    def _state(self) -> None:
        self._done.clear()
        self._ready = 0
        self._prime = self.buffer_samples  # silence owed before the first processed sample
        self._skip = 0                     # late samples to discard (after a dropout)
        self.dropouts = self.dropped_samples = 0
        self.worst_worker_ms = 0.0
        self.worker_ms.clear()

    def _work(self) -> None:
        import time

        while True:
            with self._cv:
                while not self._todo and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                block = self._todo.popleft()
                self._busy = True
            t = time.perf_counter()
            try:
                y = self.processor.process(block)
            except Exception as e:  # surfaced to the caller on its next process()
                y = e
            ms = 1000.0 * (time.perf_counter() - t)
            with self._cv:
                self._busy = False
                self.worker_ms.append(ms)
                self.worst_worker_ms = max(self.worst_worker_ms, ms)
                if isinstance(y, Exception):
                    self._done.append(y)
                else:
                    cut = min(self._skip, y.shape[-1])
                    self._skip -= cut
                    if cut < y.shape[-1]:
                        self._done.append(y[..., cut:])
                        self._ready += y.shape[-1] - cut
                self._cv.notify_all()

    def _take(self, n: int, lead: tuple) -> np.ndarray:
        """``n`` samples, shape ``lead + (n,)``, from the primed silence and the done queue (lock held)."""
        parts = []
        if self._prime:
            k = min(self._prime, n)
            parts.append(np.zeros(lead + (k,), np.float32))
            self._prime -= k
            n -= k
        while n and self._done:
            head = self._done[0]
            if isinstance(head, Exception):
                self._done.popleft()
                raise head
            k = min(n, head.shape[-1])
            parts.append(head[..., :k])
            if k == head.shape[-1]:
                self._done.popleft()
            else:
                self._done[0] = head[..., k:]
            self._ready -= k
            n -= k
        if n:  # dropout: silence now, and the late samples are dropped when they come
            parts.append(np.zeros(lead + (n,), np.float32))
            self._skip += n
            self.dropouts += 1
            self.dropped_samples += n
        return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def process(self, block) -> np.ndarray:
        from dawsep.audio import as_block

        x = np.array(block, dtype=np.float32, copy=True)  # the host reuses its buffer
        as_block(x, max_channels=2)
        n = x.shape[-1]
        if n > self.max_block_size:
            raise PluginError(f"expected a (channels, samples) block of at most {self.max_block_size} samples, "
                              f"got {x.shape}")
        lead = self._lead_shape(x)  # what the processor gives for this input (stems for a separator)
        with self._cv:
            if self._closed:
                raise PluginError("the runner was closed")
            self._todo.append(x)
            self._cv.notify_all()
            if not self.realtime:
                need = max(0, n - self._prime)
                while self._ready < need and not any(isinstance(d, Exception) for d in self._done):
                    self._cv.wait()
            return self._take(n, lead)

    def _lead_shape(self, x: np.ndarray) -> tuple:
        ch = 1 if x.ndim == 1 else x.shape[0]
        stems = getattr(self.processor, "stems", None)
        return (len(stems), ch) if stems is not None else (ch,)

    def drain(self) -> None:
        """Wait until the worker has processed every queued block (not for a realtime thread)."""
        with self._cv:
            while self._todo or self._busy:
                self._cv.wait()

    def reset(self) -> None:
        """Drain the worker, reset the processor, and start again from silence (host thread)."""
        self.drain()
        with self._cv:
            self.processor.reset()
            self._state()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""The worker thread between a real-time host and a block processor: the audio thread only
copies, the model runs on the worker, and what the worker owes the host stays bounded."""
from __future__ import annotations

import math

import numpy as np

from dawsep.errors import PluginError

#: input the worker may owe (blocks queued, not yet started) beyond its buffer and a few blocks,
#: in seconds of audio, before a realtime runner gives up on it and restarts the stream: a worker
#: this far behind is slower than real time, and waiting longer only grows the queue
OVERLOAD_SECONDS = 2.0


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

    Sustained overload (a worker slower than real time, realtime mode): the blocks waiting for the
    worker never exceed ``max_pending_samples`` (default: the buffer, four blocks and
    :data:`OVERLOAD_SECONDS` of audio). A block that would exceed it drops the whole queue (audio
    already too late to play) and starts a new stream with it: silence for the latency, then the
    processor, reset, from that block on; ``overflows`` counts these restarts. Memory and
    lateness stay bounded however long the overload lasts, and the latency never moves.
    """

    def __init__(self, processor, buffer_samples: int | None = None, *, realtime: bool = True,
                 max_pending_samples: int | None = None):
        import collections
        import threading

        self.processor = processor
        self.max_block_size = int(processor.max_block_size)
        self.buffer_samples = int(2 * self.max_block_size if buffer_samples is None else buffer_samples)
        if self.buffer_samples < 0:
            raise PluginError(f"buffer_samples must be >= 0, got {self.buffer_samples}")
        rate = int(getattr(processor, "sample_rate", None) or 44100)
        self.max_pending_samples = int(
            self.buffer_samples + 4 * self.max_block_size + math.ceil(OVERLOAD_SECONDS * rate)
            if max_pending_samples is None else max_pending_samples)
        if self.max_pending_samples < self.max_block_size:
            raise PluginError(f"max_pending_samples ({self.max_pending_samples}) must hold one block "
                              f"(max_block_size {self.max_block_size})")
        self.latency_samples = processor.latency_samples + self.buffer_samples
        self.tail_samples = self.latency_samples
        self.realtime = bool(realtime)
        self._cv = threading.Condition()
        self._todo: collections.deque = collections.deque()
        self._done: collections.deque = collections.deque()
        self.worker_ms = collections.deque(maxlen=4096)
        self._closed = False
        self._busy = False
        self._pending = 0  # samples queued in _todo
        self._gen = 0  # the current stream; an overload restart begins the next one
        self._worker_gen = 0  # the stream the processor's state belongs to (worker thread only)
        self._state()
        self._thread = threading.Thread(target=self._work, name="dawsep-stream-worker", daemon=True)
        self._thread.start()

    def _state(self) -> None:
        self._done.clear()
        self._ready = 0
        self._prime = self.buffer_samples  # silence owed before the first processed sample
        self._skip = 0                     # late samples to discard (after a dropout)
        self.dropouts = self.dropped_samples = self.overflows = 0
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
                gen, block = self._todo.popleft()
                self._pending -= block.shape[-1]
                self._busy = True
            t = time.perf_counter()
            try:
                if gen != self._worker_gen:  # the first block of a stream restarted by an overload
                    self.processor.reset()
                    self._worker_gen = gen
                y = self.processor.process(block)
            except Exception as e:  # surfaced to the caller on its next process()
                y = e
            ms = 1000.0 * (time.perf_counter() - t)
            with self._cv:
                self._busy = False
                self.worker_ms.append(ms)
                self.worst_worker_ms = max(self.worst_worker_ms, ms)
                if gen != self._gen:  # its stream was abandoned while it ran
                    pass
                elif isinstance(y, Exception):
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
            if self.realtime and self._pending + n > self.max_pending_samples:
                self._restart()
            self._todo.append((self._gen, x))
            self._pending += n
            self._cv.notify_all()
            if not self.realtime:
                need = max(0, n - self._prime)
                while self._ready < need and not any(isinstance(d, Exception) for d in self._done):
                    self._cv.wait()
            return self._take(n, lead)

    def _restart(self) -> None:
        """Overload (lock held): drop the queued blocks and what is owed of this stream; the next
        block starts a new one (the worker resets the processor before it), behind fresh silence."""
        self._todo.clear()
        self._pending = 0
        self._gen += 1
        self._done.clear()
        self._ready = 0
        self._prime, self._skip = self.buffer_samples, 0
        self.overflows += 1

    @property
    def pending_samples(self) -> int:
        """Samples queued for the worker and not yet started (at most ``max_pending_samples``)."""
        with self._cv:
            return self._pending

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

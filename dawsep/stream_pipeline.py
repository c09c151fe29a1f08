"""The fixed-delay plumbing the block processors share: a delay FIFO, the resamplers' hold-back,
block helpers, and the host-rate pipeline around an aligned-but-withholding stage
(:mod:`dawsep.stream` explains why a FIFO primed with the hold-back makes a fixed delay)."""
from __future__ import annotations

import math

import numpy as np

from dawsep.errors import PluginError


class Fifo:
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


def resampler_lag(from_rate: int, to_rate: int) -> int:
    """Most output samples a :class:`~dawsep.audio.Resampler` holds back (filter half-length)."""
    if from_rate == to_rate:
        return 0
    from dawsep.audio import Resampler

    return Resampler(from_rate, to_rate, 1).max_hold_samples


def take(queue: list[np.ndarray], n: int) -> np.ndarray:
    """Pop the first ``n`` samples of a queue of ``(channels, m)`` blocks (zeros if short)."""
    if not queue:
        return np.zeros((2, n), np.float32)
    x = np.concatenate(queue, axis=1) if len(queue) != 1 else queue[0]
    queue[:] = [x[:, n:]] if x.shape[1] > n else []
    out = x[:, :n]
    return out if out.shape[1] == n else np.pad(out, ((0, 0), (0, n - out.shape[1])))


def stereo(block) -> tuple[np.ndarray, int]:
    """A host block as ``(2, n)`` float32 (mono duplicated), and its own channel count."""
    from dawsep.audio import as_block

    x = as_block(block, max_channels=2, dtype=np.float32)
    return (np.repeat(x, 2, axis=0) if x.shape[0] == 1 else x), x.shape[0]


class Pipeline:
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
        lag_in = 0 if same else resampler_lag(self.host_rate, self.model_rate)
        lag_out = 0 if same else resampler_lag(self.model_rate, self.host_rate)
        # worst-case hold-back, converted to host samples (rounded up, plus resampling rounding)
        self.latency = (int(math.ceil((lag_in + inner_hold) * self.host_rate / self.model_rate)) + lag_out
                        + (0 if same else 2))
        self.fifo = Fifo(rows, self.latency)

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

"""Sample-rate conversion: a polyphase Kaiser-windowed sinc in numpy (:class:`Resampler`,
:func:`resample`), exact in time and chunk-invariant bit for bit.

Chosen over ``pedalboard.io.StreamResampler``, which leaves a quality- and ratio-dependent
fractional-sample offset (0.1-0.4 input samples), so a 1 kHz sine sent 44.1k -> 48k -> 44.1k came
back only -22 dB clean. Ours places output sample ``n`` exactly at input time
``n * from / to`` and round-trips that sine at about -95 dB.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dawsep.audio_checks import as_block, check_rate

# Kaiser-windowed sinc: 48 zero crossings each side at the lower rate, cutoff at 0.95 of the
# lower Nyquist, beta 10.  Measured: passband flat within 0.0001 dB to 0.42 fs (18.5 kHz at
# 44.1 kHz), -0.14 dB at 20 kHz/44.1 kHz, -46 dB at Nyquist, <= -100 dB from 0.52 fs on.
_ZERO_CROSSINGS = 48
_ROLLOFF = 0.95
_KAISER_BETA = 10.0
_PHASE_LOOP_MAX_L = 4096  # above this many phases, gather per output instead of looping phases


@lru_cache(maxsize=16)
def _filter_table(up: int, down: int) -> tuple[np.ndarray, int]:
    """Row p: the taps for an output that falls p/up of the way between two input samples;
    taps cover input offsets -half+1 .. half.  Rows sum to 1 (exact DC gain for every phase)."""
    scale = min(1.0, up / down)
    half = math.ceil(_ZERO_CROSSINGS / scale)
    k = np.arange(-half + 1, half + 1, dtype=np.float64)
    table = np.empty((up, 2 * half), np.float32)
    for r0 in range(0, up, 2048):  # row chunks keep the float64 temporaries small for odd ratios
        t = k[None, :] - (np.arange(r0, min(up, r0 + 2048)) / up)[:, None]
        u = np.clip(1.0 - (t / half) ** 2, 0.0, None)
        h = np.sinc(_ROLLOFF * scale * t) * np.i0(_KAISER_BETA * np.sqrt(u))
        table[r0:r0 + len(t)] = h / h.sum(axis=1, keepdims=True)
    table.setflags(write=False)
    return table, half


def resampled_length(frames: int, from_rate: int, to_rate: int) -> int:
    """Output length for ``frames`` input frames: ``round(frames * to_rate / from_rate)``, halves up."""
    return (2 * int(frames) * int(to_rate) + int(from_rate)) // (2 * int(from_rate))


class Resampler:
    """Stateful resampler: feed ``(channels, n)`` blocks of any size, then :meth:`flush`.

    Output sample ``n`` sits exactly at input time ``n * from_rate / to_rate`` (no delay to
    compensate), and the concatenated output is identical, bit for bit, however the input is
    split into blocks; after :meth:`flush` its total length is
    ``resampled_length(total_in, from_rate, to_rate)``.  Memory stays at one block plus the
    filter length.  :meth:`flush` also resets, ready for the next stream.
    """

    def __init__(self, from_rate: int, to_rate: int, channels: int = 2):
        self.from_rate = check_rate(from_rate, "from_rate")
        self.to_rate = check_rate(to_rate, "to_rate")
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        self.channels = int(channels)
        g = math.gcd(self.from_rate, self.to_rate)
        self._up, self._down = self.to_rate // g, self.from_rate // g  # out n <-> in n*down/up
        self._identity = self._up == self._down
        if not self._identity:
            self._table, self._half = _filter_table(self._up, self._down)
        self.reset()

    @property
    def max_hold_samples(self) -> int:
        """The most output samples :meth:`process` can hold back, however the input is split:
        an output is final only once the filter's last tap (half a filter length of input
        later) has arrived. A streaming stage that wants a fixed delay adds this much."""
        if self._identity:
            return 0
        return int(math.ceil((self._half + 1) * self.to_rate / self.from_rate)) + 2

    def reset(self) -> None:
        """Forget all input (start a new stream)."""
        half = 0 if self._identity else self._half
        self._buf = np.zeros((self.channels, max(half - 1, 0)), np.float32)  # zeros before t=0
        self._buf_start = -(half - 1) if half else 0  # input index of _buf[:, 0]
        self._next_out = 0
        self._total_in = 0

    def _produce(self, stop: int) -> np.ndarray:
        """Compute outputs _next_out .. stop-1 from _buf, then drop input no longer needed."""
        start, up, down, half = self._next_out, self._up, self._down, self._half
        count = max(stop - start, 0)
        out = np.empty((self.channels, count), np.float32)
        if count:
            if up <= _PHASE_LOOP_MAX_L:
                # Outputs r, r+up, r+2up... share one filter phase and step `down` inputs apart,
                # so each group is a strided window view times one tap vector (no copies).
                windows = sliding_window_view(self._buf, 2 * half, axis=1)
                for r in range(min(up, count)):
                    q = (start + r) * down
                    first = q // up - half + 1 - self._buf_start
                    n = (count - r + up - 1) // up
                    # einsum (not BLAS) keeps the summation order fixed: chunk-invariant bits
                    out[:, r::up] = np.einsum("cjk,k->cj", windows[:, first:first + down * (n - 1) + 1:down],
                                              self._table[q % up])
            else:
                offsets = np.arange(2 * half)
                for b in range(0, count, 4096):
                    q = np.arange(start + b, min(stop, start + b + 4096), dtype=np.int64) * down
                    idx = (q // up - half + 1 - self._buf_start)[:, None] + offsets
                    out[:, b:b + len(q)] = np.einsum("cnk,nk->cn", self._buf[:, idx], self._table[q % up])
        self._next_out = max(stop, start)
        keep_from = (self._next_out * down) // up - half + 1 - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[:, keep_from:]
            self._buf_start += keep_from
        return out

    def process(self, block) -> np.ndarray:
        """Push ``(channels, n)`` input; return the ``(channels, m)`` output that is now final."""
        x = as_block(np.asarray(block, dtype=np.float32), channels=self.channels)
        self._total_in += x.shape[1]
        if self._identity:
            return x.copy()
        self._buf = np.concatenate([self._buf, x], axis=1)
        end = self._buf_start + self._buf.shape[1]
        # output n is final once its last tap, input floor(n*down/up) + half, has arrived
        ready = ((end - self._half) * self._up - 1) // self._down + 1
        return self._produce(max(ready, self._next_out))

    def flush(self) -> np.ndarray:
        """Return the remaining output (input padded with zeros) and reset."""
        if self._identity:
            self.reset()
            return np.zeros((self.channels, 0), np.float32)
        total = resampled_length(self._total_in, self.from_rate, self.to_rate)
        pad = np.zeros((self.channels, 2 * self._half + self._down + 1), np.float32)
        self._buf = np.concatenate([self._buf, pad], axis=1)
        out = self._produce(total)
        self.reset()
        return out


def resample(audio, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``(channels, samples)`` (or 1-D mono) audio; returns float32 of the same rank
    with ``resampled_length(samples, from_rate, to_rate)`` samples.  Same result as streaming
    the audio through :class:`Resampler` in any block size."""
    a = np.asarray(audio, dtype=np.float32)
    x = as_block(a)
    r = Resampler(from_rate, to_rate, x.shape[0])
    out = np.concatenate([r.process(x), r.flush()], axis=1) if r.from_rate != r.to_rate else x.copy()
    return out[0] if a.ndim == 1 else out

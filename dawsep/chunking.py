"""One stateful chunking engine for the offline and the streaming paths (numpy only).

:class:`OverlapAdd` runs a fixed-length model over a signal of any length: push samples in, pop
finished samples out, :meth:`~OverlapAdd.flush` at the end, :meth:`~OverlapAdd.reset` to start
over. The offline separator is this engine fed the whole file plus a flush, the streaming
one is the same engine fed block by block, so "chunked == whole" holds by construction.

Segments of ``segment`` samples start every ``hop = segment - overlap`` samples at 0, hop,
2·hop, …; each model output is weighted by a trapezoid window (linear ramps over ``overlap``
samples, never zero) and the sum divided by the summed weights. A sample is final once no later
segment can cover it, i.e. after the segment starting at ``k·hop`` was run, samples before
``(k+1)·hop`` are popped. The engine holds at most about two segments of audio whatever the
input length, which is what bounds memory on hour-long files. The last, partial segments are
zero-padded to ``segment``, so every model call has the same shape.

The grid is anchored at absolute sample 0 of the signal, not at the first push:
:meth:`~OverlapAdd.reset` with ``position_samples`` starts a stream whose first sample is sample
``position_samples`` of a longer signal (a DAW's timeline), with silence before it. From there
the engine runs exactly the segments the offline call on that signal would run over those
samples, so a stream started anywhere equals the offline result of the same signal, silenced
before the start (and a stream started at 0, the offline result itself).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from dawsep.defaults import DEFAULT_OVERLAP  # noqa: F401  (the one definition, re-exported)

# (batch, channels, segment) -> (batch, n_out, channels, segment)
ModelFn = Callable[[np.ndarray], np.ndarray]


def trapezoid(segment: int, overlap: int) -> np.ndarray:
    """Cross-fade weights ``(segment,)``: rises over ``overlap`` samples, flat, falls; all > 0."""
    i = np.arange(segment, dtype=np.float64)
    ramp = max(1, overlap) + 1
    return np.minimum(1.0, np.minimum((i + 1) / ramp, (segment - i) / ramp)).astype(np.float32)

class OverlapAdd:
    """Overlap-add chunking of ``model`` over a ``(channels, samples)`` stream.

    ``model`` maps ``(batch, channels, segment)`` to ``(batch, n_out, channels, segment)``
    (a separator: ``n_out`` stems). :meth:`push` returns ``(n_out, channels, m)`` finished
    samples (``m`` may be 0); all pushes plus :meth:`flush` return exactly as many samples as
    were pushed, and the result does not depend on how the input was split into pushes.
    """

    def __init__(self, model: ModelFn, segment: int, overlap: int, channels: int, n_out: int,
                 batch_size: int = 1):
        if segment < 2:
            raise ValueError(f"segment must be at least 2 samples, got {segment}")
        if not 0 <= overlap < segment:
            raise ValueError(f"overlap must be in [0, segment), got {overlap} for segment {segment}")
        self.model, self.segment, self.overlap = model, int(segment), int(overlap)
        self.hop = self.segment - self.overlap
        self.channels, self.n_out, self.batch_size = int(channels), int(n_out), max(1, int(batch_size))
        self.window = trapezoid(self.segment, self.overlap)
        self.reset()

    @property
    def max_delay(self) -> int:
        """Most samples that can be pushed but not yet popped (``segment - 1``): the fixed
        latency a streaming wrapper must declare."""
        return self.segment - 1

    def reset(self, position_samples: int = 0) -> None:
        """Start a new stream whose next pushed sample is sample ``position_samples`` of the signal
        (silence before it). Samples at negative positions (before the signal starts) are taken
        and answered with silence, without entering any segment."""
        position = int(position_samples)
        self._lead = max(0, -position)  # samples before 0 still to take (output: silence)
        position = max(0, position)
        # the first segment on the grid that reaches past ``position``: earlier ones never see it
        first = max(0, (position - self.segment) // self.hop + 1) * self.hop
        self._in = np.zeros((self.channels, position - first), np.float32)  # from absolute _in_start
        self._in_start = first
        self._acc = np.zeros((self.n_out, self.channels, 0), np.float32)  # from absolute _out_start
        self._wsum = np.zeros(0, np.float32)
        self._out_start = first
        self._emit_from = position  # output before the stream's start is never returned
        self._next = first  # absolute start of the next segment to run
        self._pushed = position  # absolute end of the input so far

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed ``x`` ``(channels, n)``; return the finished ``(n_out, channels, m)``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, samples), got {x.shape}")
        if self._lead:
            k = min(self._lead, x.shape[1])
            self._lead -= k
            before = np.zeros((self.n_out, self.channels, k), np.float32)
            return np.concatenate([before, self.push(x[:, k:])], axis=2) if k < x.shape[1] else before
        if x.shape[1]:
            self._in = np.concatenate([self._in, x], axis=1)
            self._pushed += x.shape[1]
        starts = []
        while self._next + len(starts) * self.hop + self.segment <= self._pushed:
            starts.append(self._next + len(starts) * self.hop)
        self._run(starts)
        return self._pop(self._next)

    def flush(self) -> np.ndarray:
        """End of input: run the zero-padded remaining segments, return every sample left, and
        reset the engine for the next signal."""
        end = self._pushed
        starts = []
        s = self._next
        while s < end:
            starts.append(s)
            s += self.hop
        self._run(starts)
        out = self._pop(end)
        self.reset()
        return out

    # ---------------------------------------------------------------- internals
    def _run(self, starts: list[int]) -> None:
        for i in range(0, len(starts), self.batch_size):
            group = starts[i:i + self.batch_size]
            batch = np.zeros((len(group), self.channels, self.segment), np.float32)
            for b, s in enumerate(group):
                piece = self._in[:, s - self._in_start: s - self._in_start + self.segment]
                batch[b, :, :piece.shape[1]] = piece
            y = np.asarray(self.model(batch), dtype=np.float32)
            if y.shape != (len(group), self.n_out, self.channels, self.segment):
                raise ValueError(f"model returned {y.shape}, expected "
                                 f"{(len(group), self.n_out, self.channels, self.segment)}")
            for b, s in enumerate(group):
                self._accumulate(s, y[b])
            self._next = group[-1] + self.hop
            # input before the next segment's start is never read again
            drop = self._next - self._in_start
            if drop > 0:
                self._in = self._in[:, drop:]
                self._in_start = self._next

    def _accumulate(self, start: int, y: np.ndarray) -> None:
        need = start + self.segment - self._out_start
        if need > self._wsum.shape[0]:
            grow = need - self._wsum.shape[0]
            self._acc = np.concatenate([self._acc, np.zeros((self.n_out, self.channels, grow), np.float32)], axis=2)
            self._wsum = np.concatenate([self._wsum, np.zeros(grow, np.float32)])
        o = start - self._out_start
        self._acc[:, :, o:o + self.segment] += y * self.window
        self._wsum[o:o + self.segment] += self.window

    def _pop(self, upto: int) -> np.ndarray:
        m = max(0, min(upto, self._pushed) - self._out_start)
        if m == 0:
            return np.zeros((self.n_out, self.channels, 0), np.float32)
        out = self._acc[:, :, :m] / self._wsum[:m]
        self._acc, self._wsum = self._acc[:, :, m:], self._wsum[m:]
        early = max(0, min(m, self._emit_from - self._out_start))  # before the stream's start
        self._out_start += m
        return out[:, :, early:] if early else out


class OverlapDiscard:
    """Overlap-discard chunking of a frame model (a transcriber) over a mono stream.

    ``model`` maps ``(batch, segment)`` samples to ``(batch, segment // hop, dims)`` frame
    posteriors; frame ``f`` describes samples ``[f·hop, (f+1)·hop)``. Each segment carries
    ``context`` frames of audio on both sides whose outputs are thrown away (a recurrent model is
    unreliable near the edges of what it saw), so every kept frame had at least ``context`` frames
    of real or zero-padded audio around it. Segments start ``context`` frames before the
    first frame they keep; the first one starts in zero padding, like the start of a file.
    :meth:`push` returns the finished ``(m, dims)`` frames; pushes plus :meth:`flush` give
    ``ceil(samples / hop)`` frames in all, whatever the block sizes.

    ``short_tail`` (for a model that takes any length): the last segment of a :meth:`flush` is
    cut to the frames still owed plus ``context`` frames of zero padding on each side, instead of
    being zero-padded to a whole ``segment``, so a long segment costs nothing on a short input.
    """

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], segment: int, hop: int, context: int,
                 dims: int, short_tail: bool = False):
        if segment % hop:
            raise ValueError(f"segment {segment} must be a multiple of hop {hop}")
        self.model, self.segment, self.hop, self.context, self.dims = model, int(segment), int(hop), int(context), int(dims)
        self.short_tail = bool(short_tail)
        self.keep = self.segment // self.hop - 2 * self.context
        if self.keep < 1:
            raise ValueError(f"segment of {segment // hop} frames leaves nothing after {context} context frames per side")
        self.reset()

    @property
    def max_delay(self) -> int:
        """Samples the engine can hold before the frames covering them come out."""
        return (self.keep + self.context) * self.hop

    def reset(self) -> None:
        pad = self.context * self.hop  # the first segment's left context: silence before the start
        self._in = np.zeros(pad, np.float32)
        self._in_start = -pad  # absolute sample index of self._in[0]
        self._pushed = 0
        self._next = 0  # index of the next segment

    def _start(self, k: int) -> int:
        return (k * self.keep - self.context) * self.hop

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed mono samples ``(n,)``; return finished frames ``(m, dims)``."""
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._in = np.concatenate([self._in, x])
        self._pushed += x.shape[0]
        out = []
        while self._start(self._next) + self.segment <= self._pushed:
            out.append(self._run(self._next, None))
            self._next += 1
        return np.concatenate(out) if out else np.zeros((0, self.dims), np.float32)

    def flush(self) -> np.ndarray:
        """End of input: the remaining frames (zero-padded segments), then reset."""
        total = -(-self._pushed // self.hop)
        out = []
        while self._next * self.keep < total:
            out.append(self._run(self._next, total))
            self._next += 1
        self.reset()
        return np.concatenate(out) if out else np.zeros((0, self.dims), np.float32)

    def _run(self, k: int, total: int | None) -> np.ndarray:
        s = self._start(k) - self._in_start
        length = self.segment
        if total is not None and self.short_tail:  # frames owed (< keep: the last one) + context each side
            length = min(length, (min(self.keep, total - k * self.keep) + 2 * self.context) * self.hop)
        piece = self._in[s:s + length]
        if piece.shape[0] < length:
            piece = np.pad(piece, (0, length - piece.shape[0]))
        y = np.asarray(self.model(piece[None]), dtype=np.float32)[0]
        if y.shape != (length // self.hop, self.dims):
            raise ValueError(f"model returned {y.shape}, expected {(length // self.hop, self.dims)}")
        frames = y[self.context:self.context + self.keep]
        if total is not None:
            frames = frames[:max(0, total - k * self.keep)]
        # samples before the next segment's start are never read again
        drop = self._start(k + 1) - self._in_start
        if drop > 0:
            self._in = self._in[drop:]
            self._in_start += drop
        return frames

"""The checks every audio array and rate passes in the runtime: the ``(channels, samples)``
layout (:func:`as_block`), finite samples (:func:`check_finite`) and whole positive sample rates
(:func:`check_rate`).
"""
from __future__ import annotations

import numpy as np

from dawsep.errors import AudioFormatError, AudioShapeError


def check_finite(audio, path, where: str = "", *, frame_offset: int = 0) -> None:
    """Raise AudioFormatError if ``audio`` ``(channels, samples)`` holds NaN or inf.

    ``where`` is added to the message (e.g. ``" when saving"``); ``frame_offset`` is the frame
    index of ``audio[:, 0]`` in the file, so the message names the first bad frame.
    """
    a = np.asarray(audio)
    # A float64 sum is finite iff every sample is (float32 values cannot overflow it) and
    # allocates nothing, so the common case costs one pass.
    if a.size == 0 or np.isfinite(np.sum(a, dtype=np.float64)):
        return
    bad = ~np.isfinite(a)
    frame = int(np.argmax(bad.reshape(-1, a.shape[-1]).any(axis=0))) if a.ndim else 0
    raise AudioFormatError(
        path, f"contains non-finite samples (NaN or inf){where}, first at frame {frame_offset + frame}")


def check_rate(value, what: str) -> int:
    """``value`` as an int number of Hz; ValueError (naming ``what``) unless it is a whole positive number."""
    try:
        r = int(value)
        ok = r == value and r > 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a positive whole number of Hz, got {value!r}")
    return r


def as_block(audio, *, channels: int | None = None, max_channels: int | None = None, dtype=None) -> np.ndarray:
    """``audio`` as a ``(channels, samples)`` array (1-D means mono), converted to ``dtype`` when
    given. The runtime's one shape check: every array that comes in as audio (the writer, the
    chain, the separator, the streaming processors, the transcriber) goes through it.

    ``channels``: exactly this many; ``max_channels``: at most this many. Raises
    :class:`~dawsep.errors.AudioShapeError` (a ValueError, AudioFormatError and PluginError)."""
    a = np.asarray(audio, dtype=dtype)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise AudioShapeError(f"audio must be (channels, samples), got shape {np.shape(audio)}")
    if channels is not None and a.shape[0] != channels:
        raise AudioShapeError(f"expected {channels} channel(s) in a (channels, samples) block, got shape {a.shape}")
    if channels is None and a.shape[0] > 8 and a.shape[1] <= 8:
        raise AudioShapeError(f"audio must be (channels, samples), got shape {a.shape}; "
                              "did you pass (samples, channels)?")
    if max_channels is not None and not 1 <= a.shape[0] <= max_channels:
        allowed = "1 or 2" if max_channels == 2 else f"1 to {max_channels}"
        raise AudioShapeError(f"expected (channels, samples) with {allowed} channels, got shape {a.shape}")
    return a

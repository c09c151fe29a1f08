"""Streaming reads: a file block by block as stereo ``(2, n)`` float32, optionally resampled
(:class:`AudioReader`, :func:`stream`), or whole (:func:`load`), and the channel layout
(mono duplicated, 5.1 and other layouts mixed down on request).
"""
from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import soundfile as sf

from dawsep.audio_checks import check_finite, check_rate
from dawsep.audio_files import decoder_messages, open_checked
from dawsep.errors import AudioFormatError
from dawsep.resample import Resampler, resampled_length

_SQRT_HALF = 0.7071067811865476


def _to_stereo(block: np.ndarray, downmix: bool, fmt: str) -> np.ndarray:
    """(C, n) -> (2, n) float32. Mono is duplicated.

    Downmix (only when asked): 6-channel WAV/FLAC are taken as 5.1 in the WAVE order
    (L R C LFE Ls Rs) and mixed ITU-R BS.775 style, L' = L + .707 C + .707 Ls (R alike, LFE
    dropped), scaled by 1/(1 + 2 * .707) so a full-scale input cannot clip; any other layout is
    the mean of all channels on both sides.
    """
    c = block.shape[0]
    if c == 2:
        return np.ascontiguousarray(block, dtype=np.float32)
    if c == 1:
        return np.repeat(block.astype(np.float32, copy=False), 2, axis=0)
    if c == 6 and fmt in ("wav", "flac"):
        side = _SQRT_HALF * block[2]
        out = np.stack([block[0] + side + _SQRT_HALF * block[4], block[1] + side + _SQRT_HALF * block[5]])
        return (out * (1.0 / (1.0 + 2 * _SQRT_HALF))).astype(np.float32, copy=False)
    return np.repeat(block.mean(axis=0, dtype=np.float32)[None], 2, axis=0)


class AudioReader:
    """Read a file block by block as stereo ``(2, n)`` float32, optionally resampled.

    Every block has exactly ``block_frames`` frames except the last.  Only one block (plus the
    resampler's filter history) is in memory at a time.  ``frames`` is the exact number of
    output frames the iteration yields, ``sample_rate`` the output rate, ``source_info`` the
    file as stored.  Truncation, decode errors and NaN/inf raise :class:`AudioFormatError`
    during iteration, naming the file and the frame.
    """

    def __init__(self, path, block_frames: int = 65536, sample_rate: int | None = None, downmix: bool = False):
        if int(block_frames) < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames!r}")
        self.block_frames = int(block_frames)
        self.path = Path(path)
        target = None if sample_rate is None else check_rate(sample_rate, "sample_rate")
        self._sf, self.source_info = open_checked(self.path)
        if self.source_info.channels > 2 and not downmix:
            self._sf.close()
            raise AudioFormatError(
                self.path, f"has {self.source_info.channels} channels; pass --downmix (downmix=True in Python) "
                           "to mix it down to stereo")
        src = self.source_info.sample_rate
        self.sample_rate = target or src
        self._resampler = Resampler(src, self.sample_rate, 2) if self.sample_rate != src else None
        self.frames = resampled_length(self.source_info.frames, src, self.sample_rate)
        # source frames per read, so each read yields about one output block (memory ~ block)
        self._src_block = max(1, -(-self.block_frames * src // self.sample_rate))
        self._downmix = downmix
        self._read = 0          # source frames decoded so far
        self._pending: deque[np.ndarray] = deque()
        self._pending_frames = 0
        self._eof = False

    def _pull(self) -> None:
        total = self.source_info.frames
        try:
            with decoder_messages(self.path, self.source_info.format):
                raw = self._sf.read(min(self._src_block, total - self._read), dtype="float32", always_2d=True) \
                    if self._read < total else np.zeros((0, self.source_info.channels), np.float32)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFormatError(
                self.path, f"decoding failed after frame {self._read} of {total}: "
                           f"the file is truncated or corrupt ({exc})") from None
        if len(raw) == 0:
            if self._read < total:
                raise AudioFormatError(
                    self.path, f"is truncated: audio ends after {self._read} of the {total} frames its header declares")
            self._eof = True
            self._sf.close()
            if self._resampler is not None:
                self._push(self._resampler.flush())
            return
        check_finite(raw.T, self.path, frame_offset=self._read)
        self._read += len(raw)
        block = _to_stereo(raw.T, self._downmix, self.source_info.format)
        self._push(self._resampler.process(block) if self._resampler is not None else block)

    def _push(self, block: np.ndarray) -> None:
        if block.shape[1]:
            self._pending.append(block)
            self._pending_frames += block.shape[1]

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        while self._pending_frames < self.block_frames and not self._eof:
            self._pull()
        n = min(self.block_frames, self._pending_frames)
        if n == 0:
            raise StopIteration
        self._pending_frames -= n
        if self._pending[0].shape[1] == n:
            return self._pending.popleft()
        out = np.empty((2, n), np.float32)
        filled = 0
        while filled < n:
            head = self._pending[0]
            k = min(n - filled, head.shape[1])
            out[:, filled:filled + k] = head[:, :k]
            if k == head.shape[1]:
                self._pending.popleft()
            else:
                self._pending[0] = head[:, k:]
            filled += k
        return out

    def close(self) -> None:
        self._eof = True
        self._pending.clear()
        self._pending_frames = 0
        self._sf.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream(path, block_frames: int = 65536, sample_rate: int | None = None, downmix: bool = False) -> AudioReader:
    """Open ``path`` for block-wise reading; see :class:`AudioReader`."""
    return AudioReader(path, block_frames=block_frames, sample_rate=sample_rate, downmix=downmix)


def load(path, sample_rate: int | None = None, *, downmix: bool = False) -> tuple[np.ndarray, int]:
    """Read a whole file as ``(2, T)`` float32 and its rate (``sample_rate`` if given: resampled)."""
    with AudioReader(path, block_frames=1 << 18, sample_rate=sample_rate, downmix=downmix) as reader:
        out = np.empty((2, reader.frames), np.float32)
        pos = 0
        for block in reader:
            out[:, pos:pos + block.shape[1]] = block
            pos += block.shape[1]
        return out, reader.sample_rate

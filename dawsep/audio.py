"""Audio I/O: decode/encode, channel layout, resampling, streaming reads and atomic writes.

Every array is ``(channels, samples)`` float32; what comes out of a reader is stereo ``(2, n)``.

Backends, chosen by measurement (soundfile 0.14 / libsndfile 1.2.2, pedalboard 0.9.26):

* **Decoding and encoding: soundfile (libsndfile)** for WAV, FLAC, OGG Vorbis, MP3 and AIFF.
  libsndfile reads the LAME/Xing gapless header, so an MP3 decodes to exactly the length that
  was encoded (pedalboard.io returns the encoder padding too), it reads files with more than two
  channels, and its parser log tells us when a WAV/AIFF data chunk is cut short.
* **Resampling: our own polyphase Kaiser-windowed sinc in numpy** (:class:`Resampler`).
  ``pedalboard.io.StreamResampler`` leaves a quality- and ratio-dependent fractional-sample
  offset (0.1-0.4 input samples), so a 1 kHz sine sent 44.1k -> 48k -> 44.1k came back only
  -22 dB clean.  Ours places output sample ``n`` exactly at input time ``n * from / to``,
  round-trips that sine at about -95 dB, and is chunk-invariant bit for bit.

Integer PCM writes are quantised here (round to nearest, no dither) with the same 2**(bits-1)
scale that libsndfile reads back with, so a round trip is within half an LSB.  Samples beyond
[-1, 1] are **clipped** for every format except 32-bit float WAV, and counted in
``AudioWriter.clipped``.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.lib.stride_tricks import sliding_window_view

from dawsep import atomic
from dawsep.errors import AudioFormatError, AudioShapeError, DiskFullError, OutputPathError

__all__ = [
    "READ_EXTENSIONS", "WRITE_FORMATS", "AudioInfo", "as_block", "is_audio_file", "info", "load",
    "resample", "resampled_length", "Resampler", "AudioReader", "stream", "AudioWriter",
    "save", "check_finite", "free_bytes", "is_disk_full",
]

_FORMAT_BY_EXT = {
    ".wav": "wav", ".wave": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg",
    ".mp3": "mp3", ".aif": "aiff", ".aiff": "aiff",
}
READ_EXTENSIONS: frozenset[str] = frozenset(_FORMAT_BY_EXT)
WRITE_FORMATS: dict[str, tuple[int, ...]] = {"wav": (16, 24, 32), "flac": (16, 24), "ogg": (), "mp3": ()}
DEFAULT_BIT_DEPTH = 24

_SF_FORMAT = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}
_SF_SUBTYPE = {
    ("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
    ("flac", 16): "PCM_16", ("flac", 24): "PCM_24", ("ogg", None): "VORBIS", ("mp3", None): "MPEG_LAYER_III",
}
# High quality by default: Vorbis quality 0.9; LAME VBR V0 (about 245 kbit/s on music).
_LOSSY_OPTIONS = {"ogg": {"compression_level": 0.1}, "mp3": {"compression_level": 0.0, "bitrate_mode": "VARIABLE"}}
_MP3_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
_SQRT_HALF = 0.7071067811865476


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, before any channel or rate conversion."""

    path: Path
    format: str          # 'wav' | 'flac' | 'ogg' | 'mp3' | 'aiff'
    subtype: str         # libsndfile subtype, e.g. 'PCM_16', 'FLOAT', 'VORBIS'
    sample_rate: int
    channels: int
    frames: int          # exact decoded length
    duration_s: float


def is_audio_file(path) -> bool:
    """True when the extension is one dawsep reads (the content is not looked at)."""
    return Path(path).suffix.lower() in READ_EXTENSIONS


# --------------------------------------------------------------------------- validation helpers

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


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_MARGIN = 1 << 20  # a write that fails with less free space than this failed for want of it


def free_bytes(path) -> int:
    """Bytes an unprivileged writer may still use on the device holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def is_disk_full(exc: BaseException, folder) -> bool:
    """Whether ``exc``, raised by a write under ``folder``, means the device is full (or over
    quota). libsndfile reports only "System error.", so a failed write is also taken for a full
    disk when the device has (almost) no space left."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    text = str(exc).lower()
    if "no space left" in text or "disk is full" in text or "disk quota" in text:
        return True
    try:
        return free_bytes(folder) < _FULL_MARGIN
    except (OSError, TypeError, ValueError):
        return False


def _rate(value, what: str) -> int:
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


def _check_layout(a: np.ndarray, channels: int | None = None) -> np.ndarray:
    return as_block(a, channels=channels)


# --------------------------------------------------------------------------- opening files

def _check_readable_path(path: Path) -> str:
    """Cheap checks before libsndfile sees the file; returns the format name."""
    if not path.exists():
        raise AudioFormatError(path, "file does not exist")
    if path.is_dir():
        raise AudioFormatError(path, "is a folder, not an audio file")
    fmt = _FORMAT_BY_EXT.get(path.suffix.lower())
    if fmt is None:
        raise AudioFormatError(
            path, f"unsupported extension '{path.suffix}' (dawsep reads {', '.join(sorted(READ_EXTENSIONS))})")
    if not os.access(path, os.R_OK):
        raise AudioFormatError(path, "cannot be read (permission denied)")
    if path.stat().st_size == 0:
        raise AudioFormatError(path, "file is empty (0 bytes)")
    return fmt


_CHUNK_SHORT = re.compile(r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _pcm_truncation(handle: sf.SoundFile) -> str | None:
    """WAV/AIFF: libsndfile silently shortens a cut data chunk but logs 'data : N (should be M)'."""
    for _, declared, actual in _CHUNK_SHORT.findall(handle.extra_info):
        declared, actual = int(declared), int(actual)
        # 0 and 0xFFFFFFFF are what streaming writers leave when they cannot seek back.
        if declared not in (0, 0xFFFFFFFF) and declared - actual >= 2 * max(handle.channels, 1):
            return f"is truncated: its header declares {declared} bytes of audio but only {actual} are present"
    return None


def _ogg_truncation(path: Path) -> str | None:
    """OGG: libsndfile reports the length up to the last whole page, so check the last page ends
    the stream (end-of-stream flag set and its body complete)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 65536 - 282))
        tail = f.read()
    base = size - len(tail)
    i = tail.rfind(b"OggS")
    if i < 0 or len(tail) < i + 27:
        return "is truncated or corrupt: no complete Ogg page at the end"
    nseg = tail[i + 26]
    lacing = tail[i + 27:i + 27 + nseg]
    end = base + i + 27 + nseg + sum(lacing)
    if len(lacing) < nseg or end > size or not tail[i + 5] & 0x04:
        return "is truncated: the Ogg stream ends without its final page"
    return None


_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
             2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}     # MPEG-2/2.5 layer III
_MP3_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
_MP3_SYNC = re.compile(rb"\xff[\xe2\xe3\xea\xeb\xf2\xf3\xfa\xfb]")  # 11 sync bits + layer III


def _id3v2_size(head: bytes) -> int:
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _mp3_has_length_tag(path: Path) -> bool:
    """True if the first MPEG frame is a Xing/Info/VBRI header, which holds the exact length."""
    with open(path, "rb") as f:
        f.seek(_id3v2_size(f.read(10)))
        head = f.read(16384)
    first = _MP3_SYNC.search(head)
    frame = head[first.start():first.start() + 200] if first else b""
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _mp3_walk_samples(path: Path) -> int:
    """Samples in an MP3 counted from its layer III frame headers (no decoding)."""
    samples = 0
    with open(path, "rb") as f:
        pos = _id3v2_size(f.read(10))
        f.seek(pos)
        first = _MP3_SYNC.search(f.read(65536))
        if first is None:
            return 0
        pos += first.start()
        while True:
            f.seek(pos)
            h = f.read(4)
            if len(h) < 4 or not _MP3_SYNC.match(h):
                return samples
            version, kbps_i, hz_i = (h[1] >> 3) & 3, h[2] >> 4, (h[2] >> 2) & 3
            if version == 1 or kbps_i in (0, 15) or hz_i == 3:  # reserved or free-format: stop
                return samples
            mpeg1 = version == 3
            kbps = _MP3_KBPS[1 if mpeg1 else 2][kbps_i]
            pos += (144 if mpeg1 else 72) * kbps * 1000 // _MP3_HZ[version][hz_i] + ((h[2] >> 1) & 1)
            samples += 1152 if mpeg1 else 576


@contextlib.contextmanager
def _decoder_messages(path: Path, fmt: str):
    """The MP3 decoder (mpg123 inside libsndfile) prints its own warnings straight to stderr
    ("Can't rewind stream", "Giving up resync"...): they are kept out of the output, so a corrupt
    file gives one clear line, the :class:`AudioFormatError` naming the file and the problem."""
    if fmt != "mp3":
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    with open(os.devnull, "wb") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _sf_open(path: Path, fmt: str) -> sf.SoundFile:
    try:
        with _decoder_messages(path, fmt):
            return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = getattr(exc, "error_string", "") or str(exc)
        raise AudioFormatError(
            path, f"is not a readable {fmt.upper()} file: it is corrupt, truncated or not audio "
                  f"(libsndfile: {detail.strip() or 'unknown error'})") from None


def _missing_end(handle: sf.SoundFile, path: Path, fmt: str, frames: int) -> str | None:
    """FLAC/MP3: the header states the length; decode the last frames to check they are there
    (a cut file otherwise passes as whole until a read fails half-way)."""
    k = min(frames, 4096)
    try:
        with _decoder_messages(path, fmt):
            handle.seek(frames - k)
            got = len(handle.read(k, dtype="float32", always_2d=True))
    except (sf.LibsndfileError, RuntimeError) as exc:
        return (f"is truncated or corrupt: its header declares {frames} frames but the end cannot be decoded "
                f"(libsndfile: {str(exc).strip() or 'unknown error'})")
    slack = 1152 if fmt == "mp3" else 0  # one MPEG frame of seeking slack
    if got < k - slack:
        return f"is truncated: its header declares {frames} frames but the audio ends before that"
    return None


def _count_frames(handle: sf.SoundFile, path: Path) -> int:
    n = 0
    while True:
        try:
            with _decoder_messages(path, "mp3"):
                got = len(handle.read(1 << 16, dtype="float32", always_2d=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFormatError(path, f"decoding failed after frame {n}: the file is corrupt ({exc})") from None
        if got == 0:
            return n
        n += got


def _open(path) -> tuple[sf.SoundFile, AudioInfo]:
    """Open and validate a file; the caller owns (and must close) the returned handle."""
    path = Path(path)
    fmt = _check_readable_path(path)
    handle = _sf_open(path, fmt)
    try:
        frames = handle.frames
        problem = None
        if handle.format in ("WAV", "WAVEX", "AIFF", "RF64", "W64"):
            problem = _pcm_truncation(handle)
        elif handle.format == "OGG":
            problem = _ogg_truncation(path)
        elif handle.format == "MP3" and not _mp3_has_length_tag(path):
            # Without a length tag libsndfile only estimates the length, and it stops decoding at
            # that estimate: count by decoding (bounded memory), and refuse a VBR file whose
            # estimate would silently drop audio.
            frames = _count_frames(handle, path)
            handle.close()
            handle = _sf_open(path, fmt)
            walked = _mp3_walk_samples(path)
            if frames < walked - 2 * 1152:
                problem = (f"is a variable-bitrate MP3 without a Xing/VBRI length header; the decoder "
                           f"would stop after {frames} of its {walked} samples (re-encode it or convert it to FLAC)")
        elif handle.format in ("FLAC", "MP3") and frames > 0:
            problem = _missing_end(handle, path, handle.format.lower(), frames)
            handle.close()
            handle = _sf_open(path, fmt)  # back to the start, in a fresh decoder state
        if problem:
            raise AudioFormatError(path, problem)
        if handle.samplerate <= 0 or handle.channels <= 0:
            raise AudioFormatError(path, "has an invalid header (no sample rate or no channels)")
        if frames <= 0:
            raise AudioFormatError(path, "contains no audio (0 frames): it is empty or truncated")
        detected = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff"}
        meta = AudioInfo(path=path, format=detected.get(handle.format, handle.format.lower()),
                         subtype=handle.subtype, sample_rate=int(handle.samplerate),
                         channels=int(handle.channels), frames=int(frames),
                         duration_s=frames / handle.samplerate)
    except BaseException:
        handle.close()
        raise
    return handle, meta


def info(path) -> AudioInfo:
    """Describe a file after the same validation :func:`load` does (header-level; an MP3
    without a length tag is decoded once to count its frames)."""
    handle, meta = _open(path)
    handle.close()
    return meta


# --------------------------------------------------------------------------- channel layout

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


# --------------------------------------------------------------------------- resampling

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
        self.from_rate = _rate(from_rate, "from_rate")
        self.to_rate = _rate(to_rate, "to_rate")
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
        x = _check_layout(np.asarray(block, dtype=np.float32), self.channels)
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
    x = _check_layout(a)
    r = Resampler(from_rate, to_rate, x.shape[0])
    out = np.concatenate([r.process(x), r.flush()], axis=1) if r.from_rate != r.to_rate else x.copy()
    return out[0] if a.ndim == 1 else out


# --------------------------------------------------------------------------- streaming reads

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
        target = None if sample_rate is None else _rate(sample_rate, "sample_rate")
        self._sf, self.source_info = _open(self.path)
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
            with _decoder_messages(self.path, self.source_info.format):
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


# --------------------------------------------------------------------------- writing

def _resolve_format(path: Path, format: str | None, bit_depth: int | None) -> tuple[str, int | None]:
    ext = path.suffix.lower()
    by_ext = {e: f for e, f in _FORMAT_BY_EXT.items() if f in WRITE_FORMATS}
    allowed = ", ".join(WRITE_FORMATS)
    if format is None:
        if ext not in by_ext:
            raise AudioFormatError(
                path, f"cannot tell the output format from the extension '{ext}'; writable formats: {allowed}")
        fmt = by_ext[ext]
    else:
        fmt = str(format).lower().lstrip(".")
        if fmt not in WRITE_FORMATS:
            raise AudioFormatError(path, f"cannot write format '{format}'; writable formats: {allowed}")
        if ext in _FORMAT_BY_EXT and _FORMAT_BY_EXT[ext] != fmt:
            raise AudioFormatError(path, f"the extension '{ext}' does not match the requested format '{fmt}'")
    depths = WRITE_FORMATS[fmt]
    if not depths:
        if bit_depth is not None:
            raise AudioFormatError(path, f"{fmt} is lossy and has no bit depth; leave bit_depth unset (got {bit_depth})")
        return fmt, None
    depth = DEFAULT_BIT_DEPTH if bit_depth is None else bit_depth
    if depth not in depths:
        raise AudioFormatError(
            path, f"bit depth {depth!r} is not available for {fmt}; allowed: {', '.join(map(str, depths))}")
    return fmt, int(depth)


class AudioWriter:
    """Atomic streaming writer: blocks go to a hidden temporary file in the destination folder,
    which :meth:`close` renames into place (``os.replace``), so readers see either the old file
    or the complete new one.  :meth:`abort` (also run on an exception inside ``with``, on
    NaN/inf input and on any write failure) deletes the temporary file and leaves no output.

    ``format`` defaults from the extension; ``bit_depth`` defaults to 24 for wav/flac and must
    be unset for ogg/mp3.  Blocks are ``(channels, n)`` (1-D allowed for mono).
    """

    def __init__(self, path, sample_rate: int, channels: int = 2, format: str | None = None,
                 bit_depth: int | None = None):
        self.path = Path(path)
        self.format, self.bit_depth = _resolve_format(self.path, format, bit_depth)
        self.sample_rate = _rate(sample_rate, "sample_rate")
        self.channels = int(channels)
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels!r}")
        if self.format == "mp3" and self.sample_rate not in _MP3_RATES:
            raise AudioFormatError(
                self.path, f"MP3 cannot store {self.sample_rate} Hz; allowed rates: {', '.join(map(str, sorted(_MP3_RATES)))}")
        if self.format == "mp3" and self.channels > 2:
            raise AudioFormatError(self.path, f"MP3 holds at most 2 channels, not {self.channels}")
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputPathError(f"{self.path}: the output folder {parent} does not exist")
        if self.path.is_dir():
            raise OutputPathError(f"{self.path}: is a folder, cannot write audio there")
        self.frames = 0
        self.clipped = 0  # samples outside [-1, 1] that were clipped
        self._state = "open"  # -> "closed" (file in place) or "aborted" (nothing written)
        self._sf = None
        self._tmp = None
        try:
            self._tmp = atomic.temporary_path(self.path)  # honours umask; never through a link
            self._sf = sf.SoundFile(str(self._tmp), "w", self.sample_rate, self.channels,
                                    _SF_SUBTYPE[self.format, self.bit_depth], format=_SF_FORMAT[self.format],
                                    **_LOSSY_OPTIONS.get(self.format, {}))
        except OSError as exc:
            self.abort()
            if is_disk_full(exc, parent):
                raise self._full("cannot create the file") from None
            raise OutputPathError(f"{self.path}: cannot create a file in {parent} ({exc.strerror or exc})") from None
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
            self.abort()
            raise AudioFormatError(self.path, f"cannot write {self.format} at {self.sample_rate} Hz "
                                              f"with {self.channels} channel(s): {exc}") from None

    def _encode(self, a: np.ndarray) -> np.ndarray:
        """(channels, n) float -> (n, channels) array in the type libsndfile should store."""
        if self.format == "wav" and self.bit_depth == 32:
            return a.T.astype(np.float32, copy=False)
        over = np.abs(a) > 1.0
        if over.any():
            self.clipped += int(np.count_nonzero(over))
            a = np.clip(a, -1.0, 1.0)
        if self.bit_depth is None:
            return a.T.astype(np.float32, copy=False)
        # Same 2**(bits-1) scale libsndfile decodes with (its own encoder uses 2**(bits-1) - 1).
        full = float(1 << (self.bit_depth - 1))
        q = np.clip(np.rint(a * full), -full, full - 1)
        if self.bit_depth == 16:
            return q.T.astype(np.int16)
        return q.T.astype(np.int32) << 8  # libsndfile keeps the top 24 bits of int32

    def write(self, block) -> None:
        """Append ``(channels, n)`` audio.  NaN/inf aborts the file and raises."""
        if self._state != "open":
            raise AudioFormatError(self.path, f"cannot write: the writer is already {self._state}")
        a = np.asarray(block)
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"audio blocks must be float arrays, got {a.dtype}")
        a = _check_layout(a, self.channels)
        try:
            check_finite(a, self.path, " in the audio to write", frame_offset=self.frames)
            if a.shape[1]:
                self._sf.write(self._encode(a))
        except AudioFormatError:
            self.abort()
            raise
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self.abort()
            if is_disk_full(exc, self.path.parent):
                raise self._full(f"writing failed after frame {self.frames}") from None
            raise AudioFormatError(self.path, f"writing failed after frame {self.frames}: {exc}") from None
        self.frames += a.shape[1]

    def _full(self, what: str) -> DiskFullError:
        return DiskFullError(f"{self.path}: no space left on the device ({what}); nothing was kept")

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise AudioFormatError(self.path, "the writer was aborted; no file was written")
        if self.frames == 0:
            self.abort()
            raise AudioFormatError(self.path, "no audio was written (0 frames); no file was created")
        try:
            self._sf.close()
            atomic.commit(self._tmp, self.path)  # fsync, rename, fsync the folder
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            self.abort()
            if is_disk_full(exc, self.path.parent):
                raise self._full("finishing the file failed") from None
            raise AudioFormatError(self.path, f"finishing the file failed: {exc}") from None
        self._state = "closed"
        return self.path

    def abort(self) -> None:
        """Discard everything written; no output file, no temporary file (no-op once closed)."""
        if self._state == "closed":
            return
        self._state = "aborted"
        if self._sf is not None:
            try:
                self._sf.close()
            except Exception:  # the file is being thrown away; a failing close changes nothing
                pass
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.close()

    def __del__(self):
        # A writer dropped without close() must not leave a temporary file behind.
        if getattr(self, "_state", None) == "open":
            try:
                self.abort()
            except Exception:
                pass


def save(path, audio, sample_rate: int, *, format: str | None = None, bit_depth: int | None = None) -> Path:
    """Write ``(channels, samples)`` float audio (1-D = mono) atomically; returns the final path.

    NaN/inf or an empty array raise :class:`AudioFormatError` before any file is created.
    """
    a = _check_layout(np.asarray(audio))
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio must be a float array, got {a.dtype}")
    path = Path(path)
    _resolve_format(path, format, bit_depth)  # a bad combination fails before anything else
    if a.shape[1] == 0:
        raise AudioFormatError(path, "no audio to write (0 frames)")
    check_finite(a, path, " in the audio to write")
    with AudioWriter(path, sample_rate, a.shape[0], format=format, bit_depth=bit_depth) as writer:
        for i in range(0, a.shape[1], 1 << 18):  # bounded conversion temporaries
            writer.write(a[:, i:i + (1 << 18)])
    return writer.path

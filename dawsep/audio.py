"""Audio I/O for the runtime: encoding (the atomic streaming :class:`AudioWriter`, :func:`save`,
full-disk detection), and the one import for the rest: reading (:mod:`dawsep.audio_files`,
:mod:`dawsep.audio_read`), resampling (:mod:`dawsep.resample`) and the array checks
(:mod:`dawsep.audio_checks`).

Every array is ``(channels, samples)`` float32; what comes out of a reader is stereo ``(2, n)``.

Backends, chosen by measurement (soundfile 0.14 / libsndfile 1.2.2, pedalboard 0.9.26):

* **Decoding and encoding: soundfile (libsndfile)** for WAV, FLAC, OGG Vorbis, MP3 and AIFF.
  libsndfile reads the LAME/Xing gapless header, so an MP3 decodes to exactly the length that
  was encoded (pedalboard.io returns the encoder padding too), it reads files with more than two
  channels, and its parser log tells us when a WAV/AIFF data chunk is cut short.
* **Resampling: our own polyphase Kaiser-windowed sinc in numpy** (:class:`Resampler`; see
  :mod:`dawsep.resample` for why not ``pedalboard.io.StreamResampler``).

Integer PCM writes are quantised here (round to nearest, no dither) with the same 2**(bits-1)
scale that libsndfile reads back with, so a round trip is within half an LSB.  Samples beyond
[-1, 1] are **clipped** for every format except 32-bit float WAV, and counted in
``AudioWriter.clipped``.
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from dawsep import atomic
from dawsep.audio_checks import as_block, check_finite, check_rate
from dawsep.audio_files import FORMAT_BY_EXT, READ_EXTENSIONS, AudioInfo, info, is_audio_file
from dawsep.audio_read import AudioReader, load, stream
from dawsep.errors import AudioFormatError, DiskFullError, OutputPathError
from dawsep.resample import Resampler, resample, resampled_length

__all__ = [
    "READ_EXTENSIONS", "WRITE_FORMATS", "AudioInfo", "as_block", "is_audio_file", "info", "load",
    "resample", "resampled_length", "Resampler", "AudioReader", "stream", "AudioWriter",
    "save", "check_finite", "free_bytes", "is_disk_full",
]

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


def _resolve_format(path: Path, format: str | None, bit_depth: int | None) -> tuple[str, int | None]:
    ext = path.suffix.lower()
    by_ext = {e: f for e, f in FORMAT_BY_EXT.items() if f in WRITE_FORMATS}
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
        if ext in FORMAT_BY_EXT and FORMAT_BY_EXT[ext] != fmt:
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
        self.sample_rate = check_rate(sample_rate, "sample_rate")
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
        a = as_block(a, channels=self.channels)
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
    a = as_block(np.asarray(audio))
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

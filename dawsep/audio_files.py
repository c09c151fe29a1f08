"""Opening audio files for reading: the formats dawsep reads (by extension), the checks before and
after libsndfile opens a file (missing, empty, truncated WAV/AIFF/OGG/FLAC/MP3, a VBR MP3 without
a length header), and :func:`info`.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from dawsep.errors import AudioFormatError

FORMAT_BY_EXT = {
    ".wav": "wav", ".wave": "wav", ".flac": "flac", ".ogg": "ogg", ".oga": "ogg",
    ".mp3": "mp3", ".aif": "aiff", ".aiff": "aiff",
}
READ_EXTENSIONS: frozenset[str] = frozenset(FORMAT_BY_EXT)


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


def _check_readable_path(path: Path) -> str:
    """Cheap checks before libsndfile sees the file; returns the format name."""
    if not path.exists():
        raise AudioFormatError(path, "file does not exist")
    if path.is_dir():
        raise AudioFormatError(path, "is a folder, not an audio file")
    fmt = FORMAT_BY_EXT.get(path.suffix.lower())
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
def decoder_messages(path: Path, fmt: str):
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
        with decoder_messages(path, fmt):
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
        with decoder_messages(path, fmt):
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
            with decoder_messages(path, "mp3"):
                got = len(handle.read(1 << 16, dtype="float32", always_2d=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioFormatError(path, f"decoding failed after frame {n}: the file is corrupt ({exc})") from None
        if got == 0:
            return n
        n += got


def open_checked(path) -> tuple[sf.SoundFile, AudioInfo]:
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
    handle, meta = open_checked(path)
    handle.close()
    return meta
